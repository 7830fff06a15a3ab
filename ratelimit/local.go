package ratelimit

import (
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/keystone-gateway/keystone/config"
)

// shards is the number of lock stripes of a Local store (a power of two).
// With 2..64 cores a stripe's lock is rarely contended: a check holds it
// for one map lookup and a few integer operations (~40ns).
const shards = 256

// evictScan is how many of the least recently used entries are searched
// for an expired one before the least recently used entry is evicted.
const evictScan = 8

// LocalConfig configures a Local store.
type LocalConfig struct {
	// MaxKeys bounds the keys held (buckets of every limit together).
	// When full, a new key evicts an expired key among the least recently
	// used ones, else the least recently used key. If zero,
	// shared.local_max_keys's default (config.DefaultShared).
	MaxKeys int
}

// Local is an in-memory GCRA store, safe for concurrent use: 256
// lock-striped maps, each with an intrusive LRU list over a fixed array of
// entries, so a check of an existing key is O(1) and allocates nothing
// (BenchmarkLocalAllow). A Local must not be copied.
type Local struct {
	shards [shards]shard
}

type shard struct {
	mu   sync.Mutex
	idx  map[string]int32
	ents []entry // grows up to max, never shrinks
	max  int
	// head is the most recently used entry, tail the least; -1: none.
	head, tail int32
	// free is the first entry of the free list (linked by next); -1: none.
	free int32
	_    [24]byte // keep neighbouring stripes' locks off one cache line
}

type entry struct {
	key        string
	tat        int64
	prev, next int32
}

// NewLocal returns an empty Local store.
func NewLocal(c LocalConfig) *Local {
	if c.MaxKeys <= 0 {
		c.MaxKeys = config.DefaultShared().LocalMaxKeys
	}
	per := max((c.MaxKeys+shards-1)/shards, 1)
	l := &Local{}
	for i := range l.shards {
		s := &l.shards[i]
		s.idx = make(map[string]int32)
		s.max = per
		s.head, s.tail, s.free = -1, -1, -1
	}
	return l
}

func shardOf(key []byte) uint32 { return uint32(xxhash.Sum64(key) & (shards - 1)) }

// Allow charges every check at now (unix nanoseconds) if all of them allow
// the request, and reports whether they did. When denied, nothing is
// charged and retryAfter is how long until every limit would allow it. In
// both cases each check's Remaining and Reset are set. More than MaxChecks
// checks are denied.
func (l *Local) Allow(now int64, checks []Check) (allowed bool, retryAfter int64) {
	if len(checks) > MaxChecks {
		return false, 0
	}
	// Lock the stripes involved in ascending order (no deadlock between
	// two requests sharing stripes), each once, so the decision over all
	// limits and the commit are one atomic step.
	var ids [MaxChecks]uint32
	var locked [MaxChecks]uint32
	n := 0
	for i := range checks {
		id := shardOf(checks[i].Key)
		ids[i] = id
		j := n
		for j > 0 && locked[j-1] > id {
			j--
		}
		if j > 0 && locked[j-1] == id {
			continue
		}
		copy(locked[j+1:n+1], locked[j:n])
		locked[j] = id
		n++
	}
	for _, id := range locked[:n] {
		l.shards[id].mu.Lock()
	}
	var olds, tats [MaxChecks]int64
	allowed = true
	for i := range checks {
		c := &checks[i]
		s := &l.shards[ids[i]]
		if e, ok := s.idx[string(c.Key)]; ok {
			olds[i] = s.ents[e].tat
		}
		nt, wait := c.Limit.decide(olds[i], now)
		tats[i] = nt
		if wait > 0 {
			allowed = false
			retryAfter = max(retryAfter, wait)
		}
	}
	for i := range checks {
		c := &checks[i]
		if allowed {
			l.shards[ids[i]].set(c.Key, tats[i], now)
			c.report(tats[i], now)
		} else {
			c.report(olds[i], now)
		}
	}
	for _, id := range locked[:n] {
		l.shards[id].mu.Unlock()
	}
	return allowed, retryAfter
}

// RaiseTAT moves key's TAT to tat if that is later (local_first adopting
// the shared state: it may only restrict, never free, the local share).
func (l *Local) RaiseTAT(now int64, key []byte, tat int64) {
	s := &l.shards[shardOf(key)]
	s.mu.Lock()
	e, ok := s.idx[string(key)]
	if !ok || s.ents[e].tat < tat {
		s.set(key, tat, now)
	}
	s.mu.Unlock()
}

// Len returns the number of keys held, expired ones included until they
// are evicted or overwritten.
func (l *Local) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.idx)
		s.mu.Unlock()
	}
	return n
}

// set stores tat under key and makes it the most recently used entry.
// s.mu is held.
func (s *shard) set(key []byte, tat, now int64) {
	if e, ok := s.idx[string(key)]; ok {
		s.ents[e].tat = tat
		s.touch(e)
		return
	}
	var e int32
	switch {
	case s.free >= 0:
		e = s.free
		s.free = s.ents[e].next
	case len(s.ents) < s.max:
		s.ents = append(s.ents, entry{})
		e = int32(len(s.ents) - 1)
	default:
		e = s.victim(now)
		delete(s.idx, s.ents[e].key)
		s.unlink(e)
	}
	s.ents[e] = entry{key: string(key), tat: tat, prev: -1, next: -1}
	s.idx[s.ents[e].key] = e
	s.pushFront(e)
}

// victim picks the entry to evict from a full shard: an expired one among
// the evictScan least recently used, else the least recently used.
func (s *shard) victim(now int64) int32 {
	e := s.tail
	for i := 0; i < evictScan && e >= 0; i++ {
		if s.ents[e].tat <= now {
			return e
		}
		e = s.ents[e].prev
	}
	return s.tail
}

func (s *shard) touch(e int32) {
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *shard) unlink(e int32) {
	en := &s.ents[e]
	if en.prev >= 0 {
		s.ents[en.prev].next = en.next
	} else {
		s.head = en.next
	}
	if en.next >= 0 {
		s.ents[en.next].prev = en.prev
	} else {
		s.tail = en.prev
	}
	en.prev, en.next = -1, -1
}

func (s *shard) pushFront(e int32) {
	en := &s.ents[e]
	en.prev, en.next = -1, s.head
	if s.head >= 0 {
		s.ents[s.head].prev = e
	}
	s.head = e
	if s.tail < 0 {
		s.tail = e
	}
}

// Refund takes back one request of each check charged by an Allow that
// returned true, when a later stage (a Redis-decided limit) denied the
// request after all.
func (l *Local) Refund(checks []Check) {
	for i := range checks {
		c := &checks[i]
		s := &l.shards[shardOf(c.Key)]
		s.mu.Lock()
		if e, ok := s.idx[string(c.Key)]; ok {
			s.ents[e].tat -= c.Limit.interval
		}
		s.mu.Unlock()
	}
}
