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
	local := ratelimit.NewLocal(ratelimit.LocalConfig{})
	r := ratelimit.NewRedis(ratelimit.RedisConfig{Addrs: []string{"127.0.0.1:1"}})
	defer r.Close()
	sy := &syncer{redis: r, local: local, log: slog.Default(), pending: make(map[string]*pendingKey)}
	sy.guess.Store(2)
	tl := &tenantLimits{
		local:  local,
		redis:  r,
		syncer: sy,
		specs: []limitSpec{{
			name: "whole", lim: ratelimit.NewLimit(1_000_000_000, time.Second, 1_000_000),
			localFirst: true, sync: 100 * time.Millisecond,
		}},
	}
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
