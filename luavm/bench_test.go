package luavm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const helloScript = `
local r = chi.NewRouter()
r:Get("/hello", function(w, req) w:Write("Hello World") end)
return r
`

const middlewareProxyScript = `
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    req:Header():Set("X-Gateway", "keystone")
    next(w, req)
    w:Header():Set("X-Served-By", "keystone")
  end
end)
r:Handle("/*", keystone.Proxy("api"))
return r
`

func benchConfig() Config {
	return Config{
		MaxExecution: time.Second,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// benchScript loads src with a Host whose "api" upstream is an in-memory
// fasthttp server.
func benchScript(b *testing.B, src string) *Script {
	b.Helper()
	up := startMemUpstream(b, "api")
	host := &testHost{upstreams: map[string]*upstream{"api": up}}
	s, err := Load(benchConfig(), scriptFS(src), "main.lua", Options{Tenant: "api", Host: host})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// newCtx returns a server-side RequestCtx for a request to path.
func newCtx(method, path string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI("http://keystone.test" + path)
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	return ctx
}

// BenchmarkHelloWorld bounds the whole cost of a Lua route: Go routing,
// pool get/put, deadline arm/disarm, entering Lua, w:Write. Budget: 10
// allocs/op.
func BenchmarkHelloWorld(b *testing.B) {
	s := benchScript(b, helloScript)
	ctx := newCtx("GET", "/hello")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
	if string(ctx.Response.Body()) != "Hello World" {
		b.Fatalf("body %q", ctx.Response.Body())
	}
}

// BenchmarkHelloWorldParallel shows the pool and VMs scaling with
// GOMAXPROCS (run with -cpu 1,2,4): ns/op should fall as CPUs are added.
func BenchmarkHelloWorldParallel(b *testing.B) {
	s := benchScript(b, helloScript)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := newCtx("GET", "/hello")
		for pb.Next() {
			ctx.Response.Reset()
			s.Handler(ctx)
		}
	})
}

// BenchmarkMiddlewareProxy bounds a Lua middleware in front of
// keystone.Proxy to an in-memory upstream through a fasthttp.HostClient:
// the VM is held across the upstream round trip.
func BenchmarkMiddlewareProxy(b *testing.B) {
	s := benchScript(b, middlewareProxyScript)
	ctx := newCtx("GET", "/v1/items?x=1")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("X-Served-By")) != "keystone" {
		b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// BenchmarkProxyNoLua bounds a keystone.Proxy route without middleware,
// which dispatches in Go without taking a VM.
func BenchmarkProxyNoLua(b *testing.B) {
	s := benchScript(b, `local r = chi.NewRouter() r:Handle("/*", keystone.Proxy("api")) return r`)
	ctx := newCtx("GET", "/v1/items")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// BenchmarkPoolGetPut bounds taking a warm thread and VM and handing
// them back: 0 allocs.
func BenchmarkPoolGetPut(b *testing.B) {
	s := benchScript(b, helloScript)
	b.ReportAllocs()
	for b.Loop() {
		t, v, _ := s.acquire()
		s.release(t, v)
	}
}

// BenchmarkPoolGetPutParallel shows the pool under contention.
func BenchmarkPoolGetPutParallel(b *testing.B) {
	s := benchScript(b, helloScript)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t, v, err := s.acquire()
			if err != nil {
				b.Error(err)
				return
			}
			s.release(t, v)
		}
	})
}

// BenchmarkDeadline bounds the per-request deadline: one arm (Reset of the
// VM's timer) and one disarm (Stop). Target: under 0.5µs, 0 allocs. The
// budget is long so a descheduled benchmark never sees it fire; the cost
// of Reset does not depend on it.
func BenchmarkDeadline(b *testing.B) {
	d := newDeadline()
	defer d.stop()
	b.ReportAllocs()
	for b.Loop() {
		d.arm(time.Hour)
		if !d.disarm() {
			b.Fatal("fired")
		}
	}
}

// BenchmarkDeadlinePauseResume bounds the clock pause around a proxy call.
func BenchmarkDeadlinePauseResume(b *testing.B) {
	d := newDeadline()
	defer d.stop()
	d.arm(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		d.pause()
		d.resume()
	}
	d.disarm()
}

// BenchmarkContextWithTimeout is the rejected alternative to
// BenchmarkDeadline, for comparison.
func BenchmarkContextWithTimeout(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_ = ctx.Done()
		cancel()
	}
}

// httpGetScript calls keystone.http.Get on the upstream named by %s and
// answers with its body.
const httpGetScript = `
local r = chi.NewRouter()
r:Get("/call", function(w, req)
  local res, err = keystone.http.Get("http://%s/x?q=1")
  if not res then error(err) end
  w:Write(res.body)
end)
return r
`

// BenchmarkHTTPGet bounds a keystone.http.Get round trip to a loopback
// upstream over a kept-alive connection: parking the VM, the client call,
// and building the Lua response table.
func BenchmarkHTTPGet(b *testing.B) {
	up := startUpstream(b, "api")
	s := benchScript(b, fmt.Sprintf(httpGetScript, up.addr))
	ctx := newCtx("GET", "/call")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// BenchmarkHTTPGetParallel is BenchmarkHTTPGet from every core: the
// script's client is shared by all of its requests.
func BenchmarkHTTPGetParallel(b *testing.B) {
	up := startUpstream(b, "api")
	s := benchScript(b, fmt.Sprintf(httpGetScript, up.addr))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := newCtx("GET", "/call")
		for pb.Next() {
			ctx.Response.Reset()
			s.Handler(ctx)
		}
		if ctx.Response.StatusCode() != 200 {
			b.Errorf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	})
}
