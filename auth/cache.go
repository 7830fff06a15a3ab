package auth

import (
	"sync"
	"time"
)

// Cache sizes: how many verified credentials are remembered per
// authenticator. Beyond them an arbitrary entry is evicted; the bound keeps
// a flood of distinct valid tokens from growing memory without limit.
const (
	maxCachedTokens      = 10000
	maxCachedCredentials = 1000
	cacheShards          = 16
)

// cache remembers verified credentials until they expire. It is sharded,
// each shard behind a RWMutex: lookups take a shard's read lock, and
// BenchmarkJWTCached* show it at tens of nanoseconds under RunParallel. A
// lock-free map would save little next to the header parsing around it.
//
// An entry records check (the full token, for a cache keyed by a hash of
// it, so a hash collision can never accept another token) and the key
// generation it was verified under: after a JWKS refresh changed the key
// set, older entries are verified again.
type cache[K comparable] struct {
	shards [cacheShards]cacheShard[K]
	per    int // entries per shard
	shard  func(K) int
}

type cacheShard[K comparable] struct {
	mu sync.RWMutex
	m  map[K]cacheEntry
}

type cacheEntry struct {
	check string
	id    *Identity
	until int64 // unix nanoseconds
	gen   uint64
}

func newCache[K comparable](size int) *cache[K] {
	c := &cache[K]{per: max(1, size/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[K]cacheEntry)
	}
	var zero K
	switch any(zero).(type) {
	case uint64:
		c.shard = func(k K) int { return int(any(k).(uint64) % cacheShards) }
	case [32]byte:
		c.shard = func(k K) int { return int(any(k).([32]byte)[0] % cacheShards) }
	default:
		c.shard = func(K) int { return 0 }
	}
	return c
}

// get returns the identity cached under k for check, if it is still valid
// at now and was verified under key generation gen.
func (c *cache[K]) get(k K, check string, now time.Time, gen uint64) *Identity {
	s := &c.shards[c.shard(k)]
	s.mu.RLock()
	e, ok := s.m[k]
	s.mu.RUnlock()
	if !ok || e.check != check || e.gen != gen || now.UnixNano() >= e.until {
		return nil
	}
	return e.id
}

// put remembers id under k until until.
func (c *cache[K]) put(k K, check string, id *Identity, until, now time.Time, gen uint64) {
	if !until.After(now) {
		return
	}
	s := &c.shards[c.shard(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= c.per {
		// First drop what has expired; if the shard is still full, one
		// arbitrary entry (map order is random).
		n := now.UnixNano()
		for key, e := range s.m {
			if n >= e.until {
				delete(s.m, key)
			}
		}
		for key := range s.m {
			if len(s.m) < c.per {
				break
			}
			delete(s.m, key)
		}
	}
	s.m[k] = cacheEntry{check: check, id: id, until: until.UnixNano(), gen: gen}
}

// len returns the number of entries, for tests.
func (c *cache[K]) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.RLock()
		n += len(c.shards[i].m)
		c.shards[i].mu.RUnlock()
	}
	return n
}
