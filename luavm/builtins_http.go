package luavm

import (
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/http/httpguts"
)

// defaultHTTPClient serves keystone.http when Options.HTTPClient is nil.
// It is configured once here and never modified; fasthttp.Client is safe
// for concurrent use and pools connections per host.
var defaultHTTPClient = &fasthttp.Client{
	Name:                     "keystone-lua",
	MaxConnsPerHost:          256,
	MaxIdleConnDuration:      30 * time.Second,
	MaxConnWaitTimeout:       time.Second,
	ReadTimeout:              30 * time.Second,
	WriteTimeout:             30 * time.Second,
	MaxResponseBodySize:      64 << 20,
	NoDefaultUserAgentHeader: false,
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

	// Parked: other requests run Lua on this VM during the wait, which
	// is not charged to this one's budget. Only locals are used until
	// unpark.
	th, ok := v.park()
	if !ok {
		L.RaiseError("%s", errTimeoutText)
	}
	err := doParked(th, v.s.http, req, resp, timeout)
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
