package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/internal/redisslot"
	"github.com/keystone-gateway/keystone/internal/redistest"
)

func TestRedisAllowMatchesLocal(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, Timeout: time.Second})
	defer r.Close()
	lim := NewLimit(1, time.Hour, 3)
	for i := range 3 {
		c := []Check{{Limit: lim, Key: []byte("{t}:l:burst")}}
		ok, _, err := r.Allow(c)
		if err != nil || !ok {
			t.Fatalf("request %d of the burst: allowed %v, err %v", i+1, ok, err)
		}
		if c[0].Remaining != int64(2-i) {
			t.Errorf("request %d: remaining %d, want %d", i+1, c[0].Remaining, 2-i)
		}
	}
	c := []Check{{Limit: lim, Key: []byte("{t}:l:burst")}}
	ok, retry, err := r.Allow(c)
	if err != nil || ok {
		t.Fatalf("fourth request: allowed %v, err %v; want denied", ok, err)
	}
	if d := time.Duration(retry); d < 59*time.Minute || d > time.Hour {
		t.Errorf("retry after %v, want about 1h", d)
	}
	// The key expires when its bucket is full again: 3h from now.
	ttl, err := r.Client().PTTL(context.Background(), "ks:rl:{t}:l:burst").Result()
	if err != nil || ttl < 179*time.Minute || ttl > 181*time.Minute {
		t.Errorf("key TTL %v (err %v), want about 3h", ttl, err)
	}
}

func TestRedisChargesOnlyWhenEveryLimitAllows(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, Timeout: time.Second})
	defer r.Close()
	wide, narrow := NewLimit(1, time.Hour, 100), NewLimit(1, time.Hour, 1)
	req := func() bool {
		ok, _, err := r.Allow([]Check{{Limit: wide, Key: []byte("{t}:wide:")}, {Limit: narrow, Key: []byte("{t}:narrow:")}})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !req() {
		t.Fatal("first request denied")
	}
	for range 10 {
		if req() {
			t.Fatal("narrow limit exhausted, request allowed")
		}
	}
	c := []Check{{Limit: wide, Key: []byte("{t}:wide:")}}
	if ok, _, _ := r.Allow(c); !ok || c[0].Remaining != 98 {
		t.Errorf("wide: allowed %v remaining %d, want allowed with 98 left", ok, c[0].Remaining)
	}
}

func TestRedisDownFailsFastThenRecovers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const timeout = 100 * time.Millisecond
	r := NewRedis(RedisConfig{Addrs: []string{srv.Addr}, Timeout: timeout})
	defer r.Close()
	lim := NewLimit(1000, time.Second, 1000)
	check := func() error {
		_, _, err := r.Allow([]Check{{Limit: lim, Key: []byte("{t}:l:k")}})
		return err
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	var fast int
	for range 20 {
		start := time.Now()
		err := check()
		if took := time.Since(start); took > timeout+100*time.Millisecond {
			t.Errorf("a check against a dead Redis took %v, want at most the timeout %v plus slack", took, timeout)
		}
		if err == nil {
			t.Fatal("check succeeded against a dead Redis")
		}
		if errors.Is(err, ErrUnavailable) {
			fast++
		}
	}
	if fast < 15 {
		t.Errorf("%d of 20 checks failed fast, want the breaker open after 3 failures", fast)
	}
	if st := r.Stats(); st.Breaker != "open" || st.Errors < 3 || st.FastFails == 0 {
		t.Errorf("stats %+v, want breaker open with errors and fast fails counted", st)
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for check() != nil {
		if time.Now().After(deadline) {
			t.Fatal("no recovery within 5s of Redis coming back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := r.Stats(); st.Breaker != "closed" {
		t.Errorf("after recovery the breaker is %s, want closed", st.Breaker)
	}
}

// TestRedisClusterBreakerPerSlot runs GCRA on a three-master Redis Cluster
// and kills the master of one key's slot: that key fails fast once its
// slot's breaker opens, while a key on a live master is still decided by
// Redis. Slot agrees with the cluster's CLUSTER KEYSLOT.
func TestRedisClusterBreakerPerSlot(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	const timeout = 200 * time.Millisecond
	r := NewRedis(RedisConfig{Addrs: cl.Addrs, Cluster: true, Timeout: timeout})
	defer r.Close()
	var deadKey, liveKey string
	for i := 0; deadKey == "" || liveKey == ""; i++ {
		k := fmt.Sprintf("{t%d}:l:k", i)
		switch cl.NodeFor(k) {
		case 0:
			deadKey = k
		case 1:
			liveKey = k
		}
	}
	for _, k := range []string{deadKey, liveKey, "{x}:a", "plain"} {
		want, err := r.Client().ClusterKeySlot(context.Background(), k).Result()
		if err != nil || int64(redisslot.Of(k)) != want {
			t.Errorf("redisslot.Of(%q) = %d, CLUSTER KEYSLOT %d (err %v)", k, redisslot.Of(k), want, err)
		}
	}
	lim := NewLimit(1000, time.Second, 1000)
	check := func(key string) error {
		_, _, err := r.Allow([]Check{{Limit: lim, Key: []byte(key)}, {Limit: lim, Key: []byte(key + ":2")}})
		return err
	}
	for _, k := range []string{deadKey, liveKey} {
		if err := check(k); err != nil {
			t.Fatalf("%s before the kill: %v", k, err)
		}
	}
	cl.Nodes[0].Kill()
	fast := 0
	for range 20 {
		start := time.Now()
		err := check(deadKey)
		if took := time.Since(start); took > timeout+100*time.Millisecond {
			t.Errorf("a check on the dead master took %v, want at most the timeout %v plus slack", took, timeout)
		}
		if err == nil {
			t.Fatal("check succeeded on a dead master")
		}
		if errors.Is(err, ErrUnavailable) {
			fast++
		}
		if err := check(liveKey); err != nil {
			t.Errorf("key on a live master: %v", err)
		}
	}
	if fast < 15 {
		t.Errorf("%d of 20 checks on the dead master failed fast, want its slot's breaker open after 3 failures", fast)
	}
	if got := r.BreakerFor(deadKey); got != "open" {
		t.Errorf("breaker of the dead master's slot %s, want open", got)
	}
	if got := r.BreakerFor(liveKey); got != "closed" {
		t.Errorf("breaker of a live master's slot %s, want closed", got)
	}
	if st := r.Stats(); st.Breaker != "open" {
		t.Errorf("Stats().Breaker %s, want open (the worst slot)", st.Breaker)
	}
}

// TestRedisSyncOneRoundTrip syncs keys of several tenants (several slots,
// several masters on a cluster) in one Sync: each key is charged, each
// instance id is counted once as a member, and a Redis that lost its
// scripts is answered all the same.
func TestRedisSyncOneRoundTrip(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", cluster), func(t *testing.T) {
			t.Parallel()
			var addrs []string
			if cluster {
				addrs = redistest.StartCluster(t).Addrs
			} else {
				addrs = []string{redistest.Start(t).Addr}
			}
			r := NewRedis(RedisConfig{Addrs: addrs, Cluster: cluster, Timeout: time.Second})
			defer r.Close()
			lim := NewLimit(1, time.Second, 100) // 1s a request
			var names []string
			for i := range 6 {
				names = append(names, fmt.Sprintf("{t%d}:l:a", i), fmt.Sprintf("{t%d}:l:b", i))
			}
			sync := func(id string, n int64) []SyncKey {
				keys := make([]SyncKey, len(names))
				for i, k := range names {
					keys[i] = SyncKey{Limit: lim, Key: []byte(k), N: n, Lifetime: time.Minute}
				}
				r.Sync(id, keys)
				return keys
			}
			check := func(keys []SyncKey, members int64, reset time.Duration) {
				t.Helper()
				for _, k := range keys {
					if k.Err != nil || k.Members != members || k.Reset < reset-time.Second || k.Reset > reset {
						t.Errorf("%s: reset %v members %d err %v; want reset about %v, %d members", k.Key, k.Reset, k.Members, k.Err, reset, members)
					}
				}
			}
			check(sync("a", 3), 1, 3*time.Second)
			check(sync("b", 2), 2, 5*time.Second)
			if err := r.Client().ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			check(sync("a", 0), 2, 5*time.Second)
		})
	}
}
