// Package balancer keeps the long-lived state of each upstream (active
// health, passive ejection, circuit breaker, requests in flight) and picks
// an available upstream for each request without locks or allocation.
//
// The server builds one *Upstream per tenant and URL, keeps it in a registry
// across reloads, and builds a Picker over the tenant's upstreams for each
// config snapshot:
//
//	p, err := balancer.New(balancer.PolicyRoundRobin, ups)
//	...
//	var tried balancer.Set
//	i := p.Pick(tried)
//	if i < 0 {
//		// 503: balancer.ErrNoUpstream
//	}
//	up := ups[i]
//	up.Acquire()
//	defer up.Release()
//	// on a retry: tried = tried.With(i); p.Pick(tried)
//
// Active health checks (Checker) run in their own goroutines and only
// publish a flag each upstream's Available reads.
package balancer

import (
	"errors"
	"fmt"
)

// The load-balancing policies New accepts, as spelled in the config.
const (
	PolicyRoundRobin         = "round_robin"
	PolicyWeightedRoundRobin = "weighted_round_robin"
	PolicyLeastConn          = "least_conn"
	PolicyRandomTwoChoices   = "random_two_choices"
)

var (
	// ErrNoUpstream is the error the server reports (as 503) when Pick
	// finds no available upstream.
	ErrNoUpstream = errors.New("balancer: no available upstream")
	// ErrUnknownPolicy is wrapped by New for a policy it does not know.
	ErrUnknownPolicy = errors.New("balancer: unknown policy")
	// ErrEmptyPool is returned by New for an empty or nil-holding upstream
	// list.
	ErrEmptyPool = errors.New("balancer: empty upstream list")
)

// Set is a small bitset of upstream indexes already tried by one request,
// so that a retry goes elsewhere. Indexes of 64 and above are never
// excluded: a retry in a pool that large may land on a tried upstream
// again. The zero Set is empty.
type Set uint64

// Has reports whether index i is in s.
func (s Set) Has(i int) bool { return uint(i) < 64 && s&(1<<uint(i)) != 0 }

// With returns s with index i added (s itself if i is out of range).
func (s Set) With(i int) Set {
	if uint(i) >= 64 {
		return s
	}
	return s | 1<<uint(i)
}

// Picker chooses an upstream for a request. Implementations are safe for
// concurrent use, lock-free and allocation-free. A Picker is immutable
// apart from its internal counters and belongs to one config snapshot; the
// upstream state it reads lives in the shared *Upstream values.
type Picker interface {
	// Pick returns the index of an Available upstream not in tried, or -1
	// when none is left.
	Pick(tried Set) int
}

// New returns a Picker over ups for policy, one of PolicyRoundRobin,
// PolicyWeightedRoundRobin, PolicyLeastConn or PolicyRandomTwoChoices.
// Pick returns indexes into ups. The Picker keeps ups; the caller must not
// modify the slice afterwards.
func New(policy string, ups []*Upstream) (Picker, error) {
	if len(ups) == 0 {
		return nil, ErrEmptyPool
	}
	for i, u := range ups {
		if u == nil {
			return nil, fmt.Errorf("%w: upstream %d is nil", ErrEmptyPool, i)
		}
	}
	switch policy {
	case PolicyRoundRobin:
		return &roundRobin{ups: ups}, nil
	case PolicyWeightedRoundRobin:
		return newWeighted(ups), nil
	case PolicyLeastConn:
		return &leastConn{ups: ups}, nil
	case PolicyRandomTwoChoices:
		return &twoChoices{ups: ups}, nil
	}
	return nil, fmt.Errorf("%w: expected %s, %s, %s or %s, got %q", ErrUnknownPolicy,
		PolicyRoundRobin, PolicyWeightedRoundRobin, PolicyLeastConn, PolicyRandomTwoChoices, policy)
}

// usable reports whether ups[i] may be picked for a request that already
// tried the upstreams in tried.
func usable(ups []*Upstream, i int, tried Set) bool {
	return !tried.Has(i) && ups[i].Available()
}
