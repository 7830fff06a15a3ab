package breaker

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentInvariants hammers one breaker from 500 goroutines with
// random outcomes while the clock moves, and checks the invariants that must
// hold under any interleaving (run it with -race):
//   - no half-open generation ever admits, let alone has in flight, more
//     than HalfOpenMaxRequests probes;
//   - every OnStateChange is a legal edge, and the edges balance: each
//     phase is entered as often as it is left, give or take the final one;
//   - the generation counts exactly the transitions reported;
//   - every admitted request is reported once.
func TestConcurrentInvariants(t *testing.T) {
	t.Parallel()
	const (
		goroutines = 500
		maxProbes  = 3
	)
	iterations := 400
	if testing.Short() {
		iterations = 50
	}
	var clock atomic.Int64
	var edges [3][3]atomic.Int64 // [from][to]
	b := New(Settings{
		FailureThreshold:    5,
		FailureRatio:        0.5,
		MinRequests:         10,
		Window:              100 * time.Millisecond,
		OpenTimeout:         2 * time.Millisecond,
		HalfOpenMaxRequests: maxProbes,
		Clock:               clock.Load,
		OnStateChange:       func(from, to State) { edges[from][to].Add(1) },
	})

	// Per half-open generation: probes admitted and in flight. 1<<16 slots
	// are far more generations than the test produces (checked below), so
	// no two generations share a slot.
	const slots = 1 << 16
	probesAdmitted := make([]atomic.Int32, slots)
	probesInflight := make([]atomic.Int32, slots)
	var allowed, done, rejected, violations atomic.Int64

	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			<-start
			for range iterations {
				tok, ok := b.Allow()
				if !ok {
					rejected.Add(1)
					if rng.IntN(20) == 0 {
						clock.Add(int64(time.Millisecond)) // time passes while open
					}
					runtime.Gosched() // let probe holders report
					continue
				}
				allowed.Add(1)
				slot := tok.gen % slots
				if tok.kind == tokenProbe {
					if probesAdmitted[slot].Add(1) > maxProbes || probesInflight[slot].Add(1) > maxProbes {
						violations.Add(1)
					}
				}
				if rng.IntN(4) == 0 {
					runtime.Gosched() // let other goroutines transition meanwhile
				}
				if tok.kind == tokenProbe {
					probesInflight[slot].Add(-1)
				}
				b.Done(tok, rng.IntN(4) != 0) // one in four fails: it trips and recovers repeatedly
				done.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()

	if v := violations.Load(); v != 0 {
		t.Errorf("%d times more than %d probes were admitted or in flight in one half-open generation", v, maxProbes)
	}
	if allowed.Load() != done.Load() || allowed.Load()+rejected.Load() != int64(goroutines*iterations) {
		t.Errorf("allowed %d, done %d, rejected %d, of %d", allowed.Load(), done.Load(), rejected.Load(), goroutines*iterations)
	}

	var total int64
	legal := map[[2]State]bool{
		{StateClosed, StateOpen}: true, {StateOpen, StateHalfOpen}: true,
		{StateHalfOpen, StateOpen}: true, {StateHalfOpen, StateClosed}: true,
	}
	var in, out [3]int64
	for from := range 3 {
		for to := range 3 {
			n := edges[from][to].Load()
			if n != 0 && !legal[[2]State{State(from), State(to)}] {
				t.Errorf("%d illegal transitions %v → %v", n, State(from), State(to))
			}
			total += n
			out[from] += n
			in[to] += n
		}
	}
	final := b.State()
	for s := range 3 {
		want := int64(0)
		if State(s) == final {
			want++
		}
		if State(s) == StateClosed {
			want-- // the breaker started closed
		}
		if in[s]-out[s] != want {
			t.Errorf("%v entered %d times, left %d times, final state %v", State(s), in[s], out[s], final)
		}
	}
	if gen := int64(b.Counts().Generation); gen != total {
		t.Errorf("Generation = %d, but %d transitions were reported", gen, total)
	}
	if total >= slots {
		t.Fatalf("%d generations overflow the per-generation probe slots", total)
	}
	if edges[StateHalfOpen][StateClosed].Load() == 0 || edges[StateClosed][StateOpen].Load() == 0 {
		t.Errorf("the run never closed or never tripped: %d transitions", total)
	}
	t.Logf("%d allowed, %d rejected, %d transitions, final %v", allowed.Load(), rejected.Load(), total, final)
}
