package luavm

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is an injected clock tests advance instead of sleeping.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) read() int64             { return c.now.Load() }
func (c *fakeClock) advance(d time.Duration) { c.now.Add(int64(d)) }

func TestMemoryStoreTTL(t *testing.T) {
	clock := &fakeClock{}
	clock.now.Store(1e9)
	s := newMemoryStore(clock.read)

	s.Set("forever", "1", 0)
	s.Set("short", "2", time.Second)
	if v, ok := s.Get("short"); !ok || v != "2" {
		t.Fatalf("Get(short) = %q, %v", v, ok)
	}
	clock.advance(time.Second)
	if _, ok := s.Get("short"); ok {
		t.Error("short is still there after its TTL")
	}
	if v, ok := s.Get("forever"); !ok || v != "1" {
		t.Errorf("Get(forever) = %q, %v", v, ok)
	}
	s.Delete("forever")
	if _, ok := s.Get("forever"); ok {
		t.Error("Delete left the key")
	}
}

func TestMemoryStoreIncr(t *testing.T) {
	clock := &fakeClock{}
	s := newMemoryStore(clock.read)
	tests := []struct {
		name    string
		key     string
		delta   int64
		ttl     time.Duration
		advance time.Duration
		want    int64
		err     error
	}{
		{name: "creates the key", key: "c", delta: 1, ttl: 10 * time.Second, want: 1},
		{name: "adds to it", key: "c", delta: 5, want: 6},
		{name: "keeps the expiry of an existing key", key: "c", delta: 1, ttl: time.Hour, advance: 9 * time.Second, want: 7},
		{name: "restarts from zero once expired", key: "c", delta: 1, advance: time.Second, want: 1},
		{name: "negative delta", key: "c", delta: -3, want: -2},
		{name: "not an integer", key: "s", err: ErrNotInteger},
		{name: "overflow", key: "max", delta: 1, err: ErrOverflow},
		{name: "underflow", key: "min", delta: -1, err: ErrOverflow},
	}
	s.Set("s", "abc", 0)
	s.Set("max", fmt.Sprint(int64(math.MaxInt64)), 0)
	s.Set("min", fmt.Sprint(int64(math.MinInt64)), 0)
	for _, tt := range tests {
		clock.advance(tt.advance)
		got, err := s.Incr(tt.key, tt.delta, tt.ttl)
		if !errors.Is(err, tt.err) || (err == nil && got != tt.want) {
			t.Errorf("%s: Incr = %d, %v; want %d, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

// TestMemoryStoreSweep: expired keys nobody reads again are sampled away by
// later writes, so they cannot accumulate without bound.
func TestMemoryStoreSweep(t *testing.T) {
	clock := &fakeClock{}
	s := newMemoryStore(clock.read)
	for i := range 10000 {
		s.Set(fmt.Sprint("old", i), "x", time.Second)
	}
	clock.advance(2 * time.Second)
	for i := range 20000 {
		s.Set(fmt.Sprint("new", i%1000), "x", 0)
	}
	if n := s.len(); n > 1000+1000 {
		t.Errorf("%d entries left, want most of the 10000 expired ones swept", n)
	}
}

func TestMemoryStoreConcurrentIncr(t *testing.T) {
	s := NewMemoryStore()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if _, err := s.Incr("n", 1, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if v, _ := s.Get("n"); v != "50000" {
		t.Errorf("n = %s, want 50000", v)
	}
}
