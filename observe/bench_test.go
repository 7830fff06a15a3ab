package observe

import (
	"sync/atomic"
	"testing"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

var shardSeq atomic.Uint64

// BenchmarkRouteObserve bounds what one request costs the metrics: a
// method/status counter, bytes and a duration histogram, on every core at
// once (each goroutine a connection with its own shard). Compare with
// BenchmarkVictoriaMetricsObserve, the same counts kept in one
// VictoriaMetrics Counter and PrometheusHistogram per series.
func BenchmarkRouteObserve(b *testing.B) {
	rs := New(Config{}).Route("api", "/api")
	method := []byte("GET")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		sh := Shard(shardSeq.Add(1))
		for pb.Next() {
			rs.Observe(sh, method, 200, 3*time.Millisecond, 100, 1000)
		}
	})
}

// BenchmarkVictoriaMetricsObserve is the same work through the library's
// own types: one atomic per counter shared by every core, and a mutex per
// histogram.
func BenchmarkVictoriaMetricsObserve(b *testing.B) {
	s := vm.NewSet()
	c := s.NewCounter(`keystone_http_requests_total{tenant="api",route="/api",method="GET",code="200"}`)
	in := s.NewCounter(`keystone_http_request_bytes_total{tenant="api",route="/api"}`)
	out := s.NewCounter(`keystone_http_response_bytes_total{tenant="api",route="/api"}`)
	h := s.NewPrometheusHistogramExt(`keystone_http_request_duration_seconds{tenant="api",route="/api"}`, Bounds[:])
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc()
			in.Add(100)
			out.Add(1000)
			h.Update(0.003)
		}
	})
}

// BenchmarkTraceparent bounds the tracing work of one request: parse the
// incoming header, mint a span, format the outgoing header.
func BenchmarkTraceparent(b *testing.B) {
	in := []byte(validTP)
	var buf [TraceparentLen]byte
	b.ReportAllocs()
	for b.Loop() {
		tr, ok := ParseTraceparent(in)
		if !ok {
			b.Fatal("parse")
		}
		tr.Continue()
		_ = tr.AppendTraceparent(buf[:0])
	}
}
