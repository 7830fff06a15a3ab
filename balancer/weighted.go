package balancer

import "sync/atomic"

// maxSequence caps the length of a weighted round-robin cycle. Larger
// weight sums are scaled down proportionally (each weight kept at least 1),
// so a pool costs at most (maxSequence + n) * 4 bytes, 16KiB: small enough
// to stay in L2 cache, long enough for weights 1..1000 over a few upstreams
// to be exact.
const maxSequence = 4096

// weighted is nginx's smooth weighted round-robin made lock-free.
//
// nginx (ngx_http_upstream_get_peer) mutates each peer's current weight on
// every pick under the upstream zone's lock; caddy's weighted policy avoids
// the lock but allocates two slices per pick. Here the smooth sequence of
// one whole cycle is computed once, at construction, and Picks walk it with
// one atomic counter, as round_robin walks the upstream list. The cost is
// memory (one int32 per unit of weight, see maxSequence) and that an
// upstream's "effective weight" does not decay on errors as in nginx;
// errors are handled by Available (breaker, ejection, health) instead.
//
// Unusable entries are skipped by consuming them, up to maxSkips in a row,
// so over a cycle each usable upstream still gets exactly its own entries:
// with weights 5:1:1 and the third upstream down, the other two share 5:1,
// not 6:1 as they would if the next entry took over the skipped one.
// Beyond maxSkips, Pick falls back to a weighted random choice.
type weighted struct {
	// next is the count of sequence entries handed out or skipped. Written
	// by every Pick (Add). Padded: it is the one shared write of the pick.
	next    atomic.Uint64
	_       [cacheLine - 8]byte
	ups     []*Upstream
	seq     []int32  // one smooth WRR cycle of upstream indexes
	weights []uint64 // effective weights of seq, for the fallback
}

func newWeighted(ups []*Upstream) *weighted {
	w := make([]int, len(ups))
	g := 0
	for i, u := range ups {
		w[i] = u.Weight
		g = gcd(g, w[i])
	}
	sum := 0
	for i := range w {
		w[i] /= g // 2:2:2 cycles like 1:1:1, in a third of the memory
		sum += w[i]
	}
	if limit := max(maxSequence, len(w)); sum > limit {
		for i := range w {
			w[i] = max(w[i]*maxSequence/sum, 1)
		}
	}
	p := &weighted{ups: ups, seq: smoothSequence(w), weights: make([]uint64, len(w))}
	for i := range w {
		p.weights[i] = uint64(w[i])
	}
	return p
}

// smoothSequence returns one cycle of nginx's smooth weighted round-robin
// for weights: at each step every upstream's current weight grows by its
// weight, the largest (the first of equals) is chosen and loses the total.
// For 5:1:1 that is a a b a c a a: the heavy upstream's picks are spread
// out rather than bunched as in a a a a a b c.
func smoothSequence(weights []int) []int32 {
	total := 0
	for _, w := range weights {
		total += w
	}
	current := make([]int, len(weights))
	seq := make([]int32, total)
	for k := range seq {
		best := 0
		for i, w := range weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		seq[k] = int32(best)
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Pick implements Picker.
func (p *weighted) Pick(tried Set) int {
	n := uint64(len(p.seq))
	for range min(n, maxSkips) {
		if i := int(p.seq[(p.next.Add(1)-1)%n]); usable(p.ups, i, tried) {
			return i
		}
	}
	return pickWeighted(p.ups, p.weights, tried)
}
