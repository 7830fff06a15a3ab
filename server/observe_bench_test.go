package server

import "testing"

// observeVariants are the proxy path with metrics and tracing on and off:
// BenchmarkProxyHandler itself runs the defaults (both on).
var observeVariants = []struct{ name, yaml string }{
	{"off", "metrics: {enabled: false}\ntracing: {enabled: false}\n"},
	{"metrics", "metrics: {enabled: true}\ntracing: {enabled: false}\n"},
	{"tracing", "metrics: {enabled: false}\ntracing: {enabled: true}\n"},
	{"both", ""},
	// Spans recorded for export (the exporter is not started here: the
	// ring fills, then records are dropped; neither allocates).
	{"export", "tracing: {otlp_endpoint: \"http://127.0.0.1:1/v1/traces\"}\n"},
}

// BenchmarkProxyHandlerObserve bounds what metrics and tracing add to the
// proxy path: compare "off" with the others (the budget is 150ns/op and 0
// allocs/op for metrics).
func BenchmarkProxyHandlerObserve(b *testing.B) {
	for _, v := range observeVariants {
		b.Run(v.name, func(b *testing.B) {
			s := newBenchGatewayWith(b, v.yaml)
			benchHandle(b, s)
		})
	}
}

// BenchmarkProxyHandlerObserveParallel is the same on every core, where
// counters shared by every request would show as contention.
func BenchmarkProxyHandlerObserveParallel(b *testing.B) {
	for _, v := range observeVariants {
		b.Run(v.name, func(b *testing.B) {
			s := newBenchGatewayWith(b, v.yaml)
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
		})
	}
}

// BenchmarkObserveRequestWork isolates what metrics and tracing add to one
// proxied request, without the forwarding around it: start the trace (parse
// traceparent, mint a span, set the header), record an upstream attempt
// (one clock read) and record the request. On a loaded machine the whole
// handler's ns/op varies by more than this costs; this is the figure to
// compare with the 150ns budget.
func BenchmarkObserveRequestWork(b *testing.B) {
	for _, v := range observeVariants {
		b.Run(v.name, func(b *testing.B) {
			s := newBenchGatewayWith(b, v.yaml)
			snap := s.snap.Load()
			t := snap.byName["api"]
			up := t.pool.ups[0]
			ctx, tmpl := newBenchCtx()
			tmpl.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			benchRequest(ctx, tmpl)
			ctx.Response.SetStatusCode(200)
			ctx.Response.SetBody(make([]byte, upstreamLen))
			b.ReportAllocs()
			for b.Loop() {
				rs := acquireState()
				rs.start = ctx.Time()
				rs.tenant = t
				rs.beginRequest(ctx, snap)
				rs.beginUpstream()
				rs.attemptDone(up, failNone, 200)
				rs.endRequest(ctx, snap)
				releaseState(rs)
			}
		})
	}
}
