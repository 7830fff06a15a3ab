package server

import (
	"testing"
)

// newAccessLogBenchGateway is newBenchGateway with the access log on (to a
// discarding logger): the cost of copying what the client sent, tracking
// the request for the shutdown cut-off and building the line.
func newAccessLogBenchGateway(tb testing.TB) *Server {
	tb.Helper()
	return newBenchServer(tb, `
logging: {access_log: true, level: info}
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://127.0.0.1:2"}, {url: "http://127.0.0.1:3"}]
    circuit_breaker: {}
`)
}

// BenchmarkProxyHandlerAccessLog bounds the proxy path with the access log
// on. The line itself (slog attributes and strings) allocates; copying the
// request for it and the in-flight tracking do not.
func BenchmarkProxyHandlerAccessLog(b *testing.B) {
	s := newAccessLogBenchGateway(b)
	benchHandle(b, s)
}
