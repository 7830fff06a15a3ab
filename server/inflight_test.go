package server

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestInflightTracksAtMostItsSlots(t *testing.T) {
	t.Parallel()
	f := newInflight(1) // the minimum, 64 slots
	if len(f.slots) != minInflightSlots {
		t.Fatalf("%d slots, want %d", len(f.slots), minInflightSlots)
	}
	seen := map[int32]bool{}
	tracked := 0
	for i := range 200 {
		rs := &reqState{slot: -1}
		f.add(rs, uint64(i%3)) // few distinct keys: long probes
		if rs.slot < 0 {
			continue
		}
		if seen[rs.slot] {
			t.Fatalf("slot %d handed out twice", rs.slot)
		}
		seen[rs.slot] = true
		tracked++
	}
	if tracked == 0 || tracked > len(f.slots) {
		t.Errorf("%d requests tracked in %d slots", tracked, len(f.slots))
	}
	if n := len(newInflight(1 << 30).slots); n != maxInflightSlots {
		t.Errorf("a huge max_conns made %d slots, want the cap %d", n, maxInflightSlots)
	}
}

// TestInflightCutOffLogsEachRequestOnce hammers the table from many
// goroutines doing what handle and finish do while Shutdown cuts off:
// every request is logged exactly once, by finish or by the cut-off, and
// (under -race) the cut-off reads only states it may.
func TestInflightCutOffLogsEachRequestOnce(t *testing.T) {
	t.Parallel()
	f := newInflight(64)
	const workers, each = 8, 2000
	var byFinish, byCutOff atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range each {
				rs := acquireState()
				rs.setRequestID(nil) // what the cut-off reads, set before add
				f.add(rs, uint64(w*each+i))
				release := true
				if rs.slot >= 0 && !rs.logged.CompareAndSwap(false, true) {
					release = false
				} else {
					byFinish.Add(1)
				}
				if rs.slot >= 0 {
					f.remove(rs)
					release = release && !f.cutoff.Load()
				}
				if release {
					releaseState(rs)
				}
			}
		}()
	}
	close(start)
	f.cutOff(func(rs *reqState) {
		if !validRequestID(rs.reqID) {
			t.Errorf("cut-off read a state being reset: id %q", rs.reqID)
		}
		byCutOff.Add(1)
	})
	wg.Wait()
	if got := byFinish.Load() + byCutOff.Load(); got != workers*each {
		t.Errorf("%d lines (%d by finish, %d cut off) for %d requests", got, byFinish.Load(), byCutOff.Load(), workers*each)
	}
}
