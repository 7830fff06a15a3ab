package ratelimit

import "sync"

// Conns counts requests in flight per key, like nginx's limit_conn. A key
// is held only while it has requests in flight, so its size is bounded by
// the requests in flight. Safe for concurrent use; must not be copied.
type Conns struct {
	shards [shards]connShard
}

type connShard struct {
	mu sync.Mutex
	m  map[string]int32
	_  [48]byte
}

// NewConns returns an empty Conns.
func NewConns() *Conns {
	c := &Conns{}
	for i := range c.shards {
		c.shards[i].m = make(map[string]int32)
	}
	return c
}

// Acquire counts one more request of key if fewer than limit are in
// flight, and reports whether it did. Every true must be paired with one
// Release of the same key.
func (c *Conns) Acquire(key []byte, limit int32) bool {
	s := &c.shards[shardOf(key)]
	s.mu.Lock()
	n := s.m[string(key)]
	ok := n < limit
	if ok {
		s.m[string(key)] = n + 1
	}
	s.mu.Unlock()
	return ok
}

// Release ends one request of key counted by Acquire.
func (c *Conns) Release(key []byte) {
	s := &c.shards[shardOf(key)]
	s.mu.Lock()
	if n := s.m[string(key)]; n <= 1 {
		delete(s.m, string(key))
	} else {
		s.m[string(key)] = n - 1
	}
	s.mu.Unlock()
}

// Len returns the number of keys with requests in flight.
func (c *Conns) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
