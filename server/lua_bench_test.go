package server

import (
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
)

const benchHelloLua = `
local r = chi.NewRouter()
r:Get("/hello", function(w, req) w:Write("Hello World") end)
return r
`

const benchMiddlewareProxyLua = `
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

// benchLuaPoolSize is the warm VMs of the benchmark scripts: more than
// RunParallel's goroutines at -cpu 1,2,4, so no VM is created while timing.
const benchLuaPoolSize = 4

// newLuaBenchGateway is newBenchGateway with a script on the api tenant:
// the same tenants, the api tenant's upstream answering 100 bytes over an
// in-memory listener, the access log off. max_execution is far above
// what the scripts need: a timeout would discard a VM, and
// TestLuaSteadyLoadCreatesNoVM counts them.
func newLuaBenchGateway(tb testing.TB, script string) *Server {
	tb.Helper()
	return newBenchServer(tb, yamlf(`
logging: {access_log: false, level: error}
lua: {pool_size: %d, max_execution: 5s}
tenants:
  - {name: other, domains: [other.example.com], upstreams: [{url: "http://127.0.0.1:1"}]}
  - {name: team, path_prefix: /team, upstreams: [{url: "http://127.0.0.1:1"}]}
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    script: bench.lua
    upstreams: [{url: "http://127.0.0.1:2"}]
`, benchLuaPoolSize), "bench.lua", script)
}

// newLuaBenchCtx returns a RequestCtx and the GET request to uri it starts
// each run from (refill it with benchRequest).
func newLuaBenchCtx(uri string) (*fasthttp.RequestCtx, *fasthttp.Request) {
	ctx, tmpl := newBenchCtx()
	tmpl.SetRequestURI(uri)
	tmpl.Header.SetHost("api.example.com")
	return ctx, tmpl
}

// serveBench runs one request through the whole pipeline and checks the
// status and the body's length.
func serveBench(tb testing.TB, s *Server, ctx *fasthttp.RequestCtx, tmpl *fasthttp.Request, wantLen int) bool {
	benchRequest(ctx, tmpl)
	s.handle(ctx)
	if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) != wantLen {
		tb.Errorf("status %d: %q", ctx.Response.StatusCode(), ctx.Response.Body())
		return false
	}
	return true
}

const (
	helloURI    = "/api/hello"
	helloLen    = len("Hello World")
	proxiedURI  = "/api/v1/orders/123?expand=items"
	upstreamLen = 100
)

// BenchmarkLuaHelloWorld bounds a Lua route served end to end by the
// pipeline: tenant match, request id, the script's Go routing, VM get/put,
// deadline arm/disarm, one call into Lua, w:Write and the response
// headers. Budget: 10 allocs/op (the script itself allocates none; see
// luavm's BenchmarkHelloWorld).
func BenchmarkLuaHelloWorld(b *testing.B) {
	s := newLuaBenchGateway(b, benchHelloLua)
	ctx, tmpl := newLuaBenchCtx(helloURI)
	b.ReportAllocs()
	for b.Loop() {
		if !serveBench(b, s, ctx, tmpl, helloLen) {
			return
		}
	}
}

// BenchmarkLuaHelloWorldParallel runs the Lua route on every core. Run it
// with -cpu 1,2,4: ns/op falls as CPUs are added, since each request takes
// its own VM from a lock-free pool and VMs share nothing.
func BenchmarkLuaHelloWorldParallel(b *testing.B) {
	s := newLuaBenchGateway(b, benchHelloLua)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx, tmpl := newLuaBenchCtx(helloURI)
		for pb.Next() {
			if !serveBench(b, s, ctx, tmpl, helloLen) {
				return
			}
		}
	})
}

// BenchmarkLuaMiddlewareProxy bounds a Lua middleware in front of
// keystone.Proxy: the Lua route (as above) plus a request header set
// before the proxy, the whole proxy stage to the in-memory upstream (pick,
// breaker, forward over a pooled keep-alive connection), the response
// headers the script set kept across the proxy, and a response header set
// after it. Compare with BenchmarkProxyHandler, the same request without
// a script.
func BenchmarkLuaMiddlewareProxy(b *testing.B) {
	s := newLuaBenchGateway(b, benchMiddlewareProxyLua)
	ctx, tmpl := newLuaBenchCtx(proxiedURI)
	b.ReportAllocs()
	for b.Loop() {
		if !serveBench(b, s, ctx, tmpl, upstreamLen) {
			return
		}
	}
	if string(ctx.Response.Header.Peek("X-Served-By")) != "keystone" {
		b.Fatalf("the middleware did not run: %q", ctx.Response.Header.Header())
	}
}

// TestLuaSteadyLoadCreatesNoVM checks, without timing, that once a
// script's pool is warm, load that never keeps every VM busy at once
// creates no VM: as many goroutines as pooled VMs each run requests back
// to back through the pipeline (a Lua middleware holding its VM across
// keystone.Proxy), so at most pool_size VMs are ever out of the pool.
func TestLuaSteadyLoadCreatesNoVM(t *testing.T) {
	t.Parallel()
	s := newLuaBenchGateway(t, benchMiddlewareProxyLua)
	stats := func() (created, discarded, requests uint64) {
		st := s.snap.Load().byName["api"].script.Stats()
		return st.VMsCreated, st.VMsDiscarded, st.Requests
	}
	run := func(perWorker int) {
		var wg sync.WaitGroup
		for range benchLuaPoolSize {
			wg.Go(func() {
				ctx, tmpl := newLuaBenchCtx(proxiedURI)
				for range perWorker {
					if !serveBench(t, s, ctx, tmpl, upstreamLen) {
						return
					}
				}
			})
		}
		wg.Wait()
	}

	run(10) // warm up: upstream connections, buffers
	created, discarded, requests := stats()
	if created != benchLuaPoolSize {
		t.Fatalf("VMsCreated = %d after warm-up, want pool_size (%d)", created, benchLuaPoolSize)
	}
	const perWorker = 250
	run(perWorker)
	created2, discarded2, requests2 := stats()
	if created2 != created || discarded2 != discarded {
		t.Errorf("under steady load VMsCreated went %d → %d and VMsDiscarded %d → %d, want no change",
			created, created2, discarded, discarded2)
	}
	if n := requests2 - requests; n != benchLuaPoolSize*perWorker {
		t.Errorf("the script served %d requests, want %d", n, benchLuaPoolSize*perWorker)
	}
}
