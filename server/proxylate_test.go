package server

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// keystone.Proxy(url) with a URL first seen at request time (issue 8 §4):
// the pool is built once per URL under the snapshot's lock, owned and
// closed by the snapshot, and their number is bounded.

const lateProxyLua = `
local r = chi.NewRouter()
r:Get("/to/{port}", function(w, req)
  keystone.Proxy("http://127.0.0.1:" .. req:URLParam("port"))(w, req)
end)
return r
`

// TestProxyToURLsFirstSeenAtRequestTime hammers a script that proxies to a
// URL taken from the request, many distinct URLs from many goroutines at
// once (run it with -race): every request reaches its upstream, and each
// URL has exactly one pool in the snapshot.
func TestProxyToURLsFirstSeenAtRequestTime(t *testing.T) {
	t.Parallel()
	const upstreams, workers, rounds = 12, 8, 3
	var echoes []*echo
	for i := range upstreams {
		echoes = append(echoes, startEcho(t, "e"+strconv.Itoa(i)))
	}
	g := startGateway(t, luaBlock+`
logging: {access_log: false}
tenants:
  - name: front
    path_prefix: /
    script: late.lua
`, "scripts/late.lua", lateProxyLua)
	c := newClient(t, g)
	var failed atomic.Int64
	var first sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				for i := range upstreams {
					e := echoes[(i+w+r)%upstreams]
					_, port, _ := strings.Cut(e.addr, "127.0.0.1:")
					res := c.get("/to/" + port)
					if res.from() != e.id {
						failed.Add(1)
						first.Do(func() { t.Errorf("GET /to/%s: %v, want an answer from %s", port, res, e.id) })
					}
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests did not reach their upstream", n, workers*rounds*upstreams)
	}
	for _, e := range echoes {
		if n := e.requests.Load(); n != workers*rounds {
			t.Errorf("%s got %d requests, want %d", e.id, n, workers*rounds)
		}
	}
	snap := g.srv.snap.Load()
	if n := snap.scriptPools.count(); n != upstreams {
		t.Errorf("the snapshot holds %d pools made at request time, want one per URL (%d)", n, upstreams)
	}
}

// TestProxyToURLsFirstSeenAtRequestTimeIsBounded asks for more distinct
// URLs at request time than the snapshot keeps pools for: past the bound
// the script fails with a clear error (a 500 and a log line naming the
// limit), and no pool is made.
func TestProxyToURLsFirstSeenAtRequestTimeIsBounded(t *testing.T) {
	t.Parallel()
	g := startGateway(t, luaBlock+`
tenants:
  - name: front
    path_prefix: /
    script: late.lua
`, "scripts/late.lua", lateProxyLua)
	c := newClient(t, g)
	// Closed ports: each request gets a 502, but makes a pool.
	ports := deadURLs(t, maxLateProxyPools+1)
	for i, u := range ports {
		_, ports[i], _ = strings.Cut(u, "127.0.0.1:")
	}
	for _, port := range ports[:maxLateProxyPools] {
		if r := c.get("/to/" + port); r.status != 502 {
			t.Fatalf("URL with port %s: %v, want 502 from the closed port", port, r)
		}
	}
	r := c.get("/to/" + ports[maxLateProxyPools])
	if r.status != 500 {
		t.Fatalf("URL past the bound: %v, want 500", r)
	}
	if !strings.Contains(g.logs.String(), "first seen at request time") {
		t.Errorf("no log line explains the bound:\n%s", g.logs.String())
	}
	if n := g.srv.snap.Load().scriptPools.count(); n != maxLateProxyPools {
		t.Errorf("%d pools made at request time, want the bound %d", n, maxLateProxyPools)
	}
	// A URL seen before still works past the bound.
	if r := c.get("/to/" + ports[0]); r.status != 502 {
		t.Errorf("a URL with a pool, past the bound: %v, want its 502", r)
	}
}
