package luavm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// upstream is a real fasthttp server on loopback that echoes what it got.
type upstream struct {
	name   string
	addr   string
	client *fasthttp.HostClient
}

// echo is the upstream's JSON answer.
type echo struct {
	Upstream string            `json:"upstream"`
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Query    string            `json:"query"`
	Headers  map[string]string `json:"headers"`
	Body     string            `json:"body"`
}

func startUpstream(t testing.TB, name string) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveUpstream(t, name, ln, ln.Addr().String())
}

// startMemUpstream serves a static answer on an in-memory listener, for
// benchmarks: allocations of an echoing upstream would drown the gateway's.
func startMemUpstream(t testing.TB, name string) *upstream {
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Upstream", name)
		ctx.SetBodyString(`{"ok":true}`)
	}}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	return &upstream{name: name, addr: "mem", client: &fasthttp.HostClient{
		Addr: "mem", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 512,
	}}
}

func serveUpstream(t testing.TB, name string, ln net.Listener, addr string) *upstream {
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		e := echo{
			Upstream: name,
			Method:   string(ctx.Method()),
			Path:     string(ctx.Path()),
			Query:    string(ctx.URI().QueryString()),
			Headers:  map[string]string{},
			Body:     string(ctx.PostBody()),
		}
		for k, v := range ctx.Request.Header.All() {
			if bytes.HasPrefix(k, []byte("X-")) {
				e.Headers[string(k)] = string(v)
			}
		}
		if s := ctx.Request.Header.Peek("X-Upstream-Status"); len(s) > 0 {
			var code int
			fmt.Sscan(string(s), &code)
			ctx.SetStatusCode(code)
		}
		ctx.Response.Header.Set("X-Upstream", name)
		ctx.SetContentType("application/json")
		b, _ := json.Marshal(e)
		ctx.SetBody(b)
	}}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	return &upstream{name: name, addr: addr, client: &fasthttp.HostClient{Addr: addr, MaxConns: 512}}
}

// testHost is a real Host: ProxyHandler forwards to a loopback upstream.
type testHost struct {
	upstreams map[string]*upstream
	// clientIP, when set, is what ClientIP reports instead of the peer.
	clientIP string
}

func (h *testHost) ClientIP(ctx *fasthttp.RequestCtx) string {
	if h.clientIP != "" {
		return h.clientIP
	}
	return ctx.RemoteIP().String()
}

func (h *testHost) ProxyHandler(target string) (fasthttp.RequestHandler, error) {
	up, ok := h.upstreams[target]
	if !ok && (strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://")) {
		up = &upstream{name: target, client: &fasthttp.HostClient{Addr: strings.TrimPrefix(target, "http://")}}
		ok = true
	}
	if !ok {
		return nil, fmt.Errorf("unknown tenant %q", target)
	}
	return func(ctx *fasthttp.RequestCtx) {
		if err := up.client.DoTimeout(&ctx.Request, &ctx.Response, 5*time.Second); err != nil {
			h.WriteError(ctx, fasthttp.StatusBadGateway, "bad gateway")
		}
	}, nil
}

func (h *testHost) WriteError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]string{"error": msg, "request_id": string(ctx.Request.Header.Peek("X-Request-ID"))})
	ctx.SetBody(b)
}

// env is a test environment: three upstreams and a Host that knows them.
type env struct {
	host *testHost
	ups  map[string]*upstream
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{ups: map[string]*upstream{}}
	for _, n := range []string{"api", "api2", "legacy"} {
		e.ups[n] = startUpstream(t, n)
	}
	e.host = &testHost{upstreams: e.ups}
	return e
}

// logBuffer collects log lines, safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) lines() []string {
	s := strings.TrimSpace(l.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func testConfig(logs *logBuffer) Config {
	var w interface{ Write([]byte) (int, error) } = os.Stderr
	if logs != nil {
		w = logs
	}
	return Config{
		PoolSize: 2,
		// Generous: a loaded CI machine may deschedule a handler for tens
		// of milliseconds. Tests of the deadline set their own.
		MaxExecution: time.Second,
		Logger:       slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// load loads a script from fsys with the env's host.
func (e *env) load(t testing.TB, cfg Config, fsys fs.FS, name string, opts Options) *Script {
	t.Helper()
	if opts.Host == nil {
		opts.Host = e.host
	}
	if opts.Tenant == "" {
		opts.Tenant = "api"
	}
	s, err := Load(cfg, fsys, name, opts)
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	t.Cleanup(s.Close)
	return s
}

// scriptFS holds one script as main.lua.
func scriptFS(src string) fs.FS {
	return fstest.MapFS{"main.lua": {Data: []byte(src)}}
}

// front is a real fasthttp.Server on loopback serving a Script.
type front struct {
	client *fasthttp.HostClient
}

func serveScript(t testing.TB, s *Script) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.Handler}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	return &front{client: &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 1024}}
}

// result is a response as the test sees it.
type result struct {
	status  int
	headers map[string]string
	body    string
}

func (f *front) do(t testing.TB, method, uri string, headers map[string]string, body string) result {
	t.Helper()
	return f.send(t, request{method: method, path: uri, headers: headers, body: body})
}

// request is what a test sends; add holds repeated headers.
type request struct {
	method, path string
	headers      map[string]string
	add          [][2]string
	body         string
}

func (f *front) send(t testing.TB, rq request) result {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(rq.method)
	req.SetRequestURI("http://test.local" + rq.path)
	for k, v := range rq.headers {
		req.Header.Set(k, v)
	}
	for _, kv := range rq.add {
		req.Header.Add(kv[0], kv[1])
	}
	if rq.body != "" {
		req.SetBodyString(rq.body)
	}
	if err := f.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	r := result{status: resp.StatusCode(), headers: map[string]string{}, body: string(resp.Body())}
	for k, v := range resp.Header.All() {
		if _, ok := r.headers[string(k)]; ok {
			r.headers[string(k)] += ", " + string(v)
		} else {
			r.headers[string(k)] = string(v)
		}
	}
	return r
}

// upstreamEcho decodes a proxied body.
func upstreamEcho(t testing.TB, body string) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("upstream body %q: %v", body, err)
	}
	return e
}
