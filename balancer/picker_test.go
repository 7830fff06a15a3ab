package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/breaker"
)

var policies = []string{PolicyRoundRobin, PolicyWeightedRoundRobin, PolicyLeastConn, PolicyRandomTwoChoices}

// pool returns n upstreams with the given weights (1 if weights is short),
// each with a breaker that trips on one failure and passive detection that
// ejects on one failure, both for an hour, so tests can make any of them
// unavailable in each of the three ways.
func pool(t testing.TB, n int, weights ...int) []*Upstream {
	t.Helper()
	ups := make([]*Upstream, n)
	for i := range ups {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		ups[i] = mustUpstream(t, UpstreamConfig{
			URL:     fmt.Sprintf("http://10.0.0.%d:80", i+1),
			Weight:  w,
			Breaker: breaker.New(breaker.Settings{FailureThreshold: 1, OpenTimeout: time.Hour}),
			Outlier: OutlierConfig{ConsecutiveFailures: 1, Backoff: time.Hour},
		})
	}
	return ups
}

func mustPicker(t testing.TB, policy string, ups []*Upstream) Picker {
	t.Helper()
	p, err := New(policy, ups)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// unavailability is one way an upstream stops being Available.
type unavailability struct {
	name string
	make func(*Upstream)
}

var unavailabilities = []unavailability{
	{"breaker open", func(u *Upstream) {
		tok, _ := u.Breaker.Allow()
		u.Breaker.Done(tok, false)
	}},
	{"ejected", func(u *Upstream) { u.ReportResult(false) }},
	{"unhealthy", func(u *Upstream) { u.healthy.Store(false) }},
}

// counts picks n times and returns how often each index came up.
func counts(t testing.TB, p Picker, size, n int, tried Set) []int {
	t.Helper()
	got := make([]int, size)
	for range n {
		i := p.Pick(tried)
		if i < 0 {
			t.Fatalf("Pick returned -1 with upstreams available")
		}
		got[i]++
	}
	return got
}

func TestNew(t *testing.T) {
	t.Parallel()
	ups := pool(t, 2)
	for _, policy := range policies {
		if _, err := New(policy, ups); err != nil {
			t.Errorf("New(%q): %v", policy, err)
		}
	}
	_, err := New("random", ups)
	if !errors.Is(err, ErrUnknownPolicy) || !strings.Contains(err.Error(), `got "random"`) {
		t.Errorf(`New("random") = %v, want ErrUnknownPolicy naming the policy`, err)
	}
	if _, err := New(PolicyRoundRobin, nil); !errors.Is(err, ErrEmptyPool) {
		t.Errorf("New with no upstreams = %v, want ErrEmptyPool", err)
	}
	if _, err := New(PolicyRoundRobin, []*Upstream{ups[0], nil}); !errors.Is(err, ErrEmptyPool) {
		t.Errorf("New with a nil upstream = %v, want ErrEmptyPool", err)
	}
}

func TestSet(t *testing.T) {
	t.Parallel()
	var s Set
	s = s.With(0).With(5).With(63).With(64).With(-1).With(1000)
	for i := range 70 {
		if want := i == 0 || i == 5 || i == 63; s.Has(i) != want {
			t.Errorf("Has(%d) = %v, want %v", i, s.Has(i), want)
		}
	}
	if s.Has(-1) {
		t.Error("Has(-1) = true")
	}
}

func TestRoundRobinExactShares(t *testing.T) {
	t.Parallel()
	const n, k = 5, 1000
	ups := pool(t, n)
	p := mustPicker(t, PolicyRoundRobin, ups)
	// In order first: 0 1 2 3 4 0 ...
	for want := range 2 * n {
		if got := p.Pick(0); got != want%n {
			t.Fatalf("pick %d = %d, want %d", want, got, want%n)
		}
	}
	if got := counts(t, p, n, n*k, 0); slices.Max(got) != k || slices.Min(got) != k {
		t.Fatalf("shares over %d picks = %v, want %d each", n*k, got, k)
	}

	// With one upstream down, the others still share exactly: a skipped
	// entry is consumed, not handed to its successor.
	unavailabilities[0].make(ups[2])
	got := counts(t, p, n, (n-1)*k, 0)
	if got[2] != 0 || slices.Max(got) != k || slices.Min(slices.Delete(got, 2, 3)) != k {
		t.Fatalf("shares with upstream 2 down = %v, want %d for each other", got, k)
	}
}

func TestWeightedSmoothSequence(t *testing.T) {
	t.Parallel()
	ups := pool(t, 3, 5, 1, 1)
	p := mustPicker(t, PolicyWeightedRoundRobin, ups)
	var seq []byte
	for range 14 {
		seq = append(seq, "abc"[p.Pick(0)])
	}
	// nginx's smooth sequence for 5:1:1, twice.
	if string(seq) != "aabacaa"+"aabacaa" {
		t.Fatalf("sequence = %s, want aabacaa twice", seq)
	}
}

func TestWeightedExactShares(t *testing.T) {
	t.Parallel()
	const cycles = 100
	tests := []struct {
		name    string
		weights []int
		down    []int
		want    []int // picks per cycle of the usable upstreams
	}{
		{"5:1:1 over whole cycles", []int{5, 1, 1}, nil, []int{5, 1, 1}},
		{"the light upstream down leaves 5:1", []int{5, 1, 1}, []int{2}, []int{5, 1, 0}},
		{"the heavy upstream down leaves 1:1", []int{5, 1, 1}, []int{0}, []int{0, 1, 1}},
		{"equal weights are round robin", []int{3, 3, 3}, nil, []int{1, 1, 1}},
		{"weights reduced by their gcd", []int{1000, 2000, 3000}, nil, []int{1, 2, 3}},
		{"a middle upstream down", []int{2, 3, 4, 1}, []int{1}, []int{2, 0, 4, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ups := pool(t, len(tt.weights), tt.weights...)
			for _, i := range tt.down {
				unavailabilities[1].make(ups[i])
			}
			p := mustPicker(t, PolicyWeightedRoundRobin, ups)
			perCycle := 0
			for _, w := range tt.want {
				perCycle += w
			}
			got := counts(t, p, len(ups), perCycle*cycles, 0)
			for i, w := range tt.want {
				if got[i] != w*cycles {
					t.Fatalf("shares = %v, want %v per cycle × %d", got, tt.want, cycles)
				}
			}
		})
	}
}

func TestWeightedScalesLargeWeights(t *testing.T) {
	t.Parallel()
	weights := []int{997, 3001, 1, 5003} // coprime, sum 9002 > maxSequence
	ups := pool(t, len(weights), weights...)
	p := mustPicker(t, PolicyWeightedRoundRobin, ups).(*weighted)
	if len(p.seq) > maxSequence+len(ups) {
		t.Fatalf("sequence length %d exceeds %d", len(p.seq), maxSequence+len(ups))
	}
	got := counts(t, p, len(ups), len(p.seq), 0)
	if got[2] < 1 {
		t.Fatal("a weight-1 upstream lost its only slot in scaling")
	}
	sum := 0
	for _, w := range weights {
		sum += w
	}
	for i, w := range weights {
		want := float64(w) / float64(sum)
		if share := float64(got[i]) / float64(len(p.seq)); share < want-0.002 || share > want+0.002 {
			t.Errorf("upstream %d: share %.4f, want %.4f±0.002", i, share, want)
		}
	}
}

func TestWeightedFallbackKeepsShares(t *testing.T) {
	t.Parallel()
	// The heavy upstream is down: its runs in the sequence are longer than
	// maxSkips, so many picks come from the weighted random fallback.
	ups := pool(t, 3, 60, 3, 1)
	unavailabilities[2].make(ups[0])
	p := mustPicker(t, PolicyWeightedRoundRobin, ups)
	run, longest := 0, 0
	for _, i := range p.(*weighted).seq {
		if i == 0 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if longest <= maxSkips {
		t.Fatalf("longest run %d does not exercise the fallback", longest)
	}
	const n = 40_000
	got := counts(t, p, len(ups), n, 0)
	if got[0] != 0 {
		t.Fatal("picked the unavailable upstream")
	}
	if share := float64(got[1]) / n; share < 0.75*0.95 || share > 0.75*1.05 {
		t.Fatalf("shares %v: upstream 1 got %.3f, want 0.75±5%%", got, share)
	}
}

func TestLeastConn(t *testing.T) {
	t.Parallel()
	ups := pool(t, 3)
	p := mustPicker(t, PolicyLeastConn, ups)
	// All idle: ties rotate round-robin.
	for want := range 6 {
		if got := p.Pick(0); got != want%3 {
			t.Fatalf("idle pick %d = %d, want %d", want, got, want%3)
		}
	}
	ups[0].Acquire()
	ups[1].Acquire()
	ups[1].Acquire()
	for range 10 {
		if got := p.Pick(0); got != 2 {
			t.Fatalf("Pick = %d, want the idle upstream 2", got)
		}
	}
	ups[2].Acquire()
	ups[2].Acquire() // loads 1, 2, 2
	if got := p.Pick(0); got != 0 {
		t.Fatalf("Pick = %d, want the least loaded upstream 0", got)
	}
	if got := p.Pick(Set(0).With(0)); got != 1 && got != 2 {
		t.Fatalf("Pick excluding 0 = %d, want 1 or 2", got)
	}
}

func TestTwoChoices(t *testing.T) {
	t.Parallel()
	const n, picks = 4, 100_000
	ups := pool(t, n)
	p := mustPicker(t, PolicyRandomTwoChoices, ups)
	got := counts(t, p, n, picks, 0)
	for i, c := range got {
		if share := float64(c) / picks; share < 0.25*0.95 || share > 0.25*1.05 {
			t.Fatalf("equal load: upstream %d got share %.4f of %v, want 0.25±5%%", i, share, got)
		}
	}

	// A loaded upstream always loses its pair, so it is never picked while
	// the others are idle.
	ups[0].Acquire()
	if got := counts(t, p, n, 10_000, 0); got[0] != 0 {
		t.Fatalf("loaded upstream picked %d times: %v", got[0], got)
	}

	one := pool(t, 1)
	q := mustPicker(t, PolicyRandomTwoChoices, one)
	if q.Pick(0) != 0 || q.Pick(Set(0).With(0)) != -1 {
		t.Fatal("a pool of one")
	}
}

// TestSkipsUnavailableAndTried checks every policy against every kind of
// unavailability, the tried set, and exhaustion.
func TestSkipsUnavailableAndTried(t *testing.T) {
	t.Parallel()
	for _, policy := range policies {
		for _, un := range unavailabilities {
			t.Run(policy+" skips "+un.name, func(t *testing.T) {
				t.Parallel()
				const n = 4
				ups := pool(t, n, 3, 1, 2, 1)
				p := mustPicker(t, policy, ups)
				un.make(ups[1])
				got := counts(t, p, n, 1000, 0)
				if got[1] != 0 {
					t.Fatalf("picked the unavailable upstream %d times: %v", got[1], got)
				}
				if got[0] == 0 || got[2] == 0 || got[3] == 0 {
					t.Fatalf("an available upstream was never picked: %v", got)
				}

				tried := Set(0).With(0).With(3)
				if got := counts(t, p, n, 100, tried); got[0]+got[1]+got[3] != 0 {
					t.Fatalf("picked tried or unavailable upstreams: %v", got)
				}
				if i := p.Pick(tried.With(2)); i != -1 {
					t.Fatalf("Pick with every available upstream tried = %d, want -1", i)
				}

				for _, u := range ups {
					un.make(u)
				}
				if i := p.Pick(0); i != -1 {
					t.Fatalf("Pick with nothing available = %d, want -1", i)
				}
			})
		}
	}
}

func TestLargePoolTriedSet(t *testing.T) {
	t.Parallel()
	// Indexes of 64 and above cannot be marked tried: they stay pickable.
	const n = 70
	ups := pool(t, n)
	for i := range 64 {
		unavailabilities[2].make(ups[i])
	}
	for _, policy := range policies {
		p := mustPicker(t, policy, ups)
		tried := Set(0)
		for i := 64; i < n; i++ {
			tried = tried.With(i)
		}
		if i := p.Pick(tried); i < 64 {
			t.Errorf("%s: Pick = %d, want an index >= 64 despite the tried set", policy, i)
		}
	}
}

// TestConcurrentPick hammers every policy from 100 goroutines while other
// goroutines flip availability and load (run with -race): every pick must be
// in range, untried, and, since upstream 0 always stays available and
// untried, never -1.
func TestConcurrentPick(t *testing.T) {
	t.Parallel()
	for _, policy := range policies {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			const n, goroutines = 8, 100
			picks := 2000
			if testing.Short() {
				picks = 200
			}
			ups := pool(t, n, 1, 2, 3, 4, 5, 6, 7, 8)
			p := mustPicker(t, policy, ups)
			var bad atomic.Int64
			var stop atomic.Bool
			var flippers sync.WaitGroup
			for f := 1; f < n; f++ {
				flippers.Go(func() {
					for k := 0; !stop.Load(); k++ {
						ups[f].healthy.Store(k%2 == 0)
					}
				})
			}
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					tried := Set(0).With(1 + g%(n-1)) // never upstream 0
					for range picks {
						i := p.Pick(tried)
						if i < 0 || i >= n || tried.Has(i) {
							bad.Add(1)
							continue
						}
						ups[i].Acquire()
						if rand.IntN(8) == 0 {
							ups[i].ReportResult(true)
						}
						ups[i].Release()
					}
				})
			}
			wg.Wait()
			stop.Store(true)
			flippers.Wait()
			if b := bad.Load(); b != 0 {
				t.Fatalf("%d bad picks", b)
			}
			for i, u := range ups {
				if u.Inflight() != 0 {
					t.Fatalf("upstream %d: Inflight = %d after all releases", i, u.Inflight())
				}
			}
		})
	}
}
