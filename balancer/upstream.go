package balancer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/breaker"
)

// Errors returned by NewUpstream, wrapped with the offending value.
var (
	// ErrInvalidURL means an upstream URL is not an absolute http(s) URL
	// with a host and nothing after it.
	ErrInvalidURL = errors.New("balancer: invalid upstream URL")
	// ErrInvalidWeight means an upstream weight is negative.
	ErrInvalidWeight = errors.New("balancer: invalid upstream weight")
	// ErrInvalidOutlier means an OutlierConfig is inconsistent.
	ErrInvalidOutlier = errors.New("balancer: invalid outlier detection")
)

// UpstreamConfig configures NewUpstream.
type UpstreamConfig struct {
	// URL is the upstream's absolute http:// or https:// URL with a host,
	// an optional port, and no path (other than "/"), query, fragment or
	// user info, e.g. "http://127.0.0.1:9001".
	URL string

	// Weight is the upstream's share under weighted_round_robin. If zero,
	// 1. Negative weights are an error.
	Weight int

	// Breaker is the upstream's circuit breaker. If nil, the upstream has
	// none.
	Breaker *breaker.Breaker

	// Outlier configures passive outlier detection. If zero, it is off.
	Outlier OutlierConfig

	// Clock returns monotonic nanoseconds and times ejections. If nil, the
	// process's monotonic clock. Tests inject a clock they advance.
	Clock func() int64
}

// OutlierConfig configures passive outlier detection: ejecting an upstream
// that fails real traffic, as Envoy's consecutive-5xx detector does.
type OutlierConfig struct {
	// ConsecutiveFailures is the number of failed requests in a row that
	// ejects the upstream. If zero, passive detection is off and the other
	// fields are ignored.
	ConsecutiveFailures int

	// Backoff is how long the first ejection lasts; each further
	// consecutive ejection doubles it. It must be > 0 when detection is on.
	Backoff time.Duration

	// MaxBackoff caps the doubled ejection time. If zero, Backoff: every
	// ejection lasts Backoff. Otherwise it must be at least Backoff.
	MaxBackoff time.Duration
}

func (c OutlierConfig) validate() error {
	switch {
	case c.ConsecutiveFailures < 0:
		return fmt.Errorf("%w: ConsecutiveFailures: expected >= 0, got %d", ErrInvalidOutlier, c.ConsecutiveFailures)
	case c.ConsecutiveFailures == 0:
		return nil
	case c.Backoff <= 0:
		return fmt.Errorf("%w: Backoff: expected > 0, got %v", ErrInvalidOutlier, c.Backoff)
	case c.MaxBackoff != 0 && c.MaxBackoff < c.Backoff:
		return fmt.Errorf("%w: MaxBackoff: expected 0 or at least Backoff %v, got %v", ErrInvalidOutlier, c.Backoff, c.MaxBackoff)
	}
	return nil
}

// Upstream is the long-lived state of one upstream of one tenant: active
// health, passive ejection, breaker and in-flight count. It outlives config
// snapshots: the server keeps a registry keyed by tenant and URL and reuses
// the *Upstream across reloads (caddy's hosts.go does the same), so a reload
// neither resets a tripped breaker nor forgets that an upstream is down.
//
// The exported fields are set by NewUpstream and must not be changed
// afterwards. All methods are safe for concurrent use; Available, Acquire,
// Release, Inflight and ReportResult are lock-free and allocation-free, for
// the request path. An Upstream must not be copied (its typed atomics and
// mutex let go vet catch copies).
type Upstream struct {
	// URL is the URL as configured, e.g. "http://127.0.0.1:9001".
	URL string
	// Addr is host:port to dial, the port defaulted from the scheme.
	Addr string
	// TLS reports an https upstream.
	TLS bool
	// Weight is the weighted_round_robin share, at least 1.
	Weight int
	// Breaker is the upstream's circuit breaker, nil if none.
	Breaker *breaker.Breaker

	// healthy is the active health state. Written by the owning Checker
	// (under checkMu) and by Checker.Stop when it gives the upstream up;
	// read by Available and Healthy. Invariant: true while no Checker owns
	// the upstream.
	healthy atomic.Bool

	// ejectedUntil is the clock reading at which a passive ejection ends; 0
	// when never ejected or cleared by a success after the ejection. Written
	// by ReportResult; read by Available and Status.
	ejectedUntil atomic.Int64

	// outages counts the times the upstream was taken out of rotation:
	// marked down by its active checks or ejected by passive detection.
	// Written (Add) by the owning Checker and by ReportResult, on those
	// transitions only; read by Outages. Invariant: never decreases.
	outages atomic.Uint64

	// draining takes the upstream out of rotation by an operator's
	// request (admin drain): pickers skip it, requests already sent to it
	// finish. Written by SetDraining (admin, under no lock: one Store);
	// read by Available and Status. Invariant: only SetDraining writes it.
	draining atomic.Bool

	clock           func() int64
	outlier         OutlierConfig
	maxEjectBackoff time.Duration
	hostHeader      string // the URL's host, the default Host of a check

	// Everything above is read by every pick of every request to the pool
	// and almost never written; inflight is written by every request to
	// this upstream. The padding keeps it on a cache line of its own
	// whatever the allocation's alignment, so the writes do not evict the
	// fields pickers read on every other core.
	_ [cacheLine]byte

	// inflight counts requests between Acquire and Release. Written by
	// every request (Add); read by least_conn, random_two_choices and
	// Status. Invariant: never negative when calls are paired.
	inflight atomic.Int64
	_        [cacheLine - 8]byte

	// passiveFails is the run of failed requests since the last success or
	// ejection. Written by ReportResult (on failures, and on a success
	// only when non-zero); read by ReportResult and Status.
	passiveFails atomic.Int64

	// ejections is the number of consecutive ejections, the exponent of the
	// backoff. Written by ReportResult (incremented on ejection, reset by
	// the first success after an ejection ends); read by ReportResult.
	ejections atomic.Int64

	// checker is the Checker that owns the active health state, nil if
	// none. Written by Checker.Start and Checker.Stop under checkMu; read
	// by the checker goroutines. Invariant: only the owner writes healthy
	// and the check fields.
	checker atomic.Pointer[Checker]

	// checkMu guards the check fields below, for the health goroutine and
	// Status (never taken on the request path).
	checkMu        sync.Mutex
	checkFails     int
	checkSuccesses int
	lastCheck      time.Time
	lastCheckErr   string
}

// cacheLine is the padding unit that keeps hot atomics apart (64 bytes on
// amd64 and most arm64 cores).
const cacheLine = 64

// processStart anchors the default clock: time.Since reads the monotonic
// clock, so a wall-clock step never ends or extends an ejection.
var processStart = time.Now()

func monotonic() int64 { return int64(time.Since(processStart)) }

// NewUpstream validates cfg and returns a healthy, non-ejected Upstream.
// Errors wrap ErrInvalidURL, ErrInvalidWeight or ErrInvalidOutlier.
func NewUpstream(cfg UpstreamConfig) (*Upstream, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w: expected http(s)://host[:port] with no path, query or user info, got %q", ErrInvalidURL, cfg.URL)
	}
	if cfg.Weight < 0 {
		return nil, fmt.Errorf("%w: expected >= 1, got %d", ErrInvalidWeight, cfg.Weight)
	}
	if err := cfg.Outlier.validate(); err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	up := &Upstream{
		URL:             cfg.URL,
		Addr:            net.JoinHostPort(u.Hostname(), port),
		TLS:             u.Scheme == "https",
		Weight:          max(cfg.Weight, 1),
		Breaker:         cfg.Breaker,
		hostHeader:      u.Host,
		outlier:         cfg.Outlier,
		maxEjectBackoff: cfg.Outlier.MaxBackoff,
		clock:           cfg.Clock,
	}
	if up.maxEjectBackoff == 0 {
		up.maxEjectBackoff = cfg.Outlier.Backoff
	}
	if up.clock == nil {
		up.clock = monotonic
	}
	// Healthy until a checker proves otherwise, so a fresh gateway serves
	// at once instead of waiting HealthyThreshold intervals.
	up.healthy.Store(true)
	return up, nil
}

// Available reports whether a picker may choose the upstream: healthy by
// active checks, not ejected by passive detection, not draining, and its
// breaker not open. It never changes any state and costs four atomic loads when the
// upstream is fine (a clock read only while an ejection or an open breaker
// is pending).
func (u *Upstream) Available() bool {
	// The common case (healthy, never ejected, not draining, breaker
	// closed) is four loads and inlines into the pickers; anything else takes the slow path.
	if u.healthy.Load() && u.ejectedUntil.Load() == 0 && !u.draining.Load() && u.Breaker.Available() {
		return true
	}
	return u.availableSlow()
}

func (u *Upstream) availableSlow() bool {
	if !u.healthy.Load() || u.draining.Load() {
		return false
	}
	if until := u.ejectedUntil.Load(); until != 0 && u.clock() < until {
		return false
	}
	return u.Breaker.Available() // nil-safe: no breaker is always available
}

// SetDraining takes the upstream out of rotation (true) or puts it back
// (false). Draining changes nothing else: requests in flight to it finish,
// its health, breaker and ejection state go on being kept.
func (u *Upstream) SetDraining(on bool) { u.draining.Store(on) }

// Draining reports whether SetDraining took the upstream out of rotation.
func (u *Upstream) Draining() bool { return u.draining.Load() }

// Healthy reports the active health-check state: true when no active checks
// are configured, and, with checks, from the start until UnhealthyThreshold
// consecutive checks fail.
func (u *Upstream) Healthy() bool { return u.healthy.Load() }

// Outages returns the number of times the upstream was taken out of
// rotation, by active checks marking it down or by a passive ejection. A
// change tells the holder of a connection pool to the upstream that its
// idle keep-alive connections may lead to a process that is gone: an
// upstream that was down has often been restarted, and the first request
// on a dead pooled connection would fail even though the upstream is fine.
// It is one atomic load.
func (u *Upstream) Outages() uint64 { return u.outages.Load() }

// Acquire counts a request in flight to the upstream; pair it with Release.
func (u *Upstream) Acquire() { u.inflight.Add(1) }

// Release ends a request counted by Acquire.
func (u *Upstream) Release() { u.inflight.Add(-1) }

// Inflight returns the number of requests between Acquire and Release.
func (u *Upstream) Inflight() int64 { return u.inflight.Load() }

// ReportResult feeds passive outlier detection with the outcome of a real
// request: ok=false for connect errors, timeouts and 5xx answers. After
// OutlierConfig.ConsecutiveFailures failures in a row the upstream is
// ejected for Backoff, doubled for each consecutive ejection up to
// MaxBackoff; the doubling resets when a request succeeds after an ejection
// has ended. Outcomes of requests that complete during an ejection (they
// were in flight when it began) do not count toward the next one. With
// detection off it returns at once.
func (u *Upstream) ReportResult(ok bool) {
	threshold := int64(u.outlier.ConsecutiveFailures)
	if threshold == 0 {
		return
	}
	if ok {
		// Load before Store: the success path of a healthy upstream stays
		// read-only on the shared line.
		if u.passiveFails.Load() != 0 {
			u.passiveFails.Store(0)
		}
		if until := u.ejectedUntil.Load(); until != 0 && u.clock() >= until && u.ejectedUntil.CompareAndSwap(until, 0) {
			u.ejections.Store(0)
		}
		return
	}
	now := u.clock()
	if until := u.ejectedUntil.Load(); until != 0 && now < until {
		return
	}
	n := u.passiveFails.Add(1)
	// Exactly one of the goroutines that pushed the run to the threshold
	// wins this CAS and ejects; the others' failures belong to the same
	// ejection.
	if n < threshold || !u.passiveFails.CompareAndSwap(n, 0) {
		return
	}
	k := u.ejections.Add(1)
	backoff := u.outlier.Backoff
	for i := int64(1); i < k && backoff < u.maxEjectBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, u.maxEjectBackoff)
	u.ejectedUntil.Store(now + int64(backoff))
	u.outages.Add(1)
}

// Status is a snapshot of an Upstream for the admin API.
type Status struct {
	// URL is the upstream's URL as configured.
	URL string `json:"url"`
	// Available is what pickers see: Healthy, not Ejected, breaker not
	// open (or due to let probes through).
	Available bool `json:"available"`
	// Healthy is the active health-check state.
	Healthy bool `json:"healthy"`
	// Ejected reports a passive ejection in progress.
	Ejected bool `json:"ejected"`
	// EjectedUntil is when the ejection ends (wall clock, to the
	// millisecond); zero when not ejected.
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
	// Breaker is the breaker's state ("closed", "open", "half_open"), ""
	// if the upstream has none.
	Breaker string `json:"breaker,omitempty"`
	// ConsecutiveFailures and ConsecutiveSuccesses are the active checks'
	// current runs.
	ConsecutiveFailures  int `json:"consecutive_failures"`
	ConsecutiveSuccesses int `json:"consecutive_successes"`
	// PassiveFailures is the current run of failed requests.
	PassiveFailures int `json:"passive_failures"`
	// LastCheck is when the last active check completed; zero if none ran.
	LastCheck time.Time `json:"last_check,omitzero"`
	// LastCheckError is the last active check's error, "" if it passed.
	LastCheckError string `json:"last_check_error,omitempty"`
	// Inflight is the number of requests in flight to the upstream.
	Inflight int64 `json:"inflight"`
	// Weight is the upstream's weighted_round_robin share.
	Weight int `json:"weight"`
	// Draining reports an operator's drain (SetDraining) in force.
	Draining bool `json:"draining"`
}

// Status returns a snapshot of u. The active-check fields are read together
// under the upstream's check mutex, so Healthy agrees with the runs; the
// other fields are read atomically one by one.
func (u *Upstream) Status() Status {
	now := u.clock()
	s := Status{
		URL:             u.URL,
		Available:       u.Available(),
		PassiveFailures: int(u.passiveFails.Load()),
		Inflight:        u.inflight.Load(),
		Weight:          u.Weight,
		Draining:        u.draining.Load(),
	}
	if until := u.ejectedUntil.Load(); until != 0 && now < until {
		s.Ejected = true
		s.EjectedUntil = time.Now().Add(time.Duration(until - now)).Round(time.Millisecond)
	}
	if u.Breaker != nil {
		s.Breaker = u.Breaker.State().String()
	}
	u.checkMu.Lock()
	s.Healthy = u.healthy.Load()
	s.ConsecutiveFailures = u.checkFails
	s.ConsecutiveSuccesses = u.checkSuccesses
	s.LastCheck = u.lastCheck
	s.LastCheckError = u.lastCheckErr
	u.checkMu.Unlock()
	return s
}
