package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// clusterYAML is the shared block of a gateway on cl.
func clusterYAML(cl *redistest.Cluster, rest string) string {
	return fmt.Sprintf(`shared: {store: redis, redis: {addrs: ["%s"]%s}}`, strings.Join(cl.Addrs, `", "`), rest)
}

// tenantOn returns a tenant name, prefix followed by a number, whose
// "{name}" hash tag falls on node i of cl.
func tenantOn(t *testing.T, cl *redistest.Cluster, prefix string, i int) string {
	t.Helper()
	for n := range 1000 {
		name := fmt.Sprintf("%s%d", prefix, n)
		if cl.NodeFor("{"+name+"}") == i {
			return name
		}
	}
	t.Fatalf("no tenant name %s<n> hashes to node %d", prefix, i)
	return ""
}

// nodeHas reports whether node i of cl itself (not through a cluster
// client, which would follow MOVED) holds key.
func nodeHas(t *testing.T, cl *redistest.Cluster, i int, key string) bool {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: cl.Addrs[i], Protocol: 2, DisableIdentity: true})
	defer c.Close()
	n, err := c.Exists(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("EXISTS %s on node %s: %v", key, cl.Addrs[i], err)
	}
	return n == 1
}

// TestRateLimitClusterTwoInstancesStrict runs two gateways on a
// three-master Redis Cluster (shared.redis.addrs), loads both above a
// tenant-wide limit for 10s with three strict limits on every request
// (one EVALSHA over three keys, which Redis Cluster allows only when they
// share a hash slot), and counts what both allowed together: within ±5%
// of rate × elapsed + burst, as on one Redis. The buckets must be on the
// master of the tenant's slot. It runs alone: it measures accuracy.
func TestRateLimitClusterTwoInstancesStrict(t *testing.T) {
	cl := redistest.StartCluster(t)
	up := startEcho(t, "up")
	// A tenant whose slot is not on the seed node the client asks first,
	// so every call goes through the client's slot map.
	name := tenantOn(t, cl, "api", 2)
	yaml := yamlf(`
logging: {access_log: false}
%s
tenants:
  - name: %s
    path_prefix: /
    upstreams: [{url: %q}]
    rate_limits:
      - {name: whole, key: tenant, rate: 100, per: 1s, burst: 50}
      - {name: per-ip, key: client_ip, rate: 10000, per: 1h, burst: 10000}
      - {name: per-team, key: "header:X-Team", rate: 10000, per: 1h, burst: 10000}
`, clusterYAML(cl, ", timeout: 500ms"), name, up.url())
	a, b := startGateway(t, yaml), startGateway(t, yaml)
	r := hammer(t, []string{a.addr, b.addr}, "/x", 4, 8*time.Millisecond, 10*time.Second)
	base := 100*r.elapsed.Seconds() + 50
	t.Logf("cluster strict: allowed %d, limited %d, unavailable %d, other %d in %v; rate × elapsed + burst = %.0f",
		r.ok, r.limited, r.unavailable, r.other, r.elapsed, base)
	if r.other != 0 || r.unavailable != 0 {
		t.Errorf("%d failed and %d unavailable answers", r.other, r.unavailable)
	}
	if !within(float64(r.ok), base, 0.05) {
		t.Errorf("allowed %d, want %.0f ±5%%", r.ok, base)
	}
	for _, k := range []string{"whole:", "per-ip:127.0.0.1", "per-team:_none"} {
		key := "ks:rl:{" + name + "}:" + k
		if !nodeHas(t, cl, 2, key) {
			t.Errorf("bucket %s is not on node 2, the master of its slot", key)
		}
	}
	st := a.srv.limitsStatus(a.srv.snap.Load().byName[name])
	if st.Redis == nil || st.Redis.Errors != 0 || st.OnError != 0 {
		t.Errorf("admin limits %+v, want no Redis errors and no on_error decisions", st.Redis)
	}
}

// TestScriptStoreAndLimitThroughCluster is TestScriptStoreSharedThroughRedis
// on a Redis Cluster: keystone.store written through one gateway is read
// through the other, Incr counts across both, keystone.limit.Allow shares
// one bucket, and each tenant's keys are on the master of its own slot.
func TestScriptStoreAndLimitThroughCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	yaml := sharedYAML(clusterYAML(cl, ", timeout: 1s"))
	a, b := startStoreSharingPair(t, yaml)
	body(t, b, "/other/set/greeting?v=other")
	for i, want := range []string{"true 1 0", "true 0 0", "false 0 3600"} {
		g := []*gateway{a, b, a}[i]
		if _, v := body(t, g, "/s/limit/k"); v != want {
			t.Errorf("limit call %d: %q, want %q", i+1, v, want)
		}
	}
	for _, k := range []string{"ks:store:{s}:greeting", "ks:store:{s}:n", "ks:rl:{s}:lua:k", "ks:store:{other}:greeting"} {
		if i := cl.NodeFor(k); !nodeHas(t, cl, i, k) {
			t.Errorf("%s is not on node %d, the master of its slot", k, i)
		}
	}
	if cl.NodeFor("{s}") == cl.NodeFor("{other}") {
		t.Log("tenants s and other share a node: the test still passes, but shows less")
	}
}

// TestRateLimitClusterNodeKilled kills the master of one tenant's slot
// under load. That tenant's requests get the configured on_error answer
// (deny: 503), none slower than timeout plus a small slack; a tenant
// whose slot is on a live master goes on being limited by Redis, not by
// on_error; and when the node comes back (with its slots, empty) both
// are limited by Redis again without a gateway restart. It runs alone:
// it asserts latencies.
func TestRateLimitClusterNodeKilled(t *testing.T) {
	cl := redistest.StartCluster(t)
	up := startEcho(t, "up")
	dead, live := tenantOn(t, cl, "dead", 1), tenantOn(t, cl, "live", 2)
	const timeout = 200 * time.Millisecond
	g := startGateway(t, yamlf(`
logging: {access_log: false}
%s
tenants:
  - name: %s
    path_prefix: /dead
    upstreams: [{url: %[3]q}]
    rate_limits:
      - {name: per-ip, key: client_ip, rate: 50, per: 1s, burst: 5}
  - name: %s
    path_prefix: /live
    upstreams: [{url: %[3]q}]
    rate_limits:
      - {name: per-ip, key: client_ip, rate: 50, per: 1s, burst: 5}
`, clusterYAML(cl, fmt.Sprintf(", timeout: %s, on_error: deny", timeout)), dead, up.url(), live))
	type pair struct{ dead, live hammerResult }
	run := func(d time.Duration) pair {
		var p pair
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.live = hammer(t, []string{g.addr}, "/live/x", 2, 5*time.Millisecond, d)
		}()
		p.dead = hammer(t, []string{g.addr}, "/dead/x", 2, 5*time.Millisecond, d)
		<-done
		return p
	}
	var phases [3]pair
	phases[0] = run(time.Second)
	cl.Nodes[1].Kill()
	phases[1] = run(2 * time.Second)
	// One breaker per slot: the dead master's is open, so its tenant's
	// requests fail fast instead of each waiting the timeout; the live
	// tenant's slot is untouched.
	snap := g.srv.snap.Load()
	if st := g.srv.limitsStatus(snap.byName[dead]); st.Redis.Breaker == "closed" {
		t.Errorf("dead tenant's breaker %s during the outage, want open", st.Redis.Breaker)
	}
	if st := g.srv.limitsStatus(snap.byName[live]); st.Redis.Breaker != "closed" {
		t.Errorf("live tenant's breaker %s during the outage, want closed", st.Redis.Breaker)
	}
	cl.Nodes[1].Restart()
	cl.WaitOK(t, 20*time.Second)
	eventually(t, 5*time.Second, "the dead tenant to be limited by Redis again", func() bool {
		return g.get("/dead/x").StatusCode() != 503
	})
	phases[2] = run(2 * time.Second)
	for i, p := range phases {
		for _, r := range []struct {
			name string
			h    hammerResult
		}{{"dead", p.dead}, {"live", p.live}} {
			t.Logf("phase %d, %s tenant: ok %d limited %d unavailable %d other %d slowest %v",
				i, r.name, r.h.ok, r.h.limited, r.h.unavailable, r.h.other, r.h.slowest)
			if r.h.slowest > timeout+100*time.Millisecond {
				t.Errorf("phase %d, %s tenant: slowest request %v, want at most timeout %v plus 100ms", i, r.name, r.h.slowest, timeout)
			}
			if r.h.other != 0 {
				t.Errorf("phase %d, %s tenant: %d failed answers", i, r.name, r.h.other)
			}
		}
	}
	// Redis decides while the tenant's master is up: limiting, at most
	// rate × elapsed + burst allowed, and (on a starved machine) at most
	// 1% of commands past the timeout.
	decided := func(what string, h hammerResult) {
		t.Helper()
		if total := h.ok + h.limited + h.unavailable; h.limited == 0 || h.unavailable*100 > total {
			t.Errorf("%s: %d limited, %d unavailable of %d; want limiting and at most 1%% 503", what, h.limited, h.unavailable, total)
		}
		if most := 50*h.elapsed.Seconds() + 5 + 1; float64(h.ok) > most {
			t.Errorf("%s: %d allowed in %v, want at most %.0f", what, h.ok, h.elapsed, most)
		}
	}
	decided("before the kill, dead tenant", phases[0].dead)
	decided("before the kill, live tenant", phases[0].live)
	decided("node down, live tenant", phases[1].live)
	decided("after the restart, dead tenant", phases[2].dead)
	decided("after the restart, live tenant", phases[2].live)
	if d := phases[1].dead; d.ok != 0 || d.unavailable == 0 || d.limited != 0 {
		t.Errorf("node down, on_error deny: dead tenant %d allowed, %d limited, %d 503; want only 503", d.ok, d.limited, d.unavailable)
	}
	// Two clients pausing 5ms for 2s send about 400 requests when most
	// fail fast, about 20 when each waits the 200ms timeout.
	if d := phases[1].dead; d.unavailable < 100 {
		t.Errorf("node down: only %d requests of the dead tenant in 2s; they are waiting the timeout instead of failing fast", d.unavailable)
	}
}

// membersOf is the member count s decides key on (0: not synced yet).
func membersOf(s *syncer, key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pending[key]; ok {
		return p.members
	}
	return 0
}

// TestRateLimitLocalFirstShare runs two gateways with a local_first
// tenant-wide limit (rate 100/s, burst 50, sync 100ms) on one Redis and on
// a Redis Cluster. Each instance decides on its share, rate/N with N the
// instances that synced the key within their member lifetime, so once
// both know N = 2, together they allow at most rate × T + burst (the bound
// docs/configuration.md states; GCRA on one share allows at most
// (rate × T + burst)/N) and, under even load, not below 95% of it. Loaded
// alone, one instance gets the whole rate once the idle one's membership
// has lapsed; with Redis killed, both go on deciding on their shares,
// within the same bound. It runs alone: it measures accuracy.
func TestRateLimitLocalFirstShare(t *testing.T) {
	for _, store := range []string{"redis", "cluster"} {
		t.Run(store, func(t *testing.T) {
			var shared string
			var kill func()
			name := "api"
			if store == "redis" {
				srv := redistest.Start(t)
				shared = fmt.Sprintf("shared: {store: redis, redis: {addr: %q, timeout: 500ms}}", srv.Addr)
				kill = srv.Kill
			} else {
				cl := redistest.StartCluster(t)
				shared = clusterYAML(cl, ", timeout: 500ms")
				name = tenantOn(t, cl, "api", 1)
				kill = cl.Nodes[1].Kill
			}
			up := startEcho(t, "up")
			yaml := yamlf(`
logging: {access_log: false}
%s
tenants:
  - name: %s
    path_prefix: /
    upstreams: [{url: %q}]
    rate_limits:
      - {name: whole, key: tenant, rate: 100, per: 1s, burst: 50, mode: local_first, sync: 100ms}
`, shared, name, up.url())
			a, b := startGateway(t, yaml), startGateway(t, yaml)
			key := "{" + name + "}:whole:"
			// A few requests each make both members; once each has
			// synced and seen the other, wait for the bucket to refill
			// (burst/rate = 0.5s).
			eventually(t, 5*time.Second, "both instances to count two members", func() bool {
				a.get("/warm")
				b.get("/warm")
				return membersOf(a.srv.limits.syncer, key) == 2 && membersOf(b.srv.limits.syncer, key) == 2
			})
			time.Sleep(600 * time.Millisecond)

			r := hammer(t, []string{a.addr, b.addr}, "/x", 4, 8*time.Millisecond, 10*time.Second)
			bound := 100*r.elapsed.Seconds() + 50
			worst := time.Duration(max(a.srv.limits.syncer.worst.Load(), b.srv.limits.syncer.worst.Load()))
			t.Logf("%s, even load: allowed %d, limited %d, other %d in %v; bound rate × T + burst = %.0f; longest sync interval %v",
				store, r.ok, r.limited, r.other, r.elapsed, bound, worst)
			if r.other != 0 || r.unavailable != 0 {
				t.Errorf("%d failed and %d unavailable answers", r.other, r.unavailable)
			}
			if float64(r.ok) > bound+1 || float64(r.ok) < 0.95*bound {
				t.Errorf("even load: allowed %d, want between %.0f and the bound %.0f", r.ok, 0.95*bound, bound)
			}

			// Only a is loaded: b's membership lapses after its
			// lifetime (1s at sync 100ms), then a decides on the whole
			// limit.
			r = hammer(t, []string{a.addr}, "/x", 4, 4*time.Millisecond, 5*time.Second)
			lifetime := memberLifetime(int64(100 * time.Millisecond))
			low := 100 * (r.elapsed - lifetime - 200*time.Millisecond).Seconds()
			t.Logf("%s, one instance loaded: allowed %d, limited %d in %v; want at least %.0f, at most %.0f",
				store, r.ok, r.limited, r.elapsed, low, 100*r.elapsed.Seconds()+50)
			if float64(r.ok) < low || float64(r.ok) > 100*r.elapsed.Seconds()+50+1 {
				t.Errorf("one instance loaded: allowed %d, want between %.0f and %.0f", r.ok, low, 100*r.elapsed.Seconds()+50)
			}
			if n := membersOf(a.srv.limits.syncer, key); n != 1 {
				t.Errorf("loaded alone, a counts %d members, want 1", n)
			}

			// Both loaded again until both count two, then the
			// tenant's Redis dies: each instance keeps its share.
			eventually(t, 5*time.Second, "both instances to count two members again", func() bool {
				a.get("/warm")
				b.get("/warm")
				return membersOf(a.srv.limits.syncer, key) == 2 && membersOf(b.srv.limits.syncer, key) == 2
			})
			kill()
			r = hammer(t, []string{a.addr, b.addr}, "/x", 4, 8*time.Millisecond, 3*time.Second)
			bound = 100*r.elapsed.Seconds() + 50
			t.Logf("%s, Redis down: allowed %d, limited %d, other %d in %v; bound %.0f", store, r.ok, r.limited, r.other, r.elapsed, bound)
			if r.other != 0 || r.unavailable != 0 || float64(r.ok) > bound+1 || float64(r.ok) < 0.9*100*r.elapsed.Seconds() {
				t.Errorf("Redis down: allowed %d (%d failed, %d unavailable), want between %.0f and %.0f",
					r.ok, r.other, r.unavailable, 0.9*100*r.elapsed.Seconds(), bound)
			}
		})
	}
}
