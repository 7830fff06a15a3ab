package breaker

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is an injected monotonic clock that tests advance by hand. It
// starts far from zero so nothing depends on the epoch being 0.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(1_000_000_000_123) // not millisecond-aligned on purpose
	return c
}

func (c *fakeClock) Now() int64              { return c.ns.Load() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// transition is one OnStateChange call.
type transition struct{ from, to State }

func (t transition) String() string { return t.from.String() + "→" + t.to.String() }

func TestStateString(t *testing.T) {
	t.Parallel()
	for s, want := range map[State]string{StateClosed: "closed", StateOpen: "open", StateHalfOpen: "half_open", 7: "state(7)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", s, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := Settings{OpenTimeout: time.Second}
	tests := []struct {
		name string
		edit func(*Settings)
		ok   bool
	}{
		{"minimal settings are valid", func(*Settings) {}, true},
		{"a ratio with a window is valid", func(s *Settings) { s.FailureRatio, s.Window = 0.5, 10*time.Second }, true},
		{"a window without a ratio is valid", func(s *Settings) { s.Window = time.Second }, true},
		{"zero open timeout is refused", func(s *Settings) { s.OpenTimeout = 0 }, false},
		{"negative open timeout is refused", func(s *Settings) { s.OpenTimeout = -time.Second }, false},
		{"ratio above one is refused", func(s *Settings) { s.FailureRatio, s.Window = 1.5, time.Second }, false},
		{"negative ratio is refused", func(s *Settings) { s.FailureRatio, s.Window = -0.1, time.Second }, false},
		{"NaN ratio is refused", func(s *Settings) { s.FailureRatio, s.Window = math.NaN(), time.Second }, false},
		{"ratio without window is refused", func(s *Settings) { s.FailureRatio = 0.5 }, false},
		{"window below 10ms is refused", func(s *Settings) { s.FailureRatio, s.Window = 0.5, 9*time.Millisecond }, false},
		{"negative window is refused", func(s *Settings) { s.Window = -time.Second }, false},
		{"too many half-open probes are refused", func(s *Settings) { s.HalfOpenMaxRequests = MaxHalfOpenRequests + 1 }, false},
		{"the most half-open probes are valid", func(s *Settings) { s.HalfOpenMaxRequests = MaxHalfOpenRequests }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid
			tt.edit(&s)
			err := s.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidSettings) {
				t.Fatalf("Validate() = %v, does not wrap ErrInvalidSettings", err)
			}
		})
	}
}

func TestNewPanicsOnInvalidSettings(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("New(Settings{}) did not panic")
		}
	}()
	New(Settings{})
}

func TestNilBreakerNeverTrips(t *testing.T) {
	t.Parallel()
	var b *Breaker
	tok, ok := b.Allow()
	if !ok {
		t.Fatal("nil Breaker rejected a request")
	}
	b.Done(tok, false)
	if b.State() != StateClosed || !b.Available() || b.RetryAfter() != 0 || b.Counts() != (Counts{}) {
		t.Fatal("nil Breaker is not a closed breaker")
	}
}

// TestTransitions walks every transition of the state machine in order with
// an injected clock, checking the observable state after each step.
func TestTransitions(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	var got []transition
	b := New(Settings{
		FailureThreshold:    3,
		OpenTimeout:         5 * time.Second,
		HalfOpenMaxRequests: 2,
		Clock:               clk.Now,
		OnStateChange:       func(from, to State) { got = append(got, transition{from, to}) },
	})
	want := func(step string, state State, gen uint32, available bool) {
		t.Helper()
		if s := b.State(); s != state {
			t.Fatalf("%s: State() = %v, want %v", step, s, state)
		}
		if g := b.Counts().Generation; g != gen {
			t.Fatalf("%s: Generation = %d, want %d", step, g, gen)
		}
		if a := b.Available(); a != available {
			t.Fatalf("%s: Available() = %v, want %v", step, a, available)
		}
	}
	allow := func(step string, wantOK bool) Token {
		t.Helper()
		tok, ok := b.Allow()
		if ok != wantOK {
			t.Fatalf("%s: Allow() ok = %v, want %v", step, ok, wantOK)
		}
		return tok
	}

	want("new", StateClosed, 0, true)

	// Closed: failures below the threshold, broken by a success, do not trip.
	for range 2 {
		b.Done(allow("closed", true), false)
	}
	if c := b.Counts().ConsecutiveFailures; c != 2 {
		t.Fatalf("ConsecutiveFailures = %d, want 2", c)
	}
	b.Done(allow("closed", true), true)
	if c := b.Counts().ConsecutiveFailures; c != 0 {
		t.Fatalf("after a success ConsecutiveFailures = %d, want 0", c)
	}
	for range 2 {
		b.Done(allow("closed", true), false)
	}
	want("two failures after a success", StateClosed, 0, true)

	// closed → open on the third consecutive failure.
	inflight := allow("closed", true) // a slow request admitted before the trip
	b.Done(allow("closed", true), false)
	want("tripped", StateOpen, 1, false)
	if r := b.RetryAfter(); r != 5*time.Second {
		t.Fatalf("RetryAfter() = %v, want 5s", r)
	}
	b.Done(inflight, true) // stale: must not count or close
	want("stale success while open", StateOpen, 1, false)

	// Open: rejects until OpenTimeout.
	allow("open", false)
	clk.Advance(5*time.Second - time.Millisecond)
	allow("open, 1ms before the deadline", false)
	if r := b.RetryAfter(); r <= 0 || r > time.Millisecond {
		t.Fatalf("RetryAfter() 1ms before the deadline = %v", r)
	}
	clk.Advance(time.Millisecond)
	want("open at the deadline: lazily half-open", StateOpen, 1, true)
	if r := b.RetryAfter(); r != 0 {
		t.Fatalf("RetryAfter() at the deadline = %v, want 0", r)
	}

	// open → half-open on the first Allow; two probes, the third rejected.
	p1 := allow("first probe", true)
	want("half-open", StateHalfOpen, 2, true)
	p2 := allow("second probe", true)
	allow("third request while half-open", false)

	// half-open → open on a probe failure; the other probe's outcome is stale.
	b.Done(p1, false)
	want("probe failed", StateOpen, 3, false)
	b.Done(p2, true)
	want("stale probe success", StateOpen, 3, false)
	if r := b.RetryAfter(); r != 5*time.Second {
		t.Fatalf("RetryAfter() after re-open = %v, want a fresh 5s", r)
	}

	// half-open → closed after HalfOpenMaxRequests successes.
	clk.Advance(5 * time.Second)
	p1 = allow("probe", true)
	p2 = allow("probe", true)
	b.Done(p1, true)
	want("one of two probes succeeded", StateHalfOpen, 4, true)
	allow("probe slots are not refilled by a success", false)
	b.Done(p2, true)
	want("both probes succeeded", StateClosed, 5, true)
	if c := b.Counts(); c.ConsecutiveFailures != 0 || c.Requests != 0 {
		t.Fatalf("counts not reset on close: %+v", c)
	}

	// Closed again: counting starts from zero.
	for range 2 {
		b.Done(allow("closed again", true), false)
	}
	want("two failures in the new closed period", StateClosed, 5, true)

	wantTransitions := []transition{
		{StateClosed, StateOpen}, {StateOpen, StateHalfOpen}, {StateHalfOpen, StateOpen},
		{StateOpen, StateHalfOpen}, {StateHalfOpen, StateClosed},
	}
	if fmt.Sprint(got) != fmt.Sprint(wantTransitions) {
		t.Fatalf("OnStateChange calls = %v, want %v", got, wantTransitions)
	}
}

// TestStaleDoneIgnored checks that outcomes of tokens from an older
// generation change nothing, whatever the phase they arrive in.
func TestStaleDoneIgnored(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := New(Settings{
		FailureThreshold: 2, FailureRatio: 0.5, Window: time.Second,
		OpenTimeout: time.Second, Clock: clk.Now,
	})
	old := make([]Token, 10)
	for i := range old {
		old[i], _ = b.Allow()
	}
	b.Done(old[0], false)
	b.Done(old[1], false) // trips: generation 1
	if b.State() != StateOpen {
		t.Fatal("breaker did not trip")
	}
	for _, tok := range old[2:5] {
		b.Done(tok, false) // stale while open
	}
	clk.Advance(time.Second)
	probe, _ := b.Allow()
	for _, tok := range old[5:8] {
		b.Done(tok, false) // stale while half-open: must not re-open
	}
	if b.State() != StateHalfOpen {
		t.Fatalf("stale failure re-opened a half-open breaker: %v", b.State())
	}
	b.Done(probe, true)
	if b.State() != StateClosed {
		t.Fatalf("probe success did not close: %v", b.State())
	}
	b.Done(old[8], false) // stale in a new closed period
	b.Done(old[9], false)
	b.Done(probe, false) // a probe token reported twice is stale too
	if c := b.Counts(); c != (Counts{Generation: 3}) {
		t.Fatalf("stale outcomes counted in the new closed period: %+v", c)
	}
	b.Done(Token{}, false) // the zero token is ignored
	if c := b.Counts(); c != (Counts{Generation: 3}) {
		t.Fatalf("zero token counted: %+v", c)
	}
}

// TestRatio covers the rolling window: the MinRequests and ratio
// boundaries, bucket rotation and expiry, and reset on a new closed period.
func TestRatio(t *testing.T) {
	t.Parallel()
	// An event is an outcome reported after advancing the clock.
	type event struct {
		after time.Duration
		ok    bool
	}
	ok := func(after time.Duration) event { return event{after, true} }
	fail := func(after time.Duration) event { return event{after, false} }
	repeat := func(n int, e event) []event {
		out := make([]event, n)
		for i := range out {
			out[i] = e
			if i > 0 {
				out[i].after = 0
			}
		}
		return out
	}
	cat := func(parts ...[]event) []event {
		var out []event
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name         string
		ratio        float64
		min          uint32
		events       []event
		wantOpen     bool
		wantRequests uint64 // checked when still closed
		wantFailures uint64
	}{
		{
			name: "below MinRequests the ratio does not apply", ratio: 0.5, min: 4,
			events: repeat(3, fail(0)), wantRequests: 3, wantFailures: 3,
		},
		{
			name: "reaching MinRequests with the ratio met trips", ratio: 0.5, min: 4,
			events: cat([]event{ok(0)}, repeat(3, fail(0))), wantOpen: true,
		},
		{
			name: "a ratio exactly at the threshold trips", ratio: 0.5, min: 4,
			events: []event{ok(0), ok(0), fail(0), fail(0)}, wantOpen: true,
		},
		{
			name: "a ratio just below the threshold does not trip", ratio: 0.5, min: 4,
			events: []event{ok(0), ok(0), ok(0), fail(0), fail(0)}, wantRequests: 5, wantFailures: 2,
		},
		{
			name: "successes alone never evaluate the ratio", ratio: 0.5, min: 1,
			events: repeat(10, ok(0)), wantRequests: 10,
		},
		{
			name: "MinRequests zero trips on the first failure", ratio: 1, min: 0,
			events: []event{fail(0)}, wantOpen: true,
		},
		{
			name: "outcomes spread over buckets still add up", ratio: 0.5, min: 4,
			events: []event{ok(0), fail(100 * time.Millisecond), ok(300 * time.Millisecond), fail(400 * time.Millisecond)}, wantOpen: true,
		},
		{
			name: "failures older than the window have expired", ratio: 0.5, min: 4,
			events:       cat(repeat(3, fail(0)), []event{ok(time.Second), ok(0), ok(0), fail(0)}),
			wantRequests: 4, wantFailures: 1,
		},
		{
			name: "the window keeps the last ten buckets", ratio: 0.5, min: 4,
			// 3 failures in bucket 0; 900ms later they are in the oldest
			// bucket still summed, so one more failure makes 4/4.
			events:   cat(repeat(3, fail(0)), []event{fail(900 * time.Millisecond)}),
			wantOpen: true,
		},
		{
			name: "a recycled slot forgets its previous lap", ratio: 0.5, min: 4,
			// Bucket 0 and bucket 10 share a slot: the second failure lands
			// in bucket 10, recycling the slot; bucket 0's three outcomes
			// must not be added to it.
			events:       []event{fail(0), ok(0), ok(0), fail(time.Second)},
			wantRequests: 1, wantFailures: 1,
		},
		{
			name: "a long idle period expires everything", ratio: 0.5, min: 6,
			events:       cat(repeat(5, fail(0)), []event{fail(time.Hour)}),
			wantRequests: 1, wantFailures: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			clk.ns.Store(0) // bucket boundaries at whole 100ms steps
			b := New(Settings{FailureRatio: tt.ratio, MinRequests: tt.min, Window: time.Second, OpenTimeout: time.Second, Clock: clk.Now})
			for i, e := range tt.events {
				if b.State() != StateClosed {
					t.Fatalf("tripped early, before event %d", i)
				}
				clk.Advance(e.after)
				tok, _ := b.Allow()
				b.Done(tok, e.ok)
			}
			if open := b.State() == StateOpen; open != tt.wantOpen {
				t.Fatalf("open = %v, want %v (counts %+v)", open, tt.wantOpen, b.Counts())
			}
			if c := b.Counts(); !tt.wantOpen && (c.Requests != tt.wantRequests || c.Failures != tt.wantFailures) {
				t.Fatalf("Counts() = %+v, want %d requests, %d failures", c, tt.wantRequests, tt.wantFailures)
			}
		})
	}
}

// TestRatioWindowResetsOnClose checks that a new closed period starts with
// an empty window even inside the bucket where the previous period tripped.
func TestRatioWindowResetsOnClose(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	clk.ns.Store(0)
	b := New(Settings{FailureRatio: 0.5, MinRequests: 4, Window: 10 * time.Second, OpenTimeout: 10 * time.Millisecond, Clock: clk.Now})
	for range 4 {
		tok, _ := b.Allow()
		b.Done(tok, false)
	}
	if b.State() != StateOpen {
		t.Fatal("did not trip")
	}
	clk.Advance(10 * time.Millisecond) // still in the same 1s bucket
	tok, _ := b.Allow()
	b.Done(tok, true)
	if b.State() != StateClosed {
		t.Fatal("did not close")
	}
	tok, _ = b.Allow()
	b.Done(tok, false)
	if c := b.Counts(); c.Requests != 1 || c.Failures != 1 || b.State() != StateClosed {
		t.Fatalf("old window leaked into the new closed period: %+v, %v", c, b.State())
	}
}

func TestSaturatingBucket(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := New(Settings{FailureRatio: 1, Window: time.Second, OpenTimeout: time.Second, Clock: clk.Now})
	idx := b.bucket(b.sinceEpoch())
	b.window.succ[idx%numBuckets].Store(stamp(0, idx)<<countBits | countMask)
	tok, _ := b.Allow()
	b.Done(tok, true)
	if c := b.Counts(); c.Requests != countMask {
		t.Fatalf("Requests = %d, want saturated %d", c.Requests, countMask)
	}
}

// model is a straightforward, single-threaded restatement of the state
// machine (gobreaker's, with a bucketed window) that the lock-free Breaker
// must agree with step by step.
type model struct {
	s                  Settings
	phase              State
	gen                uint32
	consecutive        uint32
	deadline           int64 // ms since epoch, when open
	admitted, succeded uint64
	start              int64 // bucket the closed period started in
	outcomes           []modelOutcome
}

type modelOutcome struct {
	bucket int64
	ok     bool
}

func (m *model) bucketWidth() int64 { return int64(m.s.Window) / numBuckets }

func (m *model) maxProbes() uint64 { return uint64(max(m.s.HalfOpenMaxRequests, 1)) }

func (m *model) to(phase State, now int64) {
	m.phase, m.gen = phase, m.gen+1
	m.consecutive, m.admitted, m.succeded, m.outcomes = 0, 0, 0, nil
	switch phase {
	case StateOpen:
		m.deadline = (now + int64(m.s.OpenTimeout) + 999_999) / 1_000_000
	case StateClosed:
		if m.bucketWidth() > 0 {
			m.start = now / m.bucketWidth()
		}
	}
}

func (m *model) allow(now int64) (Token, bool) {
	switch m.phase {
	case StateClosed:
		return Token{gen: m.gen, kind: tokenClosed}, true
	case StateOpen:
		if now/1_000_000 < m.deadline {
			return Token{}, false
		}
		m.to(StateHalfOpen, now)
		fallthrough
	default:
		if m.admitted >= m.maxProbes() {
			return Token{}, false
		}
		m.admitted++
		return Token{gen: m.gen, kind: tokenProbe}, true
	}
}

func (m *model) window(now int64) (req, fail uint64) {
	if m.s.FailureRatio == 0 {
		return 0, 0
	}
	idx := now / m.bucketWidth()
	for _, o := range m.outcomes {
		if o.bucket > idx-numBuckets && o.bucket >= m.start {
			req++
			if !o.ok {
				fail++
			}
		}
	}
	return req, fail
}

func (m *model) done(t Token, ok bool, now int64) {
	if t.kind == tokenNone || t.gen != m.gen {
		return
	}
	if m.phase == StateHalfOpen {
		switch {
		case !ok:
			m.to(StateOpen, now)
		case m.succeded+1 >= m.maxProbes():
			m.to(StateClosed, now)
		default:
			m.succeded++
		}
		return
	}
	if m.s.FailureRatio > 0 {
		m.outcomes = append(m.outcomes, modelOutcome{now / m.bucketWidth(), ok})
	}
	if ok {
		m.consecutive = 0
		return
	}
	m.consecutive++
	req, fail := m.window(now)
	if (m.s.FailureThreshold > 0 && m.consecutive >= m.s.FailureThreshold) ||
		(m.s.FailureRatio > 0 && req > 0 && req >= uint64(m.s.MinRequests) && float64(fail) >= m.s.FailureRatio*float64(req)) {
		m.to(StateOpen, now)
	}
}

// TestAgainstModel drives the Breaker and the model with the same random
// sequences of Allow, Done and clock steps and compares everything
// observable after every step.
func TestAgainstModel(t *testing.T) {
	t.Parallel()
	configs := []Settings{
		{FailureThreshold: 3, OpenTimeout: 50 * time.Millisecond},
		{FailureThreshold: 1, OpenTimeout: 7 * time.Millisecond, HalfOpenMaxRequests: 3},
		{FailureRatio: 0.5, MinRequests: 5, Window: 100 * time.Millisecond, OpenTimeout: 30 * time.Millisecond, HalfOpenMaxRequests: 2},
		{FailureThreshold: 4, FailureRatio: 0.3, MinRequests: 10, Window: time.Second, OpenTimeout: 100 * time.Millisecond},
		{FailureRatio: 1, Window: 10 * time.Millisecond, OpenTimeout: time.Millisecond},
	}
	for ci, s := range configs {
		t.Run(fmt.Sprintf("config %d", ci), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(ci), 42))
			var now int64
			s.Clock = func() int64 { return now }
			b := New(s)
			m := &model{s: s}
			var tokens []Token
			for step := range 20_000 {
				switch r := rng.IntN(10); {
				case r < 4:
					got, gotOK := b.Allow()
					want, wantOK := m.allow(now)
					if got != want || gotOK != wantOK {
						t.Fatalf("step %d: Allow() = %+v %v, model %+v %v", step, got, gotOK, want, wantOK)
					}
					if gotOK {
						tokens = append(tokens, got)
					}
				case r < 8 && len(tokens) > 0:
					i := rng.IntN(len(tokens))
					tok := tokens[i]
					tokens[i] = tokens[len(tokens)-1]
					tokens = tokens[:len(tokens)-1]
					ok := rng.IntN(3) == 0 // mostly failures, so it trips often
					b.Done(tok, ok)
					m.done(tok, ok, now)
				default:
					now += rng.Int64N(int64(20 * time.Millisecond))
				}
				req, fail := m.window(now)
				want := Counts{Generation: m.gen}
				if m.phase == StateClosed {
					want.ConsecutiveFailures, want.Requests, want.Failures = m.consecutive, req, fail
				}
				if got := b.Counts(); got != want || b.State() != m.phase {
					t.Fatalf("step %d: %v %+v, model %v %+v", step, b.State(), got, m.phase, want)
				}
				wantAvail := m.phase != StateOpen || now/1_000_000 >= m.deadline
				if b.Available() != wantAvail {
					t.Fatalf("step %d: Available() = %v, model %v", step, !wantAvail, wantAvail)
				}
			}
			if m.gen < 20 {
				t.Fatalf("only %d transitions: the sequence does not exercise the machine", m.gen)
			}
		})
	}
}

// TestCancelFreesAProbeSlot checks that a cancelled probe gives its
// half-open slot to the next request and counts neither way, and that
// Cancel ignores closed, stale and zero tokens.
func TestCancelFreesAProbeSlot(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	b := New(Settings{FailureThreshold: 2, OpenTimeout: time.Second, HalfOpenMaxRequests: 2, Clock: clk.Now})

	// Closed: a cancelled request is neither a success nor a failure.
	tok, _ := b.Allow()
	b.Done(tok, false)
	tok, _ = b.Allow()
	b.Cancel(tok)
	if c := b.Counts().ConsecutiveFailures; c != 1 {
		t.Fatalf("a cancelled closed request changed the run of failures to %d, want 1", c)
	}
	b.Cancel(Token{}) // the zero token
	tok, _ = b.Allow()
	b.Done(tok, false)
	if s := b.State(); s != StateOpen {
		t.Fatalf("two failures around a cancel: %v, want open", s)
	}

	clk.Advance(time.Second)
	p1, ok1 := b.Allow()
	p2, ok2 := b.Allow()
	if !ok1 || !ok2 {
		t.Fatal("half-open did not admit two probes")
	}
	if _, ok := b.Allow(); ok {
		t.Fatal("a third probe was admitted")
	}
	b.Cancel(p2)
	p3, ok := b.Allow()
	if !ok {
		t.Fatal("a cancelled probe did not free its slot")
	}
	if _, ok := b.Allow(); ok {
		t.Fatal("a cancel freed more than one slot")
	}
	b.Done(p1, true)
	if s := b.State(); s != StateHalfOpen {
		t.Fatalf("one success of two: %v, want half_open", s)
	}
	b.Done(p3, true)
	if s := b.State(); s != StateClosed {
		t.Fatalf("two successes: %v, want closed", s)
	}
	b.Cancel(p3) // stale: the breaker has closed since
	if s := b.State(); s != StateClosed {
		t.Fatalf("a stale cancel changed the state to %v", s)
	}
}
