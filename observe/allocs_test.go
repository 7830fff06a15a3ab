//go:build !race

package observe

import (
	"testing"
	"time"
)

// The race detector allocates on its own; these budgets hold without it.

func TestRequestPathDoesNotAllocate(t *testing.T) {
	r := New(Config{})
	rs, us, ts := r.Route("a", "/"), r.Upstream("a", "http://u"), r.Tenant("a", "s.lua")
	e := NewExporter(ExporterConfig{Endpoint: "http://127.0.0.1:1", Buffer: 1 << 20})
	tp := []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	var buf [TraceparentLen]byte
	method := []byte("GET")
	rec := &SpanRecord{Start: time.Now(), Tenant: "a", Route: "/", Method: MethodLabel(method)}
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"RouteStats.Observe", func() { rs.Observe(1, method, 200, time.Millisecond, 10, 10) }},
		{"UpstreamStats.Observe*", func() {
			us.ObserveStatus(1, 503, time.Millisecond)
			us.ObserveFailure(1, FailTimeout, time.Millisecond)
		}},
		{"TenantStats", func() { ts.Retry(); ts.Script().Observe(1, time.Millisecond); ts.Script().Error(LuaTimeout) }},
		{"traceparent in and out", func() {
			tr, _ := ParseTraceparent(tp)
			tr.Continue()
			tr.AppendTraceparent(buf[:0])
			var n Trace
			n.Start(0.5)
		}},
		{"Exporter.Record", func() { e.Record(rec) }},
	} {
		if n := testing.AllocsPerRun(1000, c.f); n != 0 {
			t.Errorf("%s: %v allocs/op, want 0", c.name, n)
		}
	}
}
