package server

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// newTCPBenchServer is newBenchGateway with its upstreams on a real
// loopback TCP listener, so the path includes the upConn of each pooled
// connection (the MSG_PEEK check before a reuse). With plain, the dialer is
// fasthttp's alone, for comparison.
func newTCPBenchServer(tb testing.TB, plain bool) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	body := make([]byte, upstreamLen)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	upstream := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}}
	go upstream.Serve(ln) //nolint:errcheck
	tb.Cleanup(func() { _ = upstream.Shutdown() })
	url := "http://" + ln.Addr().String()
	s, err := New(loadConfig(tb, yamlf(`
logging: {access_log: false, level: error}
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: %q}]
    circuit_breaker: {}
`, url)), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.snap.Load().close() })
	if plain {
		for _, t := range s.snap.Load().tenants {
			for _, up := range t.pool.ups {
				up.client.DialTimeout = func(addr string, d time.Duration) (net.Conn, error) { return fasthttp.DialTimeout(addr, d) }
			}
		}
	}
	return s
}

// BenchmarkProxyHandlerTCP bounds the proxy path over a real loopback
// connection, with the closed-connection check before each reuse (upConn)
// and without it (plain): the difference is the cost of that check, one
// non-blocking recv. Steady state must be 0 allocs/op either way.
func BenchmarkProxyHandlerTCP(b *testing.B) {
	for _, bc := range []struct {
		name  string
		plain bool
	}{{"upConn", false}, {"plain", true}} {
		b.Run(bc.name, func(b *testing.B) {
			s := newTCPBenchServer(b, bc.plain)
			benchHandle(b, s)
		})
	}
}
