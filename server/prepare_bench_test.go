package server

import (
	"testing"
)

// BenchmarkRequestChecksAndPrepare bounds the CPU the pipeline spends on a
// typical proxied GET before forwarding it, without the network: the
// malformed-request checks (version, framing, sizes, field lines,
// authority) and the proxy stage's edits (hop-by-hop removal, the
// gateway's one-field headers, version, path). Steady state must be 0
// allocs/op.
func BenchmarkRequestChecksAndPrepare(b *testing.B) {
	s := newBenchGateway(b)
	snap := s.snap.Load()
	var p *pool
	for _, t := range snap.tenants {
		if t.cfg.Name == "api" {
			p = t.pool
		}
	}
	ctx, tmpl := newBenchCtx()
	rs := acquireState()
	defer releaseState(rs)
	rs.setRequestID(nil)
	b.ReportAllocs()
	for b.Loop() {
		benchRequest(ctx, tmpl)
		rs.scratch = rs.scratch[:0]
		if s.rejectMalformed(ctx, rs, snap) {
			b.Fatalf("rejected: %s", ctx.Response.Body())
		}
		p.prepare(ctx, rs)
	}
}
