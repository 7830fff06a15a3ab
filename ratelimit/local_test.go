package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLocalAllowsBurstThenOnePerInterval(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	lim := NewLimit(10, time.Second, 3) // one per 100ms, 3 back to back
	now := int64(1_000_000_000)
	check := func(at int64) (bool, Check) {
		c := []Check{{Limit: lim, Key: []byte("k")}}
		ok, _ := l.Allow(at, c)
		return ok, c[0]
	}
	for i := range 3 {
		ok, c := check(now)
		if !ok {
			t.Fatalf("request %d of the burst denied", i+1)
		}
		if c.Remaining != int64(2-i) {
			t.Errorf("request %d: remaining %d, want %d", i+1, c.Remaining, 2-i)
		}
	}
	c := []Check{{Limit: lim, Key: []byte("k")}}
	ok, retry := l.Allow(now, c)
	if ok {
		t.Fatal("fourth request at the same instant allowed")
	}
	if retry != int64(100*time.Millisecond) {
		t.Errorf("retry after %v, want 100ms", time.Duration(retry))
	}
	if c[0].Reset != 300*time.Millisecond {
		t.Errorf("reset %v, want 300ms", c[0].Reset)
	}
	if ok, _ := check(now + int64(99*time.Millisecond)); ok {
		t.Error("allowed 99ms later, before one interval passed")
	}
	if ok, _ := check(now + int64(100*time.Millisecond)); !ok {
		t.Error("denied one interval later")
	}
	// Idle for a long time: the whole burst is back, no more.
	later := now + int64(time.Hour)
	for i := range 3 {
		if ok, _ := check(later); !ok {
			t.Fatalf("after an hour idle, request %d denied", i+1)
		}
	}
	if ok, _ := check(later); ok {
		t.Error("after an hour idle, more than the burst allowed")
	}
}

func TestLocalSteadyRateIsExact(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	lim := NewLimit(100, time.Second, 1)
	// 1000 requests a second for 10 seconds, clock stepping 1ms.
	allowed := 0
	start := int64(time.Hour)
	for ms := range 10_000 {
		if ok, _ := l.Allow(start+int64(ms)*int64(time.Millisecond), []Check{{Limit: lim, Key: []byte("k")}}); ok {
			allowed++
		}
	}
	if allowed != 1000 {
		t.Errorf("allowed %d in 10s at 100/s, want exactly 1000", allowed)
	}
}

func TestLocalChargesOnlyWhenEveryLimitAllows(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	wide := NewLimit(100, time.Second, 100)
	narrow := NewLimit(1, time.Second, 1)
	now := int64(time.Hour)
	req := func() bool {
		ok, _ := l.Allow(now, []Check{{Limit: wide, Key: []byte("wide")}, {Limit: narrow, Key: []byte("narrow")}})
		return ok
	}
	if !req() {
		t.Fatal("first request denied")
	}
	for range 50 {
		if req() {
			t.Fatal("narrow limit exhausted, request allowed")
		}
	}
	// The 50 denied requests must not have been charged to the wide limit.
	c := []Check{{Limit: wide, Key: []byte("wide")}}
	if ok, _ := l.Allow(now, c); !ok || c[0].Remaining != 98 {
		t.Errorf("wide limit: allowed %v, remaining %d; want allowed with 98 left (denied requests uncharged)", ok, c[0].Remaining)
	}
}

func TestLocalSameKeyTwiceInOneRequest(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	lim := NewLimit(1, time.Second, 5)
	// Two checks on keys in the same stripe (here, the same key) lock it once.
	ok, _ := l.Allow(0, []Check{{Limit: lim, Key: []byte("a")}, {Limit: lim, Key: []byte("a")}})
	if !ok {
		t.Fatal("denied")
	}
}

func TestLocalEvictsExpiredThenLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{MaxKeys: shards}) // one entry per stripe
	// Find three keys of one stripe.
	var keys [][]byte
	for i := 0; len(keys) < 3; i++ {
		k := []byte(fmt.Sprint("key-", i))
		if shardOf(k) == 7 {
			keys = append(keys, k)
		}
	}
	s := &l.shards[7]
	s.max = 2
	slow := NewLimit(1, time.Hour, 1)
	fast := NewLimit(1000, time.Second, 1)
	now := int64(time.Hour)
	l.Allow(now, []Check{{Limit: slow, Key: keys[0]}}) // live for an hour
	l.Allow(now, []Check{{Limit: fast, Key: keys[1]}}) // expires after 1ms
	now += int64(time.Second)
	l.Allow(now, []Check{{Limit: slow, Key: keys[2]}})
	if _, ok := s.idx[string(keys[1])]; ok {
		t.Error("expired key kept while a live one was evicted")
	}
	if _, ok := s.idx[string(keys[0])]; !ok {
		t.Fatal("live least recently used key evicted although an expired one existed")
	}
	// Now both are live: the least recently used one (keys[0]) goes.
	l.Allow(now, []Check{{Limit: slow, Key: keys[1]}})
	if _, ok := s.idx[string(keys[0])]; ok {
		t.Error("least recently used key kept")
	}
	if got := len(s.idx); got != 2 {
		t.Errorf("stripe holds %d keys, want its bound 2", got)
	}
	// The evicted key starts over: its hour-long bucket is forgotten.
	if ok, _ := l.Allow(now, []Check{{Limit: slow, Key: keys[0]}}); !ok {
		t.Error("evicted key still limited")
	}
}

func TestLocalBoundedUnderManyKeys(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{MaxKeys: 1000})
	lim := NewLimit(1, time.Minute, 1)
	for i := range 20_000 {
		l.Allow(int64(time.Hour), []Check{{Limit: lim, Key: fmt.Appendf(nil, "ip-%d", i)}})
	}
	if n := l.Len(); n > 1000+shards {
		t.Errorf("holds %d keys, want at most about 1000", n)
	}
}

func TestLocalConcurrentTotals(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	lim := NewLimit(1, time.Hour, 500)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				checks := []Check{{Limit: lim, Key: []byte("shared")}, {Limit: lim, Key: fmt.Appendf(nil, "g%d-%d", g, i%3)}}
				if ok, _ := l.Allow(int64(time.Hour), checks); ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 500 {
		t.Errorf("allowed %d of 3200 concurrent requests, want exactly the burst of 500", got)
	}
}

// BenchmarkLocalAllow bounds the cost of one local GCRA check of an existing
// key (the steady state of the gateway's per-request limit): ns/op, 0 allocs.
func BenchmarkLocalAllow(b *testing.B) {
	l := NewLocal(LocalConfig{})
	lim := NewLimit(1_000_000, time.Second, 1000)
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "api\x00per-ip\x0010.0.%d.%d", i/256, i%256)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		checks := make([]Check, 1)
		i := 0
		for pb.Next() {
			checks[0] = Check{Limit: lim, Key: keys[i&1023]}
			l.Allow(time.Now().UnixNano(), checks)
			i++
		}
	})
}

// BenchmarkLocalAllowTwoLimits is a request charged to two limits at once.
func BenchmarkLocalAllowTwoLimits(b *testing.B) {
	l := NewLocal(LocalConfig{})
	lim := NewLimit(1_000_000, time.Second, 1000)
	b.ReportAllocs()
	checks := make([]Check, 2)
	k1, k2 := []byte("api\x00ip\x0010.0.0.1"), []byte("api\x00tenant\x00")
	for i := 0; i < b.N; i++ {
		checks[0] = Check{Limit: lim, Key: k1}
		checks[1] = Check{Limit: lim, Key: k2}
		l.Allow(time.Now().UnixNano(), checks)
	}
}

func TestConnsCountsInFlight(t *testing.T) {
	t.Parallel()
	c := NewConns()
	k := []byte("ip")
	if !c.Acquire(k, 2) || !c.Acquire(k, 2) {
		t.Fatal("first two requests refused")
	}
	if c.Acquire(k, 2) {
		t.Fatal("third request in flight accepted with limit 2")
	}
	c.Release(k)
	if !c.Acquire(k, 2) {
		t.Fatal("refused after one finished")
	}
	c.Release(k)
	c.Release(k)
	if n := c.Len(); n != 0 {
		t.Errorf("%d keys held with nothing in flight, want 0", n)
	}
}

func TestLocalRefund(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	lim := NewLimit(1, time.Hour, 1)
	c := []Check{{Limit: lim, Key: []byte("k")}}
	if ok, _ := l.Allow(0, c); !ok {
		t.Fatal("denied")
	}
	l.Refund(c)
	if ok, _ := l.Allow(0, c); !ok {
		t.Error("refunded request still charged")
	}
}

// TestShareAllowsItsPartOfTheLimit offers a share of 1/n of a limit a
// request every millisecond for 10s: it allows (rate × T + burst)/n, so n
// instances on their shares allow together what the limit allows.
func TestShareAllowsItsPartOfTheLimit(t *testing.T) {
	t.Parallel()
	lim := NewLimit(100, time.Second, 50)
	for _, n := range []int64{1, 2, 3} {
		l := NewLocal(LocalConfig{})
		share := lim.Share(n)
		allowed := 0
		const T = 10 * time.Second
		for now := int64(0); now <= int64(T); now += int64(time.Millisecond) {
			if ok, _ := l.Allow(now, []Check{{Limit: share, Key: []byte("k")}}); ok {
				allowed++
			}
		}
		if want := (100*10 + 50) / n; int64(allowed) > want || int64(allowed) < want-1 {
			t.Errorf("share 1/%d: allowed %d in %v, want %d", n, allowed, T, want)
		}
	}
}

// TestRaiseTATOnlyRestricts raises a key's TAT (local_first adopting the
// shared state): a later TAT holds the key back, an earlier one frees
// nothing, and a key not held is created with it.
func TestRaiseTATOnlyRestricts(t *testing.T) {
	t.Parallel()
	l := NewLocal(LocalConfig{})
	lim := NewLimit(10, time.Second, 2) // 100ms a request, 200ms tolerance
	check := func(now int64) bool {
		ok, _ := l.Allow(now, []Check{{Limit: lim, Key: []byte("k")}})
		return ok
	}
	if !check(0) {
		t.Fatal("first request denied")
	}
	l.RaiseTAT(0, []byte("k"), int64(time.Second)) // spent elsewhere: full until 0.8s
	if check(int64(500 * time.Millisecond)) {
		t.Error("allowed at 0.5s after the TAT was raised to 1s")
	}
	l.RaiseTAT(0, []byte("k"), 0) // earlier: ignored
	if check(int64(700 * time.Millisecond)) {
		t.Error("an earlier TAT freed the key")
	}
	if !check(int64(900 * time.Millisecond)) {
		t.Error("denied at 0.9s, when the raised TAT allows one")
	}
	l.RaiseTAT(0, []byte("new"), int64(time.Second))
	if ok, _ := l.Allow(int64(500*time.Millisecond), []Check{{Limit: lim, Key: []byte("new")}}); ok {
		t.Error("a key created by RaiseTAT at 1s allowed a request at 0.5s")
	}
}
