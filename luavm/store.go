package luavm

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Store is a per-tenant key/value store shared by all VMs of a tenant's
// script, behind keystone.store. Implementations must be safe for
// concurrent use. It is deliberately small so that a Redis-backed store can
// implement it later.
type Store interface {
	// Get returns the value of key, and whether it exists and has not
	// expired.
	Get(key string) (value string, ok bool)

	// Set stores value under key. A ttl of 0 means no expiry.
	Set(key, value string, ttl time.Duration)

	// Incr adds delta to the base-10 integer stored under key and returns
	// the sum. A missing or expired key counts as 0 and is created with
	// ttl (0: no expiry); an existing key keeps its expiry. It returns
	// ErrNotInteger if the value is not an integer and ErrOverflow if the
	// sum overflows.
	Incr(key string, delta int64, ttl time.Duration) (int64, error)

	// Delete removes key.
	Delete(key string)
}

// ValueCapped is implemented by a Store that bounds the size of a value:
// keystone.store.Set raises a script error for a longer one. The server's
// stores take the bound from config (shared.max_value_size); a Store
// without it (NewMemoryStore) takes any value a script can build
// (lua.max_string_size).
type ValueCapped interface {
	// MaxValueSize is the largest value in bytes; 0: no bound.
	MaxValueSize() int
}

const (
	storeStripes = 64 // power of two; a stripe is picked by xxhash of the key

	// Every sweepEvery writes to a stripe, up to sweepScan of its entries
	// are checked for expiry: Redis-style sampling that bounds the memory
	// held by expired keys nobody reads again, with no goroutine to stop.
	sweepEvery = 16
	sweepScan  = 32
)

// memoryStore is the in-process Store: 64 lock-striped maps with lazy
// expiry plus an opportunistic, bounded sweep on writes. It starts no
// goroutine, so it needs no Close.
type memoryStore struct {
	clock   func() int64 // unix nanoseconds; injected by tests
	stripes [storeStripes]stripe
	// perStripe caps the keys of one stripe; 0: unbounded.
	perStripe int
	// maxValue is the largest value in bytes, 0: unbounded. Written by
	// SetMaxValueSize (a reload), read by keystone.store.Set.
	maxValue atomic.Int64
}

type stripe struct {
	mu     sync.Mutex
	m      map[string]storeEntry
	writes uint32
	_      [40]byte // keep neighbouring stripes' locks off one cache line
}

type storeEntry struct {
	value   string
	expires int64 // unix nanoseconds; 0: never
	used    int64 // last read or write, unix nanoseconds, for eviction
}

// NewMemoryStore returns an in-process Store, safe for concurrent use.
// Expired keys are dropped when read, and sampled away as writes happen.
func NewMemoryStore() Store { return newMemoryStore(func() int64 { return time.Now().UnixNano() }) }

// NewBoundedMemoryStore is NewMemoryStore holding at most about maxKeys
// keys of at most maxValue bytes each (0: any size): a new key in a full
// store evicts an expired key if one is among a sample of 32, else the
// least recently used of the sample (Redis's sampled LRU). Len reports
// the keys held.
func NewBoundedMemoryStore(maxKeys, maxValue int) *BoundedMemoryStore {
	s := newMemoryStore(func() int64 { return time.Now().UnixNano() })
	s.perStripe = max((maxKeys+storeStripes-1)/storeStripes, 1)
	s.maxValue.Store(int64(max(maxValue, 0)))
	return &BoundedMemoryStore{s}
}

// BoundedMemoryStore is the Store NewBoundedMemoryStore returns. It
// implements ValueCapped.
type BoundedMemoryStore struct{ *memoryStore }

// Len returns the number of keys held, expired ones included until they
// are swept.
func (b *BoundedMemoryStore) Len() int { return b.len() }

// MaxValueSize implements ValueCapped.
func (b *BoundedMemoryStore) MaxValueSize() int { return int(b.maxValue.Load()) }

// SetMaxValueSize changes the value cap (0: any size), for a reload;
// values already stored are kept.
func (b *BoundedMemoryStore) SetMaxValueSize(n int) { b.maxValue.Store(int64(max(n, 0))) }

func newMemoryStore(clock func() int64) *memoryStore {
	s := &memoryStore{clock: clock}
	for i := range s.stripes {
		s.stripes[i].m = make(map[string]storeEntry)
	}
	return s
}

func (s *memoryStore) stripe(key string) *stripe {
	return &s.stripes[xxhash.Sum64String(key)&(storeStripes-1)]
}

func (e storeEntry) live(now int64) bool { return e.expires == 0 || now < e.expires }

func (s *memoryStore) expiry(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return now + int64(ttl)
}

// Get implements Store; an expired entry is deleted on the way.
func (s *memoryStore) Get(key string) (string, bool) {
	st := s.stripe(key)
	now := s.clock()
	st.mu.Lock()
	e, ok := st.m[key]
	if ok && !e.live(now) {
		delete(st.m, key)
		ok = false
	} else if ok && s.perStripe > 0 {
		e.used = now
		st.m[key] = e
	}
	st.mu.Unlock()
	return e.value, ok
}

// Set implements Store.
func (s *memoryStore) Set(key, value string, ttl time.Duration) {
	st := s.stripe(key)
	now := s.clock()
	st.mu.Lock()
	s.makeRoom(st, key, now)
	st.m[key] = storeEntry{value: value, expires: s.expiry(now, ttl), used: now}
	st.wrote(now)
	st.mu.Unlock()
}

// Incr implements Store.
func (s *memoryStore) Incr(key string, delta int64, ttl time.Duration) (int64, error) {
	st := s.stripe(key)
	now := s.clock()
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.m[key]
	var n int64
	if ok && e.live(now) {
		var err error
		if n, err = strconv.ParseInt(e.value, 10, 64); err != nil {
			return 0, ErrNotInteger
		}
	} else {
		s.makeRoom(st, key, now)
		e = storeEntry{expires: s.expiry(now, ttl)}
	}
	e.used = now
	if (delta > 0 && n > math.MaxInt64-delta) || (delta < 0 && n < math.MinInt64-delta) {
		return 0, ErrOverflow
	}
	n += delta
	e.value = strconv.FormatInt(n, 10)
	st.m[key] = e
	st.wrote(now)
	return n, nil
}

// Delete implements Store.
func (s *memoryStore) Delete(key string) {
	st := s.stripe(key)
	st.mu.Lock()
	delete(st.m, key)
	st.mu.Unlock()
}

// makeRoom evicts one entry of a full stripe before key is added to it:
// an expired one of a sample of sweepScan entries, else the least recently
// used of the sample. The caller holds st.mu.
func (s *memoryStore) makeRoom(st *stripe, key string, now int64) {
	if s.perStripe == 0 || len(st.m) < s.perStripe {
		return
	}
	if _, ok := st.m[key]; ok {
		return
	}
	victim, oldest, n := "", int64(0), 0
	for k, e := range st.m {
		if !e.live(now) {
			victim = k
			break
		}
		if n == 0 || e.used < oldest {
			victim, oldest = k, e.used
		}
		if n++; n == sweepScan {
			break
		}
	}
	delete(st.m, victim)
}

// wrote counts a write and, every sweepEvery writes, drops the expired
// entries among up to sweepScan of the stripe's (randomly ordered) keys.
// The caller holds st.mu.
func (st *stripe) wrote(now int64) {
	st.writes++
	if st.writes%sweepEvery != 0 {
		return
	}
	n := 0
	for k, e := range st.m {
		if !e.live(now) {
			delete(st.m, k)
		}
		if n++; n == sweepScan {
			break
		}
	}
}

// len returns the number of entries, expired or not; for tests.
func (s *memoryStore) len() int {
	n := 0
	for i := range s.stripes {
		st := &s.stripes[i]
		st.mu.Lock()
		n += len(st.m)
		st.mu.Unlock()
	}
	return n
}
