package server

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/internal/redistest"
)

// newLimitedBenchGateway is newBenchGateway's api tenant with the given
// rate_limits and shared block.
func newLimitedBenchGateway(tb testing.TB, shared, limits string) *Server {
	tb.Helper()
	return newBenchServer(tb, fmt.Sprintf(`
logging: {access_log: false, level: error}
%s
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://127.0.0.1:2"}, {url: "http://127.0.0.1:3"}]
    circuit_breaker: {}
    rate_limits:
%s
`, shared, limits))
}

// BenchmarkProxyHandlerRateLimited is BenchmarkProxyHandler with a local
// per-IP limit that always allows: the cost of the rate-limit stage
// (key built, one GCRA check, RateLimit headers). Steady state 0 allocs/op.
func BenchmarkProxyHandlerRateLimited(b *testing.B) {
	s := newLimitedBenchGateway(b, "", "      - {name: per-ip, key: client_ip, rate: 1000000000, per: 1s, burst: 1000000}")
	benchHandle(b, s)
}

// BenchmarkProxyHandlerRedisStrict is the proxy path with a strict limit on
// a real local redis-server, 16 requests in flight per core (a request
// waits on its Redis round trip, so one per core would measure latency,
// not throughput): throughput (ns/op) and the p99 of one request's time
// through the gateway (p99-µs).
func BenchmarkProxyHandlerRedisStrict(b *testing.B) {
	srv := redistest.Start(b)
	s := newLimitedBenchGateway(b, fmt.Sprintf("shared: {store: redis, redis: {addr: %q, timeout: 1s}}", srv.Addr),
		"      - {name: per-ip, key: client_ip, rate: 1000000000, per: 1s, burst: 1000000}")
	b.ReportAllocs()
	b.SetParallelism(16)
	lat := make(chan []time.Duration, 256)
	b.RunParallel(func(pb *testing.PB) {
		ctx, tmpl := newBenchCtx()
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			benchRequest(ctx, tmpl)
			s.handle(ctx)
			mine = append(mine, time.Since(t0))
			if ctx.Response.StatusCode() != 200 {
				b.Errorf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				break
			}
		}
		lat <- mine
	})
	close(lat)
	var all []time.Duration
	for l := range lat {
		all = append(all, l...)
	}
	if len(all) > 0 {
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}
