package redistest

import (
	"context"
	"fmt"
	"testing"

	"github.com/keystone-gateway/keystone/internal/redisslot"
	"github.com/redis/go-redis/v9"
)

// TestClusterServesEverySlot starts a cluster and checks, against the
// nodes themselves, that Slot agrees with CLUSTER KEYSLOT, that NodeFor
// names the master CLUSTER SLOTS gives, and that a cluster client reads
// its writes on keys spread over every node.
func TestClusterServesEverySlot(t *testing.T) {
	t.Parallel()
	cl := StartCluster(t)
	ctx := context.Background()
	node := redis.NewClient(&redis.Options{Addr: cl.Addrs[0], Protocol: 2, DisableIdentity: true})
	defer node.Close()
	slots, err := node.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner := func(slot int) string {
		for _, s := range slots {
			if slot >= int(s.Start) && slot <= int(s.End) {
				return s.Nodes[0].Addr
			}
		}
		return ""
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	seen := make(map[int]bool)
	for i := range 64 {
		key := fmt.Sprintf("k%d", i)
		if i%8 == 0 {
			key = fmt.Sprintf("ks:rl:{tenant-%d}:per-ip:10.0.0.1", i)
		}
		want, err := node.ClusterKeySlot(ctx, key).Result()
		if err != nil || int64(redisslot.Of(key)) != want {
			t.Fatalf("redisslot.Of(%q) = %d, CLUSTER KEYSLOT says %d (err %v)", key, redisslot.Of(key), want, err)
		}
		n := cl.NodeFor(key)
		if got := owner(int(want)); got != cl.Addrs[n] {
			t.Errorf("NodeFor(%q) = %s, CLUSTER SLOTS says %s", key, cl.Addrs[n], got)
		}
		seen[n] = true
		if err := c.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("set %q: %v", key, err)
		}
		if v, err := c.Get(ctx, key).Int(); err != nil || v != i {
			t.Errorf("get %q: %d, %v; want %d", key, v, err, i)
		}
	}
	if len(seen) != len(cl.Nodes) {
		t.Errorf("64 keys landed on %d nodes, want all %d", len(seen), len(cl.Nodes))
	}
}
