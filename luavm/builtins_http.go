package luavm

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/http/httpguts"
)

// newHTTPClient returns the client one script's keystone.http uses when
// Options.HTTPClient is nil. fasthttp.Client is safe for concurrent use
// and pools connections per host.
func newHTTPClient() *fasthttp.Client {
	return &fasthttp.Client{
		Name:                "keystone-lua",
		MaxConnsPerHost:     256,
		MaxIdleConnDuration: 30 * time.Second,
		MaxConnWaitTimeout:  time.Second,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
		MaxResponseBodySize: 64 << 20,
	}
}

// errHTTPClosed is what keystone.http returns once its script is closed.
var errHTTPClosed = errors.New("the script is closed")

// httpClient is one Script's keystone.http client. Unless Options gave
// one, it is made on the script's first keystone.http call, so a script
// that never calls out holds none, and Script.Close closes its idle
// connections, so that no keep-alive connection to a host a retired
// script called outlives the script. A call after Close gets
// errHTTPClosed. An httpClient must not be copied.
type httpClient struct {
	// given is Options.HTTPClient; its owner closes it, not the Script.
	given *fasthttp.Client

	// own is written once, under mu, by the first keystone.http call
	// (nil until then); read by every call and by close.
	own atomic.Pointer[fasthttp.Client]
	mu  sync.Mutex

	// closed is set by close and read by every call: false to true, once.
	closed atomic.Bool
}

// get returns the client for one keystone.http call, making it on first
// use.
func (h *httpClient) get() (*fasthttp.Client, error) {
	if h.closed.Load() {
		return nil, errHTTPClosed
	}
	if h.given != nil {
		return h.given, nil
	}
	if c := h.own.Load(); c != nil {
		return c, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.own.Load()
	if c == nil {
		c = newHTTPClient()
		h.own.Store(c)
	}
	return c, nil
}

// done follows each call made with c. A call that was in flight when the
// script closed returned its connection to the pool after close emptied
// it: close it now. (close sets closed before emptying the pool, so
// either close sees the connection idle or done sees closed.)
func (h *httpClient) done(c *fasthttp.Client) {
	if h.closed.Load() && c == h.own.Load() {
		c.CloseIdleConnections()
	}
}

// close refuses further calls and closes the idle connections of the
// client the script made; connections in use close when their call ends
// (done). fasthttp's cleaner goroutines of the client end once it holds
// no connection, within its MaxIdleConnDuration.
func (h *httpClient) close() {
	h.closed.Store(true)
	if c := h.own.Load(); c != nil {
		c.CloseIdleConnections()
	}
}

const (
	defaultHTTPTimeout = 5 * time.Second
	maxHTTPTimeout     = 5 * time.Minute
)

// httpDo implements keystone.http.Get(url, opts), Post(url, opts) and
// Do(method, url, opts); opts = {headers = {...}, body = "...", timeout =
// seconds}. It returns {status =, headers =, body =} or nil, err. The Lua
// clock is paused and the VM lent to other requests while the request is
// in flight; timeout bounds it.
func (v *vm) httpDo(L *lua.LState, method string, n int) int {
	if method == "" {
		method = strings.ToUpper(L.CheckString(n))
		if !httpguts.ValidHeaderFieldName(method) {
			L.ArgError(n, "invalid HTTP method "+quote(method))
		}
		n++
	}
	url := L.CheckString(n)
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		L.ArgError(n, "expected an absolute http(s) URL, got "+quote(url))
	}
	if hasUserinfo(url) {
		// fasthttp would turn it into an Authorization header.
		L.ArgError(n, "URL must not carry credentials (user:password@): set an Authorization header instead")
	}
	opts := L.OptTable(n+1, nil)

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	// fasthttp escapes the path it writes but not the query: "?q=a b"
	// would end the request target early, as req:SetRawQuery would.
	if q := req.URI().QueryString(); len(q) > 0 {
		req.URI().SetQueryString(escapeQuery(string(q)))
	}
	req.Header.SetMethod(method)
	timeout := defaultHTTPTimeout
	if opts != nil {
		if h, ok := opts.RawGetString("headers").(*lua.LTable); ok {
			h.ForEach(func(k, val lua.LValue) {
				ks, vs := lua.LVAsString(k), lua.LVAsString(val)
				if !httpguts.ValidHeaderFieldName(ks) || !httpguts.ValidHeaderFieldValue(vs) ||
					strings.EqualFold(ks, fasthttp.HeaderHost) && !validHost(vs) {
					L.ArgError(n+1, "invalid header "+quote(ks))
				}
				req.Header.Set(ks, vs)
			})
		}
		if b, ok := opts.RawGetString("body").(lua.LString); ok {
			req.SetBodyString(string(b))
		}
		if t, ok := opts.RawGetString("timeout").(lua.LNumber); ok {
			if t <= 0 || float64(t) > maxHTTPTimeout.Seconds() {
				L.ArgError(n+1, "timeout must be a positive number of seconds, at most 300")
			}
			timeout = time.Duration(float64(t) * float64(time.Second))
		}
	}

	c, err := v.s.http.get()
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("keystone.http: " + err.Error()))
		return 2
	}
	// Parked: other requests run Lua on this VM during the wait, which
	// is not charged to this one's budget. Only locals are used until
	// unpark.
	th, ok := v.park()
	if !ok {
		L.RaiseError("%s", errTimeoutText)
	}
	err = doParked(th, c, req, resp, timeout)
	v.s.http.done(c)
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("keystone.http: " + err.Error()))
		return 2
	}
	body := resp.Body()
	if len(body) > v.s.cfg.MaxStringSize {
		L.Push(lua.LNil)
		L.Push(lua.LString("keystone.http: response body exceeds the string limit"))
		return 2
	}
	headers := L.NewTable()
	for k, val := range resp.Header.All() {
		if headers.RawGetString(string(k)) == lua.LNil {
			headers.RawSetString(string(k), lua.LString(val))
		}
	}
	t := L.CreateTable(0, 3)
	t.RawSetString("status", lua.LNumber(resp.StatusCode()))
	t.RawSetString("headers", headers)
	t.RawSetString("body", lua.LString(body))
	L.Push(t)
	return 1
}

// hasUserinfo reports whether an absolute URL's authority has a '@'.
func hasUserinfo(url string) bool {
	_, rest, _ := strings.Cut(url, "://")
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return strings.Contains(rest, "@")
}

// doParked runs the request of a parked thread and takes its VM back even
// if the client panics.
func doParked(t *thread, c *fasthttp.Client, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	defer t.unpark()
	return c.DoTimeout(req, resp, timeout)
}
