//go:build !race

package server

import "testing"

// TestAccessLogCopyAndTrackingDoNotAllocate holds what the access log adds
// to the request path before the line is written, copying what the client
// sent and tracking the request in flight, to 0 allocs/op.
func TestAccessLogCopyAndTrackingDoNotAllocate(t *testing.T) {
	ctx, tmpl := newBenchCtx()
	benchRequest(ctx, tmpl)
	f := newInflight(1024)
	rs := acquireState()
	defer releaseState(rs)
	rs.captureRequest(ctx) // grow the buffer once
	var key uint64
	if allocs := testing.AllocsPerRun(1000, func() {
		rs.captureRequest(ctx)
		key++
		f.add(rs, key)
		rs.logged.CompareAndSwap(false, true)
		rs.logged.Store(false)
		f.remove(rs)
	}); allocs != 0 {
		t.Errorf("capture and tracking: %v allocs/op, want 0", allocs)
	}
	b := string(rs.sent)
	if m, h, p, q := b[:rs.sentMethod], b[rs.sentMethod:rs.sentHost], b[rs.sentHost:rs.sentPath], b[rs.sentPath:]; m != "GET" ||
		h != "api.example.com" || p != "/api/v1/orders/123" || q != "expand=items" {
		t.Errorf("captured %q %q %q %q", m, h, p, q)
	}
}
