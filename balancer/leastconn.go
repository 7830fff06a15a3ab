package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// leastConn picks the usable upstream with the fewest requests in flight
// (Upstream.Inflight, counted by Acquire/Release, so "conn" means active
// requests, as in caddy). The scan starts at an offset taken from an atomic
// counter, and the first of equally loaded upstreams wins, so ties rotate
// round-robin instead of always favouring the first upstream.
type leastConn struct {
	// next is the start offset of the next scan. Written by every Pick
	// (Add). Padded: it is the one shared write of the pick.
	next atomic.Uint64
	_    [cacheLine - 8]byte
	ups  []*Upstream
}

// Pick implements Picker.
func (p *leastConn) Pick(tried Set) int {
	start := int((p.next.Add(1) - 1) % uint64(len(p.ups)))
	return leastLoaded(p.ups, start, tried)
}

// leastLoaded returns the usable upstream with the fewest requests in
// flight, the first from start among equals, or -1.
func leastLoaded(ups []*Upstream, start int, tried Set) int {
	best, bestLoad := -1, int64(0)
	for k := range ups {
		i := start + k
		if i >= len(ups) {
			i -= len(ups)
		}
		// Load first: Available is only worth asking of an upstream that
		// would become the best.
		if load := ups[i].Inflight(); (best < 0 || load < bestLoad) && usable(ups, i, tried) {
			best, bestLoad = i, load
		}
	}
	return best
}

// twoChoices is the power of two choices (Mitzenmacher): pick two distinct
// upstreams at random and take the less loaded. It needs no shared write at
// all (least_conn writes its start counter) and reads two load counters
// instead of n, while keeping the maximum load within O(log log n) of the
// mean. When neither choice is usable it falls back to a least-loaded scan
// from a random start.
type twoChoices struct {
	ups []*Upstream
}

// Pick implements Picker.
func (p *twoChoices) Pick(tried Set) int {
	n := uint64(len(p.ups))
	if n == 1 {
		if usable(p.ups, 0, tried) {
			return 0
		}
		return -1
	}
	a := int(rand.Uint64N(n))
	b := int(rand.Uint64N(n - 1))
	if b >= a {
		b++ // distinct from a, still uniform
	}
	switch ua, ub := usable(p.ups, a, tried), usable(p.ups, b, tried); {
	case ua && ub:
		if p.ups[b].Inflight() < p.ups[a].Inflight() {
			return b
		}
		return a
	case ua:
		return a
	case ub:
		return b
	}
	return leastLoaded(p.ups, int(rand.Uint64N(n)), tried)
}
