package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// maxSkips bounds the counter increments one Pick spends on unusable
// entries (unavailable or tried) before it falls back to a random choice
// among the usable upstreams. Within the bound, skipping consumes the
// skipped entries as caddy's RoundRobinSelection does, which keeps shares
// among the usable upstreams exact; the bound keeps a pick O(maxSkips + n)
// when long runs are down, instead of O(len(sequence)) atomic adds on a
// contended counter.
const maxSkips = 8

// roundRobin hands out upstreams in index order with one shared atomic
// counter, like caddy's RoundRobinSelection: no mutex, no allocation.
// Concurrent Picks interleave on the counter, so no single Pick is
// guaranteed to visit every index; the fallback scan is what makes -1 mean
// "nothing is usable" rather than "lost a race".
type roundRobin struct {
	// next is the count of entries handed out or skipped. Written by every
	// Pick (Add); read by nobody else. Padded: it is the one shared write
	// of the pick.
	next atomic.Uint64
	_    [cacheLine - 8]byte
	ups  []*Upstream
}

// Pick implements Picker.
func (p *roundRobin) Pick(tried Set) int {
	n := uint64(len(p.ups))
	for range min(n, maxSkips) {
		if i := int((p.next.Add(1) - 1) % n); usable(p.ups, i, tried) {
			return i
		}
	}
	return pickWeighted(p.ups, nil, tried)
}

// pickWeighted returns a usable upstream chosen at random in proportion to
// weights (all 1 if weights is nil), or -1. It is one pass of weighted
// reservoir sampling (Chao's algorithm for one item): the running choice is
// replaced by upstream i with probability w_i / (sum of usable weights so
// far), so no slice of candidates is built. math/rand/v2's global functions
// are allocation-free and safe for concurrent use.
func pickWeighted(ups []*Upstream, weights []uint64, tried Set) int {
	chosen := -1
	var total uint64
	for i := range ups {
		if !usable(ups, i, tried) {
			continue
		}
		w := uint64(1)
		if weights != nil {
			w = weights[i]
		}
		total += w
		if rand.Uint64N(total) < w {
			chosen = i
		}
	}
	return chosen
}
