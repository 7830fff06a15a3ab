package server

import (
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// retryPolicy is a tenant's parsed retries block.
type retryPolicy struct {
	attempts     int // retries after the first try
	connectError bool
	timeout      bool
	statuses     statusSet // upstream statuses retried
	backoff      time.Duration
}

// statusSet is a set of 5xx status codes, one bit per code from 500 to 599:
// config accepts any of them in retries.on, and a fixed-size list would
// silently drop codes past its end.
type statusSet [2]uint64

func (s *statusSet) add(code int) {
	if i := code - 500; i >= 0 && i < 100 {
		s[i/64] |= 1 << (i % 64)
	}
}

func (s *statusSet) has(code int) bool {
	i := code - 500
	return i >= 0 && i < 100 && s[i/64]&(1<<(i%64)) != 0
}

func newRetryPolicy(c config.Retries) retryPolicy {
	p := retryPolicy{
		attempts:     c.Attempts,
		connectError: c.Conditions.ConnectError,
		timeout:      c.Conditions.Timeout,
		backoff:      c.Backoff.D(),
	}
	for _, s := range c.Conditions.Statuses {
		p.statuses.add(s)
	}
	return p
}

// resends reports whether a retry may send a request again after it reached
// an upstream: retries are on and some condition other than a failure to
// connect (nothing sent) is retried; a broken connection counts, being
// retried under connect_error.
func (p *retryPolicy) resends() bool {
	return p.attempts > 0 && (p.connectError || p.timeout || p.statuses != statusSet{})
}

// allows reports whether an attempt that ended in f (with the upstream's
// status for failStatus) may be retried. Nothing was sent on a connect
// failure, so any method may be retried then; once the request may have
// reached an upstream only idempotent methods are, and never a request whose
// body was streamed (it cannot be read twice).
func (p *retryPolicy) allows(f failure, status int, idempotent, streamed bool) bool {
	switch f {
	case failConnect, failConnTimeout, failNoConns:
		return p.connectError
	}
	if !idempotent || streamed {
		return false
	}
	switch f {
	case failTimeout:
		return p.timeout
	case failClosed:
		// A keep-alive connection the upstream closed while we reused it
		// is the classic case; it is retried under connect_error like
		// nginx's "error" condition.
		return p.connectError
	case failStatus:
		return p.statuses.has(status)
	}
	return false
}

// budgetBuckets and budgetBucket make the retry budget's rolling window:
// ten one-second buckets.
const (
	budgetBuckets = 10
	budgetBucket  = int64(time.Second)
	// budgetMinRetries lets a quiet tenant retry at all: with 3 requests in
	// the window a 20% ratio would otherwise allow none (Finagle's
	// RetryBudget has the same floor, minRetriesPerSec).
	budgetMinRetries = 10
)

// retryBudget caps retries to a share of requests over a rolling window, so
// that a failing upstream cannot turn every request into 1+attempts requests
// and a retry storm: over any window, retries <= max(ratio * requests, 10).
//
// Lock-free, and exact within a second: each counter is one word stamped
// with the second it counts (the breaker's window does the same), so a
// writer that finds an older stamp restarts the counter with one CAS and no
// count is lost to a reset; and withdraw takes a retry with a CAS against
// the very count it summed, so concurrent withdrawals cannot overdraw the
// budget. (Withdrawals racing across a second boundary write different
// counters and may overdraw it by one each.)
type retryBudget struct {
	ratio   float64
	buckets [budgetBuckets]budgetSlot
}

// budgetSlot is one second of the window. Each word is stamp<<32 | count,
// the stamp being the low 32 bits of the Unix second counted. requests is
// added to by every request of that second (deposit); retries by every
// retry granted in it (withdraw). Both are summed by withdraw. Invariant: a
// word counts toward a window only if its stamp is one of the window's
// seconds.
type budgetSlot struct {
	requests atomic.Uint64
	retries  atomic.Uint64
}

func newRetryBudget(ratio float64) *retryBudget { return &retryBudget{ratio: ratio} }

// budgetSecond returns the stamp of the second now falls in.
func budgetSecond(now time.Time) uint32 { return uint32(now.UnixNano() / budgetBucket) }

// budgetCount returns the count of w if its stamp is within the window
// ending at sec, else 0.
func budgetCount(w uint64, sec uint32) int64 {
	if age := sec - uint32(w>>32); age < budgetBuckets {
		return int64(uint32(w))
	}
	return 0
}

// deposit counts a request.
func (b *retryBudget) deposit(now time.Time) {
	sec := budgetSecond(now)
	c := &b.buckets[sec%budgetBuckets].requests
	for {
		w := c.Load()
		if uint32(w>>32) == sec {
			c.Add(1)
			return
		}
		if c.CompareAndSwap(w, uint64(sec)<<32|1) {
			return
		}
	}
}

// withdraw takes one retry from the budget and reports whether there was one.
func (b *retryBudget) withdraw(now time.Time) bool {
	sec := budgetSecond(now)
	c := &b.buckets[sec%budgetBuckets].retries
	for {
		cur := c.Load()
		var reqs, retries int64
		for i := range b.buckets {
			reqs += budgetCount(b.buckets[i].requests.Load(), sec)
			if r := &b.buckets[i].retries; r != c {
				retries += budgetCount(r.Load(), sec)
			}
		}
		next := uint64(sec)<<32 | 1
		if uint32(cur>>32) == sec {
			retries += int64(uint32(cur))
			next = cur + 1
		}
		if retries >= max(int64(b.ratio*float64(reqs)), budgetMinRetries) {
			return false
		}
		if c.CompareAndSwap(cur, next) {
			return true
		}
	}
}
