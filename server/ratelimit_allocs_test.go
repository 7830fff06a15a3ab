//go:build !race

package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/ratelimit"
)

// TestLocalFirstDecideDoesNotAllocate holds a local_first check of a known
// key (share looked up, GCRA in memory, the request counted for the next
// sync) to 0 allocations. The syncer's goroutine is not started: its
// background allocations would count in AllocsPerRun, and it is off the
// request path.
func TestLocalFirstDecideDoesNotAllocate(t *testing.T) {
	tl, sy := newLocalFirstLimits(t)
	checks := []ratelimit.Check{{Key: []byte("{api}:whole:")}}
	tl.decide(checks)
	if allocs := testing.AllocsPerRun(1000, func() {
		if ok, _, _ := tl.decide(checks); !ok {
			t.Fatal("denied")
		}
	}); allocs != 0 {
		t.Errorf("local_first decide: %v allocs/op, want 0", allocs)
	}
	if n := sy.pending["{api}:whole:"].n; n < 1000 {
		t.Errorf("%d requests counted for the sync, want every one", n)
	}
}

// BenchmarkLocalFirstDecide is the hot path of a local_first limit: the
// key's share looked up, GCRA in memory on it, the request counted for
// the next sync; no Redis round trip. Steady state 0 allocs/op.
func BenchmarkLocalFirstDecide(b *testing.B) {
	tl, _ := newLocalFirstLimits(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		checks := []ratelimit.Check{{Key: []byte("{api}:whole:")}}
		for pb.Next() {
			tl.decide(checks)
		}
	})
}

// newLocalFirstLimits is a tenant with one local_first limit that always
// allows, on a syncer whose goroutine is not started.
func newLocalFirstLimits(tb testing.TB) (*tenantLimits, *syncer) {
	local := ratelimit.NewLocal(ratelimit.LocalConfig{})
	r := ratelimit.NewRedis(ratelimit.RedisConfig{Addrs: []string{"127.0.0.1:1"}})
	tb.Cleanup(func() { r.Close() })
	sy := &syncer{redis: r, local: local, log: slog.Default(), pending: make(map[string]*pendingKey)}
	sy.guess.Store(2)
	return &tenantLimits{
		local:  local,
		redis:  r,
		syncer: sy,
		specs: []limitSpec{{
			name: "whole", lim: ratelimit.NewLimit(1_000_000_000, time.Second, 1_000_000),
			localFirst: true, sync: 100 * time.Millisecond,
		}},
	}, sy
}
