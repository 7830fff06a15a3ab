package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/internal/redisslot"
	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of three masters and no replicas, each a
// redis-server owned by the test. Node i serves the slots
// [i*16384/3, (i+1)*16384/3). A killed node stays a member: the others
// mark it failed only after cluster-node-timeout (Redis's default 15s),
// so for a shorter test the slots of the other nodes keep working, and a
// restarted node comes back with its slots (its nodes.conf survives) and
// no data.
type Cluster struct {
	// Addrs are host:port of the nodes, the seed list of a cluster client.
	Addrs []string
	// Nodes are the servers, Nodes[i] at Addrs[i].
	Nodes []*Server
}

// StartCluster starts three cluster-enabled redis-servers on free loopback
// ports (client and cluster-bus ports both chosen free), assigns the slots
// and joins them (what redis-cli --cluster create does, done with
// CLUSTER ADDSLOTS, SET-CONFIG-EPOCH and MEET so it needs only
// redis-server), and waits until every node reports cluster_state:ok. It
// skips or fails as Start does without redis-server.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	need(t)
	dir := t.TempDir()
	const n = 3
	cl := &Cluster{}
	var buses []int
	for range n {
		bus := freePort(t)
		buses = append(buses, bus)
		s := startServer(t, func(port int) []string {
			return []string{"--cluster-enabled", "yes",
				"--cluster-config-file", fmt.Sprintf("%s/nodes-%d.conf", dir, port),
				"--cluster-port", strconv.Itoa(bus), "--dir", dir}
		})
		cl.Nodes = append(cl.Nodes, s)
		cl.Addrs = append(cl.Addrs, s.Addr)
	}
	ctx := context.Background()
	for i, s := range cl.Nodes {
		c := redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2, DisableIdentity: true})
		lo, hi := i*redisslot.Count/n, (i+1)*redisslot.Count/n
		args := []any{"CLUSTER", "ADDSLOTS"}
		for slot := lo; slot < hi; slot++ {
			args = append(args, slot)
		}
		err := c.Do(ctx, args...).Err()
		if err == nil {
			// Distinct epochs, as redis-cli sets them, so the nodes
			// agree on the slot map at once instead of resolving an
			// epoch collision first.
			err = c.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err()
		}
		if err == nil && i > 0 {
			// The bus port is not the default port+10000: name it.
			host, port, _ := strings.Cut(cl.Nodes[0].Addr, ":")
			err = c.Do(ctx, "CLUSTER", "MEET", host, port, buses[0]).Err()
		}
		c.Close()
		if err != nil {
			t.Fatalf("setting up cluster node %s: %v", s.Addr, err)
		}
	}
	cl.WaitOK(t, 20*time.Second)
	return cl
}

// WaitOK waits until every live node reports cluster_state:ok and knows
// every node, failing the test after within.
func (cl *Cluster) WaitOK(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, s := range cl.Nodes {
		if !s.running() {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2, DisableIdentity: true})
		for {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", len(cl.Nodes))) {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("cluster node %s not ok within %v: %v\n%s", s.Addr, within, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.Close()
	}
}

// NodeFor returns the index in Nodes of the master serving key's slot.
func (cl *Cluster) NodeFor(key string) int {
	slot, n := int(redisslot.Of(key)), len(cl.Nodes)
	for i := range n {
		if slot < (i+1)*redisslot.Count/n {
			return i
		}
	}
	return n - 1
}

func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}
