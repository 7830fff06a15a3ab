// Package ratelimit implements the Generic Cell Rate Algorithm (GCRA) in
// memory and on Redis, and a per-key concurrency limit.
//
// GCRA keeps one number per key, the theoretical arrival time (TAT): the
// moment the key's bucket would be empty again. A request at time now is
// allowed when now >= TAT + interval - tolerance, and moves TAT to
// max(TAT, now) + interval. interval is per/rate; tolerance is
// burst*interval, so burst requests pass back to back from an idle key and
// after that one request per interval. There is no window to reset, and a
// key whose TAT is in the past holds no information: it expires.
//
// Several limits on one request are charged only if all allow it:
//
//	lim := ratelimit.NewLocal(ratelimit.LocalConfig{MaxKeys: 1_000_000})
//	checks := []ratelimit.Check{
//		{Limit: ratelimit.NewLimit(100, time.Second, 50), Key: []byte("api\x00per-ip\x0010.0.0.1")},
//		{Limit: ratelimit.NewLimit(1000, time.Minute, 1), Key: []byte("api\x00per-consumer\x00alice")},
//	}
//	if ok, retry := lim.Allow(time.Now().UnixNano(), checks); !ok {
//		// answer 429 with Retry-After: retry
//	}
package ratelimit

import (
	"errors"
	"time"
)

// MaxChecks is the most limits one Allow call may charge together.
const MaxChecks = 16

// ErrTooManyChecks is returned (or, for Local, reported as denied) when a
// call carries more than MaxChecks limits; config validation prevents it.
var ErrTooManyChecks = errors.New("ratelimit: too many limits on one request")

// Limit is one GCRA limit: rate requests per Per, with Burst requests
// allowed back to back from an idle key. Build it with NewLimit.
type Limit struct {
	// Rate and Per are the limit as configured ("100 per 1s"); Burst the
	// bucket depth. They are kept for the RateLimit-Policy header.
	Rate  int64
	Per   time.Duration
	Burst int64

	// interval is Per/Rate in nanoseconds (at least 1); tolerance is
	// Burst*interval.
	interval  int64
	tolerance int64
}

// NewLimit returns the limit "rate per per, bucket depth burst". A rate
// below 1 is taken as 1, a burst below 1 as 1: config validates both.
func NewLimit(rate int64, per time.Duration, burst int64) Limit {
	rate = max(rate, 1)
	burst = max(burst, 1)
	iv := max(int64(per)/rate, 1)
	return Limit{Rate: rate, Per: per, Burst: burst, interval: iv, tolerance: burst * iv}
}

// Share is one of n equal shares of l: rate/n with the same tolerance in
// time, so burst/n requests back to back. Each request moves the TAT by
// n × interval and none is allowed past now + tolerance, so over any
// period T one share allows at most (rate × T + burst)/n, and n instances
// each deciding on their share allow together at most what l allows.
// n below 1 is taken as 1.
func (l Limit) Share(n int64) Limit {
	n = max(n, 1)
	s := l
	s.interval = l.interval * n
	return s
}

// Interval is the spacing of requests at the steady rate, per/rate.
func (l Limit) Interval() time.Duration { return time.Duration(l.interval) }

// Check is one limit charged for one request: Limit and Key are inputs,
// Remaining and Reset are set by Allow.
type Check struct {
	// Limit is the limit to apply.
	Limit Limit
	// Key identifies the bucket. Allow copies it only when it creates a
	// new bucket; the caller may reuse the slice after Allow returns.
	Key []byte

	// Remaining is how many more requests the key may make right now,
	// after this one if it was allowed.
	Remaining int64
	// Reset is how long until the key's bucket is full again (every
	// Burst available).
	Reset time.Duration
}

// decide applies GCRA to one stored TAT (0: none) at now. It returns the
// new TAT if the request is charged, and how long until it would be
// allowed (0 when allowed now).
func (l *Limit) decide(tat, now int64) (newTAT int64, wait int64) {
	if tat < now {
		tat = now
	}
	newTAT = tat + l.interval
	if allowAt := newTAT - l.tolerance; now < allowAt {
		return newTAT, allowAt - now
	}
	return newTAT, 0
}

// report fills c's Remaining and Reset for a key whose TAT is tat at now.
func (c *Check) report(tat, now int64) {
	if tat < now {
		tat = now
	}
	c.Remaining = max((now+c.Limit.tolerance-tat)/c.Limit.interval, 0)
	c.Reset = time.Duration(tat - now)
}
