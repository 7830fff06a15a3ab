// Package breaker implements a lock-free circuit breaker for one upstream.
//
// The state machine is gobreaker's (closed → open → half-open → closed,
// with generations so that an outcome reported after a transition is
// ignored), but the whole state lives in one atomic word instead of behind a
// mutex, and Allow returns a value Token instead of a closure, so the request
// path neither locks nor allocates:
//
//	b := breaker.New(breaker.Settings{FailureThreshold: 5, OpenTimeout: 30 * time.Second})
//	tok, ok := b.Allow()
//	if !ok {
//		// answer 503 with Retry-After: b.RetryAfter(), or try another upstream
//	}
//	err := forward()
//	b.Done(tok, err == nil)
package breaker

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

// State is the phase of a Breaker.
type State uint8

// The phases of a Breaker. Their values are stored in the low bits of the
// breaker's state word.
const (
	// StateClosed lets every request through and counts failures.
	StateClosed State = iota
	// StateOpen rejects every request until OpenTimeout has elapsed.
	StateOpen
	// StateHalfOpen lets HalfOpenMaxRequests probes through to decide
	// whether to close again or re-open.
	StateHalfOpen
)

// String returns "closed", "open" or "half_open", the names the admin API
// and the logs use.
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half_open"
	default:
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
}

// MaxHalfOpenRequests is the largest HalfOpenMaxRequests a Breaker accepts:
// the half-open probe and success counters are 20-bit fields of the state
// word.
const MaxHalfOpenRequests = 1<<probeBits - 1

// ErrInvalidSettings is wrapped by the errors Settings.Validate returns.
var ErrInvalidSettings = errors.New("breaker: invalid settings")

// Settings configures a Breaker. The zero value of each field is documented;
// Validate reports the combinations New refuses. Keystone's config package
// applies its defaults before mapping onto Settings, so no default is
// guessed here.
type Settings struct {
	// FailureThreshold is the number of consecutive failures, while closed,
	// that trips the breaker. If zero, consecutive failures never trip it
	// (only FailureRatio can).
	FailureThreshold uint32

	// FailureRatio trips the breaker, while closed, when failures/requests
	// over Window reach it (>=), once at least MinRequests outcomes were
	// reported in Window. It must be in [0, 1]. If zero, the ratio never
	// trips the breaker. A non-zero FailureRatio requires a non-zero Window.
	FailureRatio float64

	// MinRequests is the number of outcomes that must have been reported in
	// Window before FailureRatio applies. If zero, the ratio applies from
	// the first failure (so with FailureRatio 0.5 a single failure trips an
	// idle breaker).
	MinRequests uint32

	// Window is the rolling window FailureRatio is computed over. It is
	// split into 10 buckets, so it slides in steps of Window/10, and must
	// be 0 or at least 10ms (a bucket of at least 1ms). If zero, the ratio
	// is disabled.
	Window time.Duration

	// OpenTimeout is how long the breaker stays open before it lets probes
	// through. It must be > 0. The deadline is kept with millisecond
	// resolution and rounded up, so probes start at most 1ms late and
	// never early.
	OpenTimeout time.Duration

	// HalfOpenMaxRequests is the number of probes let through while
	// half-open, concurrently; further requests are rejected. As in
	// gobreaker, the breaker closes when that many probes have succeeded
	// and re-opens at the first probe failure. A success does not free a
	// probe slot: the successes that close the breaker are those of the
	// admitted probes, so a half-open period admits HalfOpenMaxRequests
	// probes in all. If zero, 1. At most MaxHalfOpenRequests.
	HalfOpenMaxRequests uint32

	// Clock returns monotonic nanoseconds. If nil, the process's monotonic
	// clock is used. Tests inject a clock they advance by hand.
	Clock func() int64

	// OnStateChange, if not nil, is called after every transition, on the
	// goroutine whose Allow or Done made it, once the new state is already
	// visible to other goroutines. It must not block: it runs on the
	// request path. Calls for successive transitions may overlap and
	// arrive out of order; a callback that acts on the current state
	// should read State rather than trust to.
	OnStateChange func(from, to State)
}

// Validate reports whether s is acceptable to New. The returned error wraps
// ErrInvalidSettings and names the offending field.
func (s Settings) Validate() error {
	switch {
	case s.OpenTimeout <= 0:
		return fmt.Errorf("%w: OpenTimeout: expected > 0, got %v", ErrInvalidSettings, s.OpenTimeout)
	case math.IsNaN(s.FailureRatio) || s.FailureRatio < 0 || s.FailureRatio > 1:
		return fmt.Errorf("%w: FailureRatio: expected a ratio in [0, 1], got %v", ErrInvalidSettings, s.FailureRatio)
	case s.Window < 0 || (s.Window > 0 && s.Window < numBuckets*time.Millisecond):
		return fmt.Errorf("%w: Window: expected 0 or at least %v, got %v", ErrInvalidSettings, numBuckets*time.Millisecond, s.Window)
	case s.FailureRatio > 0 && s.Window == 0:
		return fmt.Errorf("%w: FailureRatio %v needs a Window, got 0", ErrInvalidSettings, s.FailureRatio)
	case s.HalfOpenMaxRequests > MaxHalfOpenRequests:
		return fmt.Errorf("%w: HalfOpenMaxRequests: expected at most %d, got %d", ErrInvalidSettings, MaxHalfOpenRequests, s.HalfOpenMaxRequests)
	}
	return nil
}

// Counts is a snapshot of a Breaker's counters, for the admin API.
type Counts struct {
	// Requests is the number of outcomes reported in the rolling Window of
	// the current closed period; 0 when the ratio is disabled or the
	// breaker is not closed.
	Requests uint64
	// Failures is the number of those outcomes that were failures.
	Failures uint64
	// ConsecutiveFailures is the current run of failures while closed.
	ConsecutiveFailures uint32
	// Generation counts transitions since New, modulo 2^22. Every
	// transition starts a new generation; tokens of older generations are
	// ignored by Done.
	Generation uint32
}

// Token is the admission returned by Allow, to be handed back to Done. It is
// a small value: it does not allocate and may be copied freely. The zero
// Token is accepted by Done and ignored.
type Token struct {
	gen  uint32
	kind uint8 // tokenNone, tokenClosed or tokenProbe
}

const (
	tokenNone   uint8 = iota // zero Token, rejected Allow, nil Breaker
	tokenClosed              // admitted while closed: counts toward tripping
	tokenProbe               // admitted while half-open: decides the next state
)

// Breaker is a lock-free circuit breaker. Create one with New and share the
// pointer: all methods are safe for concurrent use, and none of them locks.
// A Breaker must not be copied after first use (its typed atomics let go vet
// catch copies). Methods on a nil *Breaker behave as a breaker that never
// trips, so callers need no nil checks for upstreams without a breaker.
//
// Every Allow that returns true must be matched by exactly one Done or Cancel
// with its token, including when the request panics or is abandoned: a probe
// that is never reported keeps its half-open slot (gobreaker behaves the
// same way).
type Breaker struct {
	// state is the packed state word (see word). Written only by
	// CompareAndSwap in Allow (open → half-open, probe admission) and in
	// Done (trip, probe success, close, re-open); read by every method.
	// Invariant: the generation field changes on, and only on, a change of
	// phase.
	state atomic.Uint64

	// Settings, immutable after New: they share the read-mostly line with
	// state.
	threshold   uint32
	maxProbes   uint64
	ratio       float64
	minRequests uint32
	bucketWidth int64 // ns; 0 disables the ratio
	openTimeout int64 // ns
	epoch       int64 // clock reading at New; deadlines are stored relative to it
	clock       func() int64
	onChange    func(from, to State)

	// Allow while closed only reads state; every Done writes the counters
	// below. The padding keeps those writes from evicting state from the
	// caches of the cores running Allow and Available.
	_ [cacheLine]byte

	// consecutive is gen<<32 | run of failures, the generation being the
	// closed generation the run belongs to. Written by Done (CAS) with
	// closed tokens; read by Done and Counts. Invariant: a count tagged
	// with a generation other than the current one means zero.
	consecutive atomic.Uint64

	// window holds the bucketed outcome counters of the rolling Window.
	// Written by Done (CAS) with closed tokens; read by Done and Counts.
	window window
}

// cacheLine is the padding unit that keeps hot atomics apart (64 bytes on
// amd64 and most arm64 cores).
const cacheLine = 64

// New returns a closed Breaker configured by s. It panics if s.Validate
// reports an error: Keystone's config package validates user input first, so
// invalid Settings here are a programming error (as a non-positive duration
// is for time.NewTicker).
func New(s Settings) *Breaker {
	if err := s.Validate(); err != nil {
		panic(err)
	}
	b := &Breaker{
		threshold:   s.FailureThreshold,
		ratio:       s.FailureRatio,
		minRequests: s.MinRequests,
		openTimeout: int64(s.OpenTimeout),
		maxProbes:   uint64(s.HalfOpenMaxRequests),
		clock:       s.Clock,
		onChange:    s.OnStateChange,
	}
	if b.maxProbes == 0 {
		b.maxProbes = 1
	}
	if s.FailureRatio > 0 {
		b.bucketWidth = int64(s.Window) / numBuckets
	}
	if b.clock == nil {
		b.clock = monotonic
	}
	b.epoch = b.clock()
	b.state.Store(uint64(pack(StateClosed, 0, 0))) // window starts at bucket 0 of the epoch
	return b
}

// processStart anchors the default clock; time.Since reads the monotonic
// clock, so wall-clock steps never trip or close a breaker.
var processStart = time.Now()

func monotonic() int64 { return int64(time.Since(processStart)) }

// Allow reports whether a request may proceed and returns the token to pass
// to Done when it completes. It never blocks and does not allocate. While
// closed it is a single atomic load; the first Allow after OpenTimeout moves
// an open breaker to half-open (exactly one caller wins that CAS and takes
// the first probe slot).
func (b *Breaker) Allow() (Token, bool) {
	if b == nil {
		return Token{}, true
	}
	for {
		s := word(b.state.Load())
		switch s.phase() {
		case StateClosed:
			return Token{gen: s.gen(), kind: tokenClosed}, true
		case StateOpen:
			if b.sinceEpoch()/int64(time.Millisecond) < int64(s.payload()) {
				return Token{}, false
			}
			// The transition happens lazily here rather than on a timer:
			// no goroutine per breaker, and an idle upstream costs nothing.
			next := pack(StateHalfOpen, s.gen()+1, 1) // admitted=1: the winner is the first probe
			if b.state.CompareAndSwap(uint64(s), uint64(next)) {
				b.notify(StateOpen, StateHalfOpen)
				return Token{gen: next.gen(), kind: tokenProbe}, true
			}
		case StateHalfOpen:
			if s.admitted() >= b.maxProbes {
				return Token{}, false
			}
			if b.state.CompareAndSwap(uint64(s), uint64(s+admittedOne)) {
				return Token{gen: s.gen(), kind: tokenProbe}, true
			}
		}
		// Lost a CAS to another Allow or Done: re-read and decide again.
	}
}

// Done reports the outcome of a request admitted by Allow. An outcome whose
// token belongs to an older generation (the breaker tripped, re-opened or
// closed since Allow) is ignored, as in gobreaker, so a slow request that
// started before a transition cannot trip or close the breaker afterwards.
func (b *Breaker) Done(t Token, success bool) {
	if b == nil {
		return
	}
	switch t.kind {
	case tokenClosed:
		b.doneClosed(t.gen, success)
	case tokenProbe:
		b.doneProbe(t.gen, success)
	}
}

// Cancel hands back the admission of a request that Allow let through but
// that says nothing about the upstream: it was never sent (the caller's own
// connection pool was exhausted) or failed through no fault of the upstream
// (the client's body was too large). It is the alternative to Done, not an
// addition: every admitted token gets exactly one of the two (a token
// reported twice may free, or count for, another request's slot).
//
// A closed token carries nothing to hand back, so Cancel ignores it, and
// the request counts neither as a success nor as a failure. A probe token
// frees its half-open slot for another probe; without that, a probe that
// never reached the upstream would hold its slot for the rest of the
// half-open period, which only probe outcomes end, and the breaker would
// reject every request from then on. Stale tokens are ignored, as in Done.
func (b *Breaker) Cancel(t Token) {
	if b == nil || t.kind != tokenProbe {
		return
	}
	for {
		s := word(b.state.Load())
		// Every reported probe succeeded (a failure re-opens), so the
		// probes in flight are admitted - successes; this one is among
		// them unless the token was already handed back.
		if s.gen() != t.gen || s.phase() != StateHalfOpen || s.admitted() <= s.successes() {
			return
		}
		if b.state.CompareAndSwap(uint64(s), uint64(s-admittedOne)) {
			return
		}
	}
}

func (b *Breaker) doneClosed(gen uint32, success bool) {
	s := word(b.state.Load())
	if s.gen() != gen {
		return // stale
	}
	if success {
		b.resetConsecutive(gen)
		if b.bucketWidth != 0 {
			b.record(&b.window.succ, gen, b.bucket(b.sinceEpoch()))
		}
		return
	}
	n := b.incConsecutive(gen)
	if n == 0 {
		return // went stale while counting
	}
	trip := b.threshold != 0 && n >= b.threshold
	if b.bucketWidth != 0 {
		idx := b.bucket(b.sinceEpoch())
		b.record(&b.window.fail, gen, idx)
		if !trip {
			req, fail := b.window.sum(gen, idx, int64(s.payload()))
			trip = req != 0 && req >= uint64(b.minRequests) && float64(fail) >= b.ratio*float64(req)
		}
	}
	if !trip {
		return
	}
	// The closed word never changes within a generation, so this CAS fails
	// only when another Done already tripped the breaker: exactly one
	// winner, one OnStateChange.
	if b.state.CompareAndSwap(uint64(s), uint64(b.openWord(gen))) {
		b.notify(StateClosed, StateOpen)
	}
}

func (b *Breaker) doneProbe(gen uint32, success bool) {
	for {
		s := word(b.state.Load())
		if s.gen() != gen || s.phase() != StateHalfOpen {
			return // stale
		}
		var next word
		switch {
		case !success:
			next = b.openWord(gen)
		case s.successes()+1 >= b.maxProbes:
			// gobreaker closes after MaxRequests consecutive successes;
			// since any failure re-opens, that is every admitted probe.
			next = pack(StateClosed, gen+1, b.windowStart())
		default:
			next = s + successOne
		}
		if b.state.CompareAndSwap(uint64(s), uint64(next)) {
			if next.phase() != StateHalfOpen {
				b.notify(StateHalfOpen, next.phase())
			}
			return
		}
	}
}

// openWord returns the state word of the open generation following gen,
// with its deadline: now + OpenTimeout in milliseconds since the epoch,
// rounded up.
func (b *Breaker) openWord(gen uint32) word {
	deadline := (b.sinceEpoch() + b.openTimeout + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	return pack(StateOpen, gen+1, uint64(min(deadline, payloadMask)))
}

// windowStart returns the payload of a new closed word: the bucket the new
// closed period starts in, so buckets of earlier periods are never summed
// (see window.sum). 0 when the ratio is disabled.
func (b *Breaker) windowStart() uint64 {
	if b.bucketWidth == 0 {
		return 0
	}
	return min(uint64(b.bucket(b.sinceEpoch())), payloadMask)
}

// resetConsecutive ends the current run of failures of gen. It only writes
// when there is a run to end, so the common success path is read-only on
// the shared line.
func (b *Breaker) resetConsecutive(gen uint32) {
	for {
		c := b.consecutive.Load()
		if uint32(c>>32) != gen || uint32(c) == 0 {
			return // no run in this generation (an older tag means zero)
		}
		if b.consecutive.CompareAndSwap(c, uint64(gen)<<32) {
			return
		}
	}
}

// incConsecutive extends the run of failures of gen and returns its length,
// or 0 if gen is no longer current.
func (b *Breaker) incConsecutive(gen uint32) uint32 {
	for {
		c := b.consecutive.Load()
		var n uint32
		if uint32(c>>32) == gen {
			n = uint32(c)
			if n < math.MaxUint32 {
				n++
			}
		} else {
			// The counter belongs to another generation. Recycle it only
			// if gen is still current, checked after loading c: had a
			// newer generation written it, the state (loaded later) would
			// already show that newer generation.
			if word(b.state.Load()).gen() != gen {
				return 0
			}
			n = 1
		}
		if b.consecutive.CompareAndSwap(c, uint64(gen)<<32|uint64(n)) {
			return n
		}
	}
}

func (b *Breaker) notify(from, to State) {
	if b.onChange != nil {
		b.onChange(from, to)
	}
}

// sinceEpoch returns nanoseconds since New, never negative.
func (b *Breaker) sinceEpoch() int64 {
	return max(b.clock()-b.epoch, 0)
}

// bucket returns the absolute window bucket number of a time since epoch.
func (b *Breaker) bucket(since int64) int64 {
	return since / b.bucketWidth
}

// State returns the current phase. The open → half-open transition is lazy:
// State reports StateOpen until the first Allow after OpenTimeout, while
// Available and RetryAfter already say probes may go.
func (b *Breaker) State() State {
	if b == nil {
		return StateClosed
	}
	return word(b.state.Load()).phase()
}

// Available reports whether Allow could let a request through: false only
// while open and OpenTimeout has not elapsed. It never changes the state,
// so pickers call it freely; it is one atomic load unless open. A half-open
// breaker whose probe slots are all taken is still Available: Allow then
// rejects, and the caller moves on to another upstream.
func (b *Breaker) Available() bool {
	// Split so the closed case inlines into pickers' loops.
	return b == nil || word(b.state.Load()).phase() != StateOpen || b.probesDue()
}

// probesDue is Available's slow path: the breaker was open when last read.
func (b *Breaker) probesDue() bool {
	s := word(b.state.Load())
	return s.phase() != StateOpen || b.sinceEpoch()/int64(time.Millisecond) >= int64(s.payload())
}

// RetryAfter returns how long until an open breaker lets probes through, for
// a Retry-After header; 0 if it is not open or the time has come.
func (b *Breaker) RetryAfter() time.Duration {
	if b == nil {
		return 0
	}
	s := word(b.state.Load())
	if s.phase() != StateOpen {
		return 0
	}
	return time.Duration(max(int64(s.payload())*int64(time.Millisecond)-b.sinceEpoch(), 0))
}

// Counts returns a snapshot of the counters of the current generation. The
// fields are read one by one, so under load they may be mutually
// inconsistent by the few outcomes reported meanwhile.
func (b *Breaker) Counts() Counts {
	if b == nil {
		return Counts{}
	}
	s := word(b.state.Load())
	c := Counts{Generation: s.gen()}
	if s.phase() != StateClosed {
		return c
	}
	if cf := b.consecutive.Load(); uint32(cf>>32) == c.Generation {
		c.ConsecutiveFailures = uint32(cf)
	}
	if b.bucketWidth != 0 {
		c.Requests, c.Failures = b.window.sum(c.Generation, b.bucket(b.sinceEpoch()), int64(s.payload()))
	}
	return c
}
