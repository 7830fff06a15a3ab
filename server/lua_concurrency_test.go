package server

import (
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Issue 14: a Lua middleware in front of keystone.Proxy, with a slow
// upstream, at production concurrency, on the default lua settings.

const concurrencyMiddlewareLua = `
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    req:Header():Set("X-Gateway", "keystone")
    next(w, req)
    w:Header():Set("X-Served-By", "keystone")
  end
end)
r:Handle("/*", keystone.Proxy())
return r
`

// raceEnabled reports whether the test binary was built with -race: the
// load tests scale down under the race detector's CPU cost.
var raceEnabled = func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}()

// slowUpstream is a loopback upstream that answers after delay, or, when
// hold is set, once hold is closed. inflight counts requests it holds.
type slowUpstream struct {
	addr     string
	delay    time.Duration
	hold     chan struct{}
	inflight atomic.Int64
}

func startSlowUpstream(t *testing.T, delay time.Duration, hold chan struct{}) *slowUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &slowUpstream{addr: ln.Addr().String(), delay: delay, hold: hold}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		u.inflight.Add(1)
		if u.hold != nil {
			<-u.hold
		} else {
			time.Sleep(u.delay)
		}
		u.inflight.Add(-1)
		ctx.SetBodyString("slow upstream")
	}}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

// concurrencyGateway serves two tenants in front of the same upstream: a
// plain one under /plain and one with the middleware script under /lua,
// on the default lua settings except those given in lua (a YAML map
// body, or "").
func concurrencyGateway(t *testing.T, upstream, lua string) *gateway {
	t.Helper()
	return startGateway(t, yamlf(`
logging: {access_log: false, level: warn}
lua: {%s}
tenants:
  - name: plain
    path_prefix: /plain
    upstreams: [{url: "http://%s"}]
    pool: {max_conns: 2048, idle_timeout: 200ms}
  - name: lua
    path_prefix: /lua
    script: mw.lua
    upstreams: [{url: "http://%s"}]
    pool: {max_conns: 2048, idle_timeout: 200ms}
`, lua, upstream, upstream), "mw.lua", concurrencyMiddlewareLua)
}

// loadResult is what one side of a closed-loop load saw.
type loadResult struct {
	ok, errs atomic.Int64
	first    atomic.Pointer[string]
}

func (r *loadResult) fail(msg string) {
	r.errs.Add(1)
	r.first.CompareAndSwap(nil, &msg)
}

// closedLoop runs clients keep-alive connections to uri, each sending its
// next request when the previous answer arrived, until stop; each answer
// must be the upstream's, through the middleware when lua is set.
func closedLoop(g *gateway, uri string, clients int, lua bool, stop <-chan struct{}, res *loadResult, wg *sync.WaitGroup) {
	c := &fasthttp.HostClient{Addr: g.addr, MaxConns: clients, MaxConnWaitTimeout: 5 * time.Second}
	// Before the gateway shuts down (cleanups run last first), so the
	// clients' connections do not outlive the test.
	g.t.Cleanup(c.CloseIdleConnections)
	for range clients {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + g.addr + uri)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
					res.fail(err.Error())
					continue
				}
				if resp.StatusCode() != 200 || string(resp.Body()) != "slow upstream" ||
					(lua && string(resp.Header.Peek("X-Served-By")) != "keystone") {
					res.fail(fmt.Sprintf("%d %q", resp.StatusCode(), resp.Body()))
					continue
				}
				res.ok.Add(1)
			}
		})
	}
}

// TestLuaSlowUpstreamKeepsUpWithPlainTenant is issue 14's load test: on
// the default lua settings (2 cores: pool_size 2, max_vms 64), 1,000
// keep-alive clients against a Lua middleware + keystone.Proxy route whose
// upstream answers in 200ms, for 10s, side by side with 1,000 clients of
// a plain tenant on the same upstream: no error, and the Lua route's
// throughput at least 0.95 of the plain one's. Both loads run at once, so
// a busy machine slows both alike; the comparison is a ratio, never an
// absolute figure. (Run one after the other on a saturated machine, the
// ratio measures CPU per request instead: the load is then CPU-bound, not
// bound by the upstream's 200ms.) Before the fix 94% of such requests got
// 503: each held a VM for the whole upstream wait, and waiting for one
// was charged to max_execution. With -race (or -short) the load is scaled
// down, the ratio only logged and max_execution raised to 2s, as the other
// Lua tests do: the race detector's CPU cost makes the run CPU-bound, and
// max_execution is wall-clock time while Lua runs.
func TestLuaSlowUpstreamKeepsUpWithPlainTenant(t *testing.T) {
	clients, dur, settings := 1000, 10*time.Second, ""
	scaled := raceEnabled || testing.Short()
	if scaled {
		clients, dur, settings = 100, 3*time.Second, "max_execution: 2s"
	}
	up := startSlowUpstream(t, 200*time.Millisecond, nil)
	g := concurrencyGateway(t, up.addr, settings)

	var plain, lua loadResult
	var wg sync.WaitGroup
	stop := make(chan struct{})
	closedLoop(g, "/plain/x", clients, false, stop, &plain, &wg)
	closedLoop(g, "/lua/x", clients, true, stop, &lua, &wg)
	time.Sleep(dur)
	close(stop)
	wg.Wait()

	st := g.srv.snap.Load().byName["lua"].script.Stats()
	t.Logf("%d clients each, %v: plain %d ok, lua %d ok (ratio %.3f); lua VMs created %d, live %d, threads %d, waits %d (%v), timeouts %d",
		clients, dur, plain.ok.Load(), lua.ok.Load(), float64(lua.ok.Load())/float64(max(1, plain.ok.Load())),
		st.VMsCreated, st.VMsLive, st.Threads, st.VMWaits, st.VMWaitTime, st.VMWaitTimeouts)
	for name, r := range map[string]*loadResult{"plain": &plain, "lua": &lua} {
		if n := r.errs.Load(); n != 0 {
			t.Errorf("%s: %d errors, first: %s", name, n, *r.first.Load())
		}
	}
	if plain.ok.Load() == 0 || (!scaled && float64(lua.ok.Load()) < 0.95*float64(plain.ok.Load())) {
		t.Errorf("Lua route served %d requests, plain %d: want at least 0.95 of plain", lua.ok.Load(), plain.ok.Load())
	}
}

// memSample is the heap and goroutine stacks in use, after collecting.
func memSample() (heap, stack int64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc), int64(m.StackInuse)
}

// holdInflight sends n concurrent requests to uri through the gateway,
// waits until the upstream holds all n, samples memory, then releases
// them and checks every answer.
func holdInflight(t *testing.T, g *gateway, up *slowUpstream, uri string, n int) (heap, stack int64) {
	t.Helper()
	up.hold = make(chan struct{})
	c := &fasthttp.HostClient{Addr: g.addr, MaxConns: n}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	var bad atomic.Int64
	var first atomic.Pointer[string]
	for range n {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + g.addr + uri)
			if err := c.DoTimeout(req, resp, 30*time.Second); err != nil || resp.StatusCode() != 200 {
				bad.Add(1)
				msg := fmt.Sprintf("%v %d %q", err, resp.StatusCode(), resp.Body())
				first.CompareAndSwap(nil, &msg)
			}
		})
	}
	eventually(t, 20*time.Second, fmt.Sprintf("%d requests held by the upstream", n), func() bool { return up.inflight.Load()+bad.Load() == int64(n) })
	heap, stack = memSample()
	close(up.hold)
	wg.Wait()
	if b := bad.Load(); b != 0 {
		t.Fatalf("%s: %d of %d requests failed, first: %s", uri, b, n, *first.Load())
	}
	return heap, stack
}

// TestLuaInflightRequestMemory measures what an in-flight Lua request
// costs beyond the same request on a plain tenant: 1,000 requests held
// at the upstream at once through each route in turn, the gateway's heap
// and goroutine stacks sampled while they are held (client and upstream
// run in this process too, alike for both routes, so they cancel out).
// Issue 14's target is at most 48 KiB per request (it was 143 KiB of RSS
// when each request held a VM). After the burst and lua.idle_vm_ttl
// (short here), the heap must be back within 20% of the idle baseline.
func TestLuaInflightRequestMemory(t *testing.T) {
	n := 1000
	if raceEnabled || testing.Short() {
		n = 200
	}
	up := startSlowUpstream(t, 0, nil)
	// max_execution as the other Lua tests: this one measures memory,
	// and a burst of 1,000 requests on a loaded machine can starve a Lua
	// run of CPU for longer than the default 50ms of wall-clock time.
	g := concurrencyGateway(t, up.addr, "idle_vm_ttl: 100ms, max_execution: 2s")
	script := func() luaStats { return luaStatsOf(g) }

	// The plain burst comes first: what it leaves behind once idle
	// (maps and pools sized for 1,000 connections) is the idle baseline
	// the Lua burst is then compared with.
	plainHeap, plainStack := holdInflight(t, g, up, "/plain/x", n)
	baseHeap := settledHeap(t, 0)
	luaHeap, luaStack := holdInflight(t, g, up, "/lua/x", n)
	perHeap := (luaHeap - plainHeap) / int64(n)
	perStack := (luaStack - plainStack) / int64(n)
	per := perHeap + perStack
	t.Logf("%d in flight: plain heap %d KiB stacks %d KiB, lua heap %d KiB stacks %d KiB",
		n, plainHeap>>10, plainStack>>10, luaHeap>>10, luaStack>>10)
	t.Logf("per in-flight Lua request beyond plain: %d B (heap %d, stacks %d)", per, perHeap, perStack)
	if per > 48<<10 {
		t.Errorf("an in-flight Lua request costs %d B beyond a plain one, want at most 48 KiB", per)
	}

	// After the burst: idle connections close (pool idle_timeout 200ms,
	// the clients closed theirs), and VMs and threads above pool_size go
	// after idle_vm_ttl.
	eventually(t, 10*time.Second, "the Lua pool back to pool_size", func() bool {
		st := script()
		return st.VMsLive == runtime.GOMAXPROCS(0) && st.Threads == runtime.GOMAXPROCS(0)
	})
	after := settledHeap(t, baseHeap)
	t.Logf("idle heap after the plain burst %d KiB, after the Lua burst and idle_vm_ttl %d KiB", baseHeap>>10, after>>10)
	if float64(after) > 1.2*float64(baseHeap) {
		t.Errorf("heap after the Lua burst %d KiB, want within 20%% of the idle baseline %d KiB", after>>10, baseHeap>>10)
	}
}

// settledHeap samples the heap until it stops falling (idle connections
// closing, pools emptying) or reaches target, for at most 10s, and
// returns the last sample.
func settledHeap(t *testing.T, target int64) int64 {
	t.Helper()
	last, _ := memSample()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		time.Sleep(300 * time.Millisecond)
		h, _ := memSample()
		if h <= target || (target == 0 && h >= last-last/100) {
			return h
		}
		last = h
	}
	return last
}

type luaStats struct{ VMsLive, Threads int }

func luaStatsOf(g *gateway) luaStats {
	st := g.srv.snap.Load().byName["lua"].script.Stats()
	return luaStats{VMsLive: st.VMsLive, Threads: st.Threads}
}

// TestLuaBusyAnswers503WithRetryAfter: past lua.max_memory a request
// queues for lua.vm_wait (not max_execution) and gets the gateway's JSON
// 503 with the request id and Retry-After; admin shows the wait.
func TestLuaBusyAnswers503WithRetryAfter(t *testing.T) {
	hold := make(chan struct{})
	up := startSlowUpstream(t, 0, hold)
	// pool_size 1 and 1MiB: one VM (128KiB) and 56 request threads
	// (16KiB each).
	const held = (1<<20 - 128<<10) / (16 << 10)
	// vm_wait leaves room for the held requests, which share the one VM
	// and may queue for it on a busy machine (under -race especially).
	// max_vms 1: a second VM, made while the first is busy, would take
	// 128KiB of the budget from the threads.
	g := concurrencyGateway(t, up.addr, "pool_size: 1, max_vms: 1, max_memory: 1MiB, vm_wait: 2s")
	// Runs before the gateway's cleanup, which would wait for the held
	// requests if the test stopped early.
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(hold) }) })
	var wg sync.WaitGroup
	for range held {
		wg.Go(func() {
			if resp := g.get("/lua/x"); resp.StatusCode() != 200 {
				t.Errorf("held request: %d %q", resp.StatusCode(), resp.Body())
			}
		})
	}
	eventually(t, 5*time.Second, "the budget's requests held", func() bool { return up.inflight.Load() == held })
	start := time.Now()
	resp := g.get("/lua/x")
	waited := time.Since(start)
	errorBody(t, resp, 503, "busy")
	if got := string(resp.Header.Peek("Retry-After")); got != "2" { // vm_wait, in whole seconds
		t.Errorf("Retry-After = %q, want 2", got)
	}
	if waited < 2*time.Second {
		t.Errorf("answered after %v, before vm_wait", waited)
	}
	release.Do(func() { close(hold) })
	wg.Wait()

	// The held requests share one VM, so some may have queued for it
	// briefly on a busy machine: at least one wait, exactly one timeout.
	admin := g.get("/admin/tenants")
	var ts []struct {
		Name string `json:"name"`
		Lua  *struct {
			VMWaits        uint64  `json:"vm_waits"`
			VMWaitSeconds  float64 `json:"vm_wait_seconds"`
			VMWaitTimeouts uint64  `json:"vm_wait_timeouts"`
			Threads        int     `json:"threads"`
			MaxMemory      int64   `json:"max_memory_bytes"`
		} `json:"lua"`
	}
	if err := json.Unmarshal(admin.Body(), &ts); err != nil {
		t.Fatalf("admin body %q: %v", admin.Body(), err)
	}
	for _, tn := range ts {
		switch {
		case tn.Name == "plain" && tn.Lua != nil:
			t.Error("the plain tenant shows a lua object")
		case tn.Name == "lua" && (tn.Lua == nil || tn.Lua.VMWaits < 1 || tn.Lua.VMWaitTimeouts != 1 || tn.Lua.VMWaitSeconds < 2 || tn.Lua.Threads != held || tn.Lua.MaxMemory != 1<<20):
			t.Errorf("admin lua stats %s, want a wait of at least 2s that timed out, %d threads", admin.Body(), held)
		}
	}
}
