package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// gateway is a Keystone server under test, serving on a loopback port.
type gateway struct {
	t    *testing.T
	srv  *Server
	addr string
	logs *syncBuffer
	done chan error
}

// startGateway loads yaml (written to a temp dir with the given extra files,
// e.g. scripts) and serves it on 127.0.0.1. The gateway is shut down when
// the test ends.
func startGateway(t *testing.T, yaml string, files ...string) *gateway {
	t.Helper()
	return startGatewayConfig(t, loadConfig(t, yaml, files...))
}

// loadConfig writes yaml and files to a temp dir and loads the config
// without serving it.
func loadConfig(t testing.TB, yaml string, files ...string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i+1 < len(files); i += 2 {
		p := filepath.Join(dir, files[i])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(files[i+1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "keystone.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	return cfg
}

func startGatewayConfig(t *testing.T, cfg *config.Config) *gateway {
	t.Helper()
	return startGatewayOpts(t, cfg, Options{})
}

// startGatewayOpts is startGatewayConfig with server Options (Load, for
// reloads); the logger and version are the harness's.
func startGatewayOpts(t *testing.T, cfg *config.Config, opts Options) *gateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startGatewayListener(t, cfg, opts, ln)
}

// startGatewayListener is startGatewayOpts serving on ln (an IPv6
// listener, say), which it closes.
func startGatewayListener(t *testing.T, cfg *config.Config, opts Options, ln net.Listener) *gateway {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Version = "test"
	srv, err := New(cfg, opts)
	if err != nil {
		ln.Close()
		t.Fatalf("server.New: %v", err)
	}
	g := &gateway{t: t, srv: srv, addr: ln.Addr().String(), logs: logs, done: make(chan error, 1)}
	go func() { g.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-g.done
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs.String())
		}
	})
	return g
}

// do sends one request through the gateway with a fresh fasthttp client
// connection and returns the response (owned by the caller).
func (g *gateway) do(method, host, uri string, body []byte, headers ...string) *fasthttp.Response {
	g.t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://" + g.addr + uri)
	req.Header.SetMethod(method)
	if host != "" {
		req.SetHost(host)
		req.UseHostHeader = true
		req.Header.SetHost(host)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	if body != nil {
		req.SetBody(body)
	}
	resp := &fasthttp.Response{}
	// A HostClient dials Addr whatever the Host header says; dual stack
	// for a gateway on an IPv6 listener.
	c := &fasthttp.HostClient{Addr: g.addr, MaxIdemponentCallAttempts: 1, DisablePathNormalizing: true, DialDualStack: true}
	defer c.CloseIdleConnections()
	if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
		g.t.Fatalf("%s %s: %v", method, uri, err)
	}
	return resp
}

func (g *gateway) get(uri string, headers ...string) *fasthttp.Response {
	g.t.Helper()
	return g.do("GET", "", uri, nil, headers...)
}

// raw writes raw bytes on a new connection and returns everything read until
// the gateway closes the connection or timeout passes.
func (g *gateway) raw(data string, timeout time.Duration) string {
	g.t.Helper()
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, data); err != nil {
		g.t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	b, _ := io.ReadAll(c)
	return string(b)
}

// accessLines returns the access log entries written so far.
func (g *gateway) accessLines() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if !strings.Contains(line, `"component":"access"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// errorBody decodes the gateway's JSON error body and checks its shape.
func errorBody(t *testing.T, resp *fasthttp.Response, status int, code string) map[string]any {
	t.Helper()
	if resp.StatusCode() != status {
		t.Fatalf("status = %d, want %d; body %q", resp.StatusCode(), status, resp.Body())
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body(), &m); err != nil {
		t.Fatalf("error body is not JSON: %q", resp.Body())
	}
	if m["error"] != code {
		t.Errorf("error = %v, want %q", m["error"], code)
	}
	id, _ := m["request_id"].(string)
	if id == "" || id != string(resp.Header.Peek("X-Request-ID")) {
		t.Errorf("request_id %q must be set and equal the X-Request-ID header %q", id, resp.Header.Peek("X-Request-ID"))
	}
	return m
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// echo is a real upstream on loopback that answers with what it received.
type echo struct {
	id       string
	addr     string
	srv      *fasthttp.Server
	requests atomic.Int64
	// last holds the most recent request as received (copied).
	mu   sync.Mutex
	last *fasthttp.Request
	// handler, when set, answers instead of the echo.
	handler func(ctx *fasthttp.RequestCtx)
}

// echoed is the JSON body the echo upstream answers with.
type echoed struct {
	ID      string              `json:"id"`
	Method  string              `json:"method"`
	URI     string              `json:"uri"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
	Body    int                 `json:"body_len"`
}

func startEcho(t *testing.T, id string) *echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{id: id, addr: ln.Addr().String()}
	e.srv = &fasthttp.Server{
		Handler:           e.serve,
		StreamRequestBody: true,
		// Keep what arrives exactly as sent so tests see raw header names.
		DisableHeaderNamesNormalizing: false,
		MaxRequestBodySize:            1 << 30,
	}
	go e.srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = e.srv.Shutdown() })
	return e
}

func (e *echo) url() string { return "http://" + e.addr }

func (e *echo) serve(ctx *fasthttp.RequestCtx) {
	e.requests.Add(1)
	cp := &fasthttp.Request{}
	ctx.Request.Header.CopyTo(&cp.Header)
	e.mu.Lock()
	e.last = cp
	h := e.handler
	e.mu.Unlock()
	if h != nil {
		h(ctx)
		return
	}
	n := 0
	if s := ctx.RequestBodyStream(); s != nil {
		m, _ := io.Copy(io.Discard, s)
		n = int(m)
	} else {
		n = len(ctx.PostBody())
	}
	out := echoed{ID: e.id, Method: string(ctx.Method()), URI: string(ctx.RequestURI()), Host: string(ctx.Host()),
		Headers: map[string][]string{}, Body: n}
	for k, v := range ctx.Request.Header.All() {
		out.Headers[string(k)] = append(out.Headers[string(k)], string(v))
	}
	b, _ := json.Marshal(out)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func (e *echo) setHandler(h func(ctx *fasthttp.RequestCtx)) {
	e.mu.Lock()
	e.handler = h
	e.mu.Unlock()
}

func decodeEcho(t *testing.T, resp *fasthttp.Response) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal(resp.Body(), &e); err != nil {
		t.Fatalf("status %d, body %q: %v", resp.StatusCode(), resp.Body(), err)
	}
	return e
}

// eventually polls cond every 5ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func yamlf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// oneTenant is the config of a gateway with one tenant, name, on path
// prefix / over the upstreams urls: what most tests through the gateway
// start from, so that they state only what is special about theirs. top
// is YAML added at the top level ("logging: {access_log: false}") and
// keys YAML added to the tenant, written as at the top level (oneTenant
// indents it); either may be "", and leading and trailing blank lines are
// dropped.
func oneTenant(name, top, keys string, urls ...string) string {
	var b strings.Builder
	if top = strings.Trim(top, "\n"); top != "" {
		b.WriteString(top + "\n")
	}
	fmt.Fprintf(&b, "tenants:\n  - name: %s\n    path_prefix: /\n    upstreams: [", name)
	for i, u := range urls {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{url: %q}", u)
	}
	b.WriteString("]\n")
	if keys = strings.Trim(keys, "\n"); keys != "" {
		for line := range strings.SplitSeq(keys, "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	return b.String()
}

// serveConns listens on a free loopback port until the test ends and
// serves each connection with serve on a goroutine of its own, closing
// the connection when serve returns. It returns the listener's address.
func serveConns(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// hangingListener accepts connections and never answers until the test
// ends: an upstream that hangs. It returns its address.
func hangingListener(t *testing.T) string {
	t.Helper()
	return serveConns(t, func(net.Conn) { <-t.Context().Done() })
}
