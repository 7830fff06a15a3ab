//go:build !race

package breaker

import (
	"testing"
	"time"
)

// TestAllocs is the allocation budget of the request path: Allow and Done
// (and Cancel) return and take a value Token, so they must never allocate,
// in any phase.
func TestAllocs(t *testing.T) {
	clk := newFakeClock()
	b := New(Settings{
		FailureThreshold: 3, FailureRatio: 0.5, MinRequests: 10, Window: time.Second,
		OpenTimeout: time.Millisecond, HalfOpenMaxRequests: 2, Clock: clk.Now,
	})
	tests := []struct {
		name string
		f    func()
	}{
		{"Allow and Done with a success while closed", func() {
			tok, _ := b.Allow()
			b.Done(tok, true)
		}},
		{"Allow and Done through trip, half-open and close", func() {
			for range 3 {
				tok, _ := b.Allow()
				b.Done(tok, false)
			}
			b.Allow() // rejected while open
			clk.Advance(time.Millisecond)
			p1, _ := b.Allow()
			p2, _ := b.Allow()
			b.Cancel(p2)
			p2, _ = b.Allow()
			b.Done(p1, true)
			b.Done(p2, true)
		}},
		{"read-only accessors", func() {
			_ = b.Available()
			_ = b.State()
			_ = b.RetryAfter()
			_ = b.Counts()
		}},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
			t.Errorf("%s: %v allocs/op, want 0", tt.name, n)
		}
	}
	if b.State() != StateClosed {
		t.Fatalf("the cycle did not end closed: %v", b.State())
	}
}
