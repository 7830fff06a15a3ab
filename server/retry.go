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
	statuses     [8]int // upstream statuses retried; 0 ends the list
	backoff      time.Duration
}

func newRetryPolicy(c config.Retries) retryPolicy {
	p := retryPolicy{
		attempts:     c.Attempts,
		connectError: c.Conditions.ConnectError,
		timeout:      c.Conditions.Timeout,
		backoff:      c.Backoff.D(),
	}
	for i, s := range c.Conditions.Statuses {
		if i == len(p.statuses) {
			break
		}
		p.statuses[i] = s
	}
	return p
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
		for _, s := range p.statuses {
			if s == 0 {
				break
			}
			if s == status {
				return true
			}
		}
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
// and a retry storm. Lock-free: each bucket is tagged with the second it
// counts; a writer that finds a stale tag resets the bucket first. Two
// writers racing on a reset can lose a count; the budget is a rate limiter,
// not a ledger, and a count off by one does not matter.
type retryBudget struct {
	ratio   float64
	buckets [budgetBuckets]budgetSlot
}

type budgetSlot struct {
	// sec is the second (unix nanos / 1s) the counts belong to. Written by
	// the first writer of a new second (CAS), read by all.
	sec atomic.Int64
	// requests and retries are added to by every request of that second
	// and summed by withdraw.
	requests atomic.Int64
	retries  atomic.Int64
}

func newRetryBudget(ratio float64) *retryBudget { return &retryBudget{ratio: ratio} }

func (b *retryBudget) slot(now time.Time) *budgetSlot {
	sec := now.UnixNano() / budgetBucket
	s := &b.buckets[sec%budgetBuckets]
	if old := s.sec.Load(); old != sec && s.sec.CompareAndSwap(old, sec) {
		s.requests.Store(0)
		s.retries.Store(0)
	}
	return s
}

// deposit counts a request.
func (b *retryBudget) deposit(now time.Time) { b.slot(now).requests.Add(1) }

// withdraw takes one retry from the budget and reports whether there was one.
func (b *retryBudget) withdraw(now time.Time) bool {
	s := b.slot(now)
	sec := now.UnixNano() / budgetBucket
	var reqs, retries int64
	for i := range b.buckets {
		o := &b.buckets[i]
		if sec-o.sec.Load() < budgetBuckets {
			reqs += o.requests.Load()
			retries += o.retries.Load()
		}
	}
	limit := int64(b.ratio * float64(reqs))
	if limit < budgetMinRetries {
		limit = budgetMinRetries
	}
	if retries >= limit {
		return false
	}
	s.retries.Add(1)
	return true
}
