package server

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// newBenchGateway builds a gateway with every feature of the proxy path on
// (tenant match among several tenants, round-robin over two upstreams,
// breaker, request id, hop-by-hop handling) whose upstreams answer 100 bytes
// over an in-memory listener, so the benchmark measures the gateway and not
// the loopback stack. The access log is off, as in the nginx comparison.
func newBenchGateway(tb testing.TB) *Server {
	tb.Helper()
	return newBenchGatewayWith(tb, "")
}

// newBenchGatewayWith is newBenchGateway with extra top-level settings
// (metrics, tracing) before its own.
func newBenchGatewayWith(tb testing.TB, extra string) *Server {
	tb.Helper()
	return newBenchServer(tb, extra+`
logging: {access_log: false, level: error}
tenants:
  - {name: other, domains: [other.example.com], upstreams: [{url: "http://127.0.0.1:1"}]}
  - {name: team, path_prefix: /team, upstreams: [{url: "http://127.0.0.1:1"}]}
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://127.0.0.1:2"}, {url: "http://127.0.0.1:3"}]
    circuit_breaker: {}
`)
}

// newBenchServer builds a server from yaml (and extra files) without a
// listener, every upstream dialing one in-memory fasthttp server that
// answers 100 bytes.
func newBenchServer(tb testing.TB, yaml string, files ...string) *Server {
	tb.Helper()
	s, err := New(loadConfig(tb, yaml, files...), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.snap.Load().close() })
	ln := fasthttputil.NewInmemoryListener()
	body := make([]byte, upstreamLen)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	upstream := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}}
	go upstream.Serve(ln) //nolint:errcheck
	tb.Cleanup(func() { _ = upstream.Shutdown(); _ = ln.Close() })
	for _, t := range s.snap.Load().tenants {
		for _, up := range t.pool.ups {
			up.client.DialTimeout = func(string, time.Duration) (net.Conn, error) { return ln.Dial() }
		}
	}
	return s
}

// benchRequest fills ctx with a typical proxied GET.
func benchRequest(ctx *fasthttp.RequestCtx, tmpl *fasthttp.Request) {
	ctx.Request.Reset()
	tmpl.CopyTo(&ctx.Request)
	ctx.Response.Reset()
}

// newBenchCtx returns a RequestCtx for calling Server.handle directly and
// the typical proxied GET it starts each run from (refill it with
// benchRequest). It first settles fasthttp's response body pool (see
// settleResponseBodyPool), so a measurement does not depend on the
// responses earlier tests in the process have read.
func newBenchCtx() (*fasthttp.RequestCtx, *fasthttp.Request) {
	settleResponseBodyPool()
	tmpl := &fasthttp.Request{}
	tmpl.SetRequestURI("/api/v1/orders/123?expand=items")
	tmpl.Header.SetHost("api.example.com")
	tmpl.Header.Set("User-Agent", "bench/1.0")
	tmpl.Header.Set("Accept", "application/json")
	tmpl.Header.Set("Connection", "keep-alive")
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(tmpl, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx, tmpl
}

// settleResponseBodyPool puts bodyPoolSettleCalls bodies of
// bodyPoolSettleLen bytes through fasthttp's response body pool, so that
// the pool holds buffers of every size the benchmarks and allocation tests
// proxy.
//
// That pool is process-wide and calibrates itself (valyala/bytebufferpool):
// once 42,000 buffers of one size class have been returned since the last
// calibration, it drops, from then on, every returned buffer larger than
// the sizes of 95% of those returns. The server's RequestCtx gives its
// response body back to that pool after each request (ReduceMemoryUsage,
// server.go), and so does a RequestCtx set up with Init, as here. After a
// test that proxied 45,000 responses of 13 bytes (the Lua load test), the
// 100-byte body of the proxy path was dropped and reallocated on every
// request: TestPlainPathWithTLSConfiguredDoesNotAllocate counted 3
// allocs/op in a whole-package run, 0 when run alone. Putting 42,001
// buffers of one larger class makes that class the most returned one,
// which calibration always keeps, whatever the earlier counts.
func settleResponseBodyPool() {
	var resp fasthttp.Response
	body := make([]byte, bodyPoolSettleLen)
	for range bodyPoolSettleCalls {
		resp.SetBody(body) // takes a buffer from the pool
		resp.ResetBody()   // and returns it
	}
}

const (
	// bodyPoolSettleCalls is one more than bytebufferpool's
	// calibrateCallsThreshold.
	bodyPoolSettleCalls = 42001
	// bodyPoolSettleLen is larger than any body the benchmarks and
	// allocation tests proxy.
	bodyPoolSettleLen = 4096
)

// benchHandle runs b's loop over s.handle with the benchmark request,
// failing on any answer but 200.
func benchHandle(b *testing.B, s *Server) {
	ctx, tmpl := newBenchCtx()
	b.ReportAllocs()
	for b.Loop() {
		benchRequest(ctx, tmpl)
		s.handle(ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkProxyHandler bounds the whole proxy path of one request: tenant
// match → pick → breaker → forward to an upstream over a pooled keep-alive
// connection → response. Steady state must be 0 allocs/op.
func BenchmarkProxyHandler(b *testing.B) {
	s := newBenchGateway(b)
	benchHandle(b, s)
}

// BenchmarkProxyHandlerParallel runs the proxy path on every core.
func BenchmarkProxyHandlerParallel(b *testing.B) {
	s := newBenchGateway(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx, tmpl := newBenchCtx()
		for pb.Next() {
			benchRequest(ctx, tmpl)
			s.handle(ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Errorf("status %d", ctx.Response.StatusCode())
				return
			}
		}
	})
}
