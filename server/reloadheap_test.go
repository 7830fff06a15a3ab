//go:build !race

// The race detector's shadow memory and its randomised sync.Pool make heap
// figures meaningless; TestReloadLeavesNothingBehind checks goroutines and
// VMs under -race.

package server

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// heapScript is reloadScript's twin whose middleware calls 12 Lua
// functions deep on every request: deeper than one segment of gopher-lua's
// call stack, so requests take segments from its process-wide pool and
// give them back (see luavm/frames.go).
const heapScript = `
local function down(n)
  if n == 0 then return "%s" end
  return down(n - 1)
end
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    w:Header():Set("X-Script-Version", down(12))
    next(w, req)
  end
end)
r:Post("/echo", function(w, req) keystone.Proxy("api")(w, req) end)
r:Get("/hello", function(w, req) w:Write("hello") end)
return r
`

// heapConfig is a config of 150 tenants, 5 of them scripted, the api
// tenant on upstream up, and every tenth one on an upstream whose port
// depends on version: each reload between the two versions changes the
// scripts' tenants and 15 upstreams, and keeps the rest.
func heapConfig(up string, version int) string {
	var y strings.Builder
	y.WriteString(luaBlock)
	y.WriteString("logging: {access_log: false}\ntenants:\n")
	fmt.Fprintf(&y, "  - name: api\n    path_prefix: /api\n    upstreams: [{url: %q}]\n", up)
	for i := range 5 {
		fmt.Fprintf(&y, "  - name: lua%d\n    path_prefix: /lua%d\n    script: app.lua\n", i, i)
	}
	for i := range 144 {
		port := 20000 + i
		if i%10 == 0 {
			port += version * 1000
		}
		fmt.Fprintf(&y, "  - name: t%d\n    domains: [t%d.example.com]\n    upstreams: [{url: \"http://127.0.0.1:%d\"}]\n", i, i, port)
	}
	return y.String()
}

// liveHeap is the heap in use by reachable objects, after two collections
// (the second frees what the first's finalizers and pool victims let go).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestReloadHeapReturnsToBaseline: 100 reloads alternating two configs and
// two scripts, with Lua requests (deeper than one call-stack segment) and
// proxied ones between them and throughout, leave every retired snapshot garbage and the
// live heap where it was after the first reloads. Before luavm cleared
// the call-stack segments gopher-lua pools, 3 to 7 retired snapshots stayed
// reachable through stale frames of closed VMs (issue 9).
func TestReloadHeapReturnsToBaseline(t *testing.T) {
	upA, upB := versionedUpstream(t, "A"), versionedUpstream(t, "B")
	script := func(v string) string { return fmt.Sprintf(heapScript, v) }
	d := newConfDir(t, heapConfig(upA.url(), 0), "scripts/app.lua", script("v1"))
	g := d.start(t)
	c := &fasthttp.HostClient{Addr: g.addr, MaxIdleConnDuration: time.Minute}
	defer c.CloseIdleConnections()
	check := func(i int, method, path, wantVersion string) {
		t.Helper()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(method)
		req.SetRequestURI("http://" + g.addr + path)
		req.SetBodyString("x")
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatalf("reload %d: %s %s: %v", i, method, path, err)
		}
		if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Script-Version")) != wantVersion {
			t.Fatalf("reload %d: %s %s: status %d, script version %q, want 200 from %s",
				i, method, path, resp.StatusCode(), resp.Header.Peek("X-Script-Version"), wantVersion)
		}
	}
	// reachable counts the snapshots made by the measured reloads that
	// are still reachable; the live one is among them.
	var reachable atomic.Int64
	reload := func(i int, track bool) {
		up, v := upA.url(), "v1"
		if i%2 == 1 {
			up, v = upB.url(), "v2"
		}
		d.write("keystone.yaml", heapConfig(up, i%2))
		d.write("scripts/app.lua", script(v))
		g.reload()
		if track {
			reachable.Add(1)
			runtime.AddCleanup(g.srv.snap.Load(), func(struct{}) { reachable.Add(-1) }, struct{}{})
		}
		for k := range 5 {
			check(i, "POST", fmt.Sprintf("/lua%d/echo", k), v)
			check(i, "GET", fmt.Sprintf("/lua%d/hello", k), v)
		}
	}

	// The first reloads fill what is made once and kept: metric series
	// per tenant and upstream (never dropped, the same names every
	// time), the connection pools of both upstream sets' tenants.
	for i := 1; i <= 4; i++ {
		reload(i, false)
	}
	g.srv.waitRetired()
	base := liveHeap()

	// Two clients more on the Lua routes throughout: requests on other
	// goroutines take and give back call-stack segments meanwhile.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var background atomic.Int64
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &fasthttp.HostClient{Addr: g.addr, MaxConns: 1}
			defer c.CloseIdleConnections()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req.Header.SetMethod("POST")
				req.SetRequestURI(fmt.Sprintf("http://%s/lua%d/echo", g.addr, k))
				req.SetBodyString("x")
				if err := c.DoTimeout(req, resp, 5*time.Second); err == nil && resp.StatusCode() == 200 {
					background.Add(1)
				}
			}
		}()
	}
	const reloads = 100
	for i := 5; i < 5+reloads; i++ {
		reload(i, true)
	}
	close(stop)
	wg.Wait()
	if background.Load() == 0 {
		t.Error("no background request succeeded")
	}
	g.srv.waitRetired()
	// Cleanups run on their own goroutine once a collection freed
	// their snapshot.
	deadline := time.Now().Add(5 * time.Second)
	for reachable.Load() > 1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := reachable.Load() - 1; n != 0 {
		t.Errorf("%d of %d retired snapshots still reachable", n, reloads-1)
	}
	after := liveHeap()
	t.Logf("live heap %.1f MiB after 4 reloads, %.1f MiB after %d more", mib(base), mib(after), reloads)
	// A retired snapshot of this config holds several MiB; the margin
	// is for the allocator's own caches and the test's garbage.
	if limit := base + base/2 + 4<<20; after > limit {
		t.Errorf("live heap %.1f MiB after %d reloads, %.1f MiB before: above the %.1f MiB bound", mib(after), reloads, mib(base), mib(limit))
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
