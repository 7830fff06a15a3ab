//go:build !race

package server

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// The race detector allocates on its own; these budgets hold without it.

func TestProxyHandlerDoesNotAllocate(t *testing.T) {
	// Whatever responses earlier tests read: calibrate fasthttp's response
	// body pool to 13-byte bodies first, as the 45,000 answers of
	// TestLuaSlowUpstreamKeepsUpWithPlainTenant do (settleResponseBodyPool).
	var resp fasthttp.Response
	for range bodyPoolSettleCalls {
		resp.SetBodyString("slow upstream")
		resp.ResetBody()
	}
	s := newBenchGateway(t)
	ctx, tmpl := newBenchCtx()
	allocs := handleAllocs(s, ctx, tmpl)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if allocs != 0 {
		t.Errorf("proxy handler: %v allocs/op, want 0", allocs)
	}
}

// handleAllocs serves 100 requests built from tmpl to warm s's pools and
// keep-alive connections, then returns the allocations per further
// request. ctx holds the last answer.
func handleAllocs(s *Server, ctx *fasthttp.RequestCtx, tmpl *fasthttp.Request) float64 {
	for range 100 {
		benchRequest(ctx, tmpl)
		s.handle(ctx)
	}
	return testing.AllocsPerRun(1000, func() {
		benchRequest(ctx, tmpl)
		s.handle(ctx)
	})
}

func TestTenantMatchDoesNotAllocate(t *testing.T) {
	ix := manyTenants(t, 10000)
	host, path := []byte("SVC4.example.com:8080"), []byte("/api/v1/x")
	if allocs := testing.AllocsPerRun(1000, func() { ix.Match(host, path) }); allocs != 0 {
		t.Errorf("Match: %v allocs/op, want 0", allocs)
	}
}

func TestHeaderHandlingDoesNotAllocate(t *testing.T) {
	ctx, tmpl := newBenchCtx()
	benchRequest(ctx, tmpl)
	if allocs := testing.AllocsPerRun(1000, func() {
		framingError(&ctx.Request.Header)
		removeRequestHopHeaders(&ctx.Request.Header)
	}); allocs != 0 {
		t.Errorf("framing and hop-by-hop handling: %v allocs/op, want 0", allocs)
	}
}

// TestLuaRoutesStayWithinTheirAllocationBudget holds the Lua paths through
// the whole pipeline to their budgets: a Hello World route at most 10
// allocs/op (it measures 0), a middleware in front of keystone.Proxy at most
// 3 (fasthttp/router allocates the catch-all parameter; the proxy stage and
// the Lua call allocate nothing).
func TestLuaRoutesStayWithinTheirAllocationBudget(t *testing.T) {
	for _, c := range []struct {
		name, script, uri string
		wantLen           int
		budget            float64
	}{
		{"hello world", benchHelloLua, helloURI, helloLen, 10},
		{"middleware + proxy", benchMiddlewareProxyLua, proxiedURI, upstreamLen, 3},
	} {
		s := newLuaBenchGateway(t, c.script)
		ctx, tmpl := newLuaBenchCtx(c.uri)
		for range 100 {
			serveBench(t, s, ctx, tmpl, c.wantLen)
		}
		allocs := testing.AllocsPerRun(1000, func() { serveBench(t, s, ctx, tmpl, c.wantLen) })
		if allocs > c.budget {
			t.Errorf("%s: %v allocs/op, budget %v", c.name, allocs, c.budget)
		}
	}
}

// TestProxyOverTCPDoesNotAllocate holds the proxy path over a real loopback
// connection, through upConn and its check before each reuse, to 0
// allocs/op.
func TestProxyOverTCPDoesNotAllocate(t *testing.T) {
	s := newTCPBenchServer(t, false)
	ctx, tmpl := newBenchCtx()
	allocs := handleAllocs(s, ctx, tmpl)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if allocs != 0 {
		t.Errorf("proxy handler over TCP: %v allocs/op, want 0", allocs)
	}
}

func TestProxyHandlerWithObservabilityDoesNotAllocate(t *testing.T) {
	for _, v := range observeVariants {
		s := newBenchGatewayWith(t, v.yaml)
		ctx, tmpl := newBenchCtx()
		allocs := handleAllocs(s, ctx, tmpl)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("%s: status %d: %s", v.name, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if allocs != 0 {
			t.Errorf("%s: proxy handler: %v allocs/op, want 0", v.name, allocs)
		}
	}
}

func TestRateLimitedProxyHandlerDoesNotAllocate(t *testing.T) {
	s := newLimitedBenchGateway(t, "", "      - {name: per-ip, key: client_ip, rate: 1000000000, per: 1s, burst: 1000000}\n      - {name: per-team, key: \"header:X-Team\", rate: 1000000000, per: 1s, burst: 1000000}")
	ctx, tmpl := newBenchCtx()
	benchRequest(ctx, tmpl)
	s.handle(ctx)
	allocs := testing.AllocsPerRun(1000, func() {
		benchRequest(ctx, tmpl)
		s.handle(ctx)
	})
	if h := ctx.Response.Header.String(); ctx.Response.StatusCode() != 200 || !strings.Contains(h, "\r\nRateLimit: \"per-ip\";r=") {
		t.Fatalf("status %d, headers:\n%s", ctx.Response.StatusCode(), h)
	}
	if allocs != 0 {
		t.Errorf("rate-limited proxy path: %v allocs per request, want 0", allocs)
	}
}
