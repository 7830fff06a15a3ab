package luavm

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// slowHost adds a "slow" target whose handler blocks, as a proxy waiting on
// a slow upstream does.
type slowHost struct {
	*testHost
	delay   time.Duration
	release chan struct{} // if non-nil, handlers wait for it instead of delay
}

func (h *slowHost) ProxyHandler(target string) (fasthttp.RequestHandler, error) {
	if target != "slow" {
		return h.testHost.ProxyHandler(target)
	}
	return func(ctx *fasthttp.RequestCtx) {
		if h.release != nil {
			<-h.release
		} else {
			time.Sleep(h.delay)
		}
		ctx.SetBodyString("slow done")
	}, nil
}

func TestProxyWaitIsNotLuaRunTime(t *testing.T) {
	e := newEnv(t)
	slowSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		time.Sleep(300 * time.Millisecond)
		ctx.SetBodyString("slow http")
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go slowSrv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { slowSrv.Shutdown() })
	t.Setenv("KEYSTONE_SCRIPT_SLOW", "http://"+ln.Addr().String())

	cfg := testConfig(&logBuffer{})
	cfg.MaxExecution = 60 * time.Millisecond
	host := &slowHost{testHost: e.host, delay: 300 * time.Millisecond}
	s := loadTestdata(t, e, cfg, "slow.lua", Options{Host: host})
	f := serveScript(t, s)
	for path, want := range map[string]string{"/slow-proxy": "slow done", "/slow-wrapped": "slow done", "/slow-http": "slow http"} {
		r := f.do(t, "GET", path, nil, "")
		if r.status != 200 || r.body != want {
			t.Errorf("%s: %d %q, want 200 %q: a wait on the network counted as Lua run time", path, r.status, r.body, want)
		}
	}
	if st := s.Stats(); st.VMsDiscarded != 0 {
		t.Errorf("stats %+v, want no VM discarded", st)
	}
}

// TestQueueBeyondBudgetAnswers503AfterVMWait: once the memory budget
// holds no more request threads, a request queues for VMWait, not for
// MaxExecution, then gets 503 with Retry-After; the wait is counted.
func TestQueueBeyondBudgetAnswers503AfterVMWait(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize = 1
	cfg.MaxMemory = vmCost + 3*threadCost // one VM, three in-flight requests
	cfg.MaxExecution = 10 * time.Millisecond
	cfg.VMWait = 300 * time.Millisecond
	host := &slowHost{testHost: e.host, release: make(chan struct{})}
	s := loadTestdata(t, e, cfg, "slow.lua", Options{Host: host})
	f := serveScript(t, s)

	// Three requests wait inside keystone.Proxy, parked: they share the
	// one VM, and hold the three threads the budget allows.
	var wg sync.WaitGroup
	results := make(chan result, 3)
	for range 3 {
		wg.Go(func() { results <- f.do(t, "GET", "/slow-wrapped", nil, "") })
	}
	waitFor(t, func() bool { st := s.Stats(); return st.Inflight == 3 && st.VMsIdle == 1 })

	// A fourth finds no room, queues for VMWait (far beyond
	// MaxExecution: the queue is not Lua run time), and gets 503.
	start := time.Now()
	r := f.do(t, "GET", "/slow-wrapped", map[string]string{"X-Request-ID": "r4"}, "")
	if r.status != 503 || !strings.Contains(r.body, "script busy") || !strings.Contains(r.body, "r4") {
		t.Errorf("fourth request: %d %q, want 503 script busy", r.status, r.body)
	}
	if r.headers["Retry-After"] != "1" {
		t.Errorf("Retry-After = %q, want 1", r.headers["Retry-After"])
	}
	if d := time.Since(start); d < cfg.VMWait {
		t.Errorf("fourth request answered after %v, before VMWait", d)
	}

	close(host.release)
	wg.Wait()
	close(results)
	for r := range results {
		if r.status != 200 || r.headers["X-Wrapped"] != "1" {
			t.Errorf("held request: %d %q", r.status, r.body)
		}
	}
	// The three held requests resume at once on the one VM, so some of
	// them may wait for it too: only the fourth's wait timed out.
	st := s.Stats()
	if st.VMsCreated != 1 || st.Threads != 3 || st.Errors != 1 || st.VMWaits < 1 || st.VMWaitTimeouts != 1 || st.VMWaitTime < cfg.VMWait {
		t.Errorf("stats %+v, want 1 VM, 3 threads, 1 error, a wait of at least VMWait that timed out", st)
	}
}

// TestParkedRequestsShareOneVM: with one VM allowed, many requests wait on
// the network at once, each parked with its thread, and all succeed; a
// middleware's Lua runs on both sides of the wait with its own request.
func TestParkedRequestsShareOneVM(t *testing.T) {
	const n = 40
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize, cfg.MaxVMs = 1, 1
	host := &slowHost{testHost: e.host, release: make(chan struct{})}
	s := e.load(t, cfg, scriptFS(`
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    local id = req:Header():Get("X-N")
    next(w, req)
    w:Header():Set("X-Echo-N", id .. ":" .. req:Header():Get("X-N"))
  end
end)
r:Get("/", keystone.Proxy("slow"))
return r
`), "main.lua", Options{Host: host})
	f := serveScript(t, s)
	var wg sync.WaitGroup
	bad := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprint(i)
			r := f.do(t, "GET", "/", map[string]string{"X-N": id}, "")
			if r.status != 200 || r.body != "slow done" || r.headers["X-Echo-N"] != id+":"+id {
				bad <- fmt.Sprintf("request %s: %d %q %q", id, r.status, r.body, r.headers["X-Echo-N"])
			}
		})
	}
	waitFor(t, func() bool { return s.Stats().Inflight == n })
	if st := s.Stats(); st.VMsLive != 1 || st.Threads != n {
		t.Errorf("with %d requests parked: %+v, want 1 VM and %d threads", n, st, n)
	}
	close(host.release)
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Error(b)
	}
	// Requests arriving together may queue for the VM while another
	// runs Lua: briefly, never until VMWait.
	if st := s.Stats(); st.VMWaitTimeouts != 0 || st.Errors != 0 || st.VMsCreated != 1 {
		t.Errorf("stats %+v, want no timeout, no error, one VM", st)
	}
}

// TestIdleVMsAbovePoolSizeAreTrimmed drives the pool's clock: VMs and
// threads a burst created above PoolSize go once idle for IdleVMTTL, the
// PoolSize warm ones stay, and a VM in use is never trimmed.
func TestIdleVMsAbovePoolSizeAreTrimmed(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize = 1
	cfg.IdleVMTTL = time.Hour // the reaper's ticker never fires in this test
	s := e.load(t, cfg, scriptFS(helloScript), "main.lua", Options{})
	var now atomic.Int64
	s.pool.mu.Lock()
	s.pool.now = now.Load
	s.pool.mu.Unlock()

	// A burst: three requests at once, as a busy server would have.
	var ts [3]*thread
	var vs [3]*vm
	for i := range ts {
		var err error
		if ts[i], vs[i], err = s.acquire(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range ts {
		s.release(ts[i], vs[i])
	}
	if st := s.Stats(); st.VMsLive != 3 || st.Threads != 3 {
		t.Fatalf("after the burst: %+v, want 3 VMs and 3 threads", st)
	}
	now.Add(int64(cfg.IdleVMTTL) - 1)
	if s.trim(); s.Stats().VMsLive != 3 {
		t.Fatalf("VMs trimmed before IdleVMTTL: %+v", s.Stats())
	}
	// One request keeps a VM and thread busy across the TTL: they are
	// not idle, and count towards PoolSize; the other two of each go.
	t1, v1, _ := s.acquire()
	now.Add(1)
	if more := s.trim(); more {
		t.Error("trim reports more to watch with PoolSize left")
	}
	if st := s.Stats(); st.VMsLive != 1 || st.Threads != 1 || st.MemoryBytes != vmCost+threadCost {
		t.Errorf("after IdleVMTTL with one VM busy: %+v, want PoolSize (1) VM and thread left", st)
	}
	s.release(t1, v1)
	now.Add(int64(cfg.IdleVMTTL))
	if s.trim(); s.Stats().VMsLive != 1 {
		t.Errorf("the PoolSize VM was trimmed: %+v", s.Stats())
	}
	ctx := newCtx("GET", "/hello")
	s.Handler(ctx)
	if string(ctx.Response.Body()) != "Hello World" {
		t.Errorf("after trimming: %q", ctx.Response.Body())
	}
}

// TestReaperReturnsMemoryAfterBurst runs the real reaper with a short TTL:
// the pool goes back to PoolSize on its own, with no request to trigger
// it, and the reaper goroutine ends.
func TestReaperReturnsMemoryAfterBurst(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize = 1
	cfg.IdleVMTTL = 20 * time.Millisecond
	s := e.load(t, cfg, scriptFS(helloScript), "main.lua", Options{})
	t1, v1, _ := s.acquire()
	t2, v2, _ := s.acquire()
	s.release(t1, v1)
	s.release(t2, v2)
	waitFor(t, func() bool { st := s.Stats(); return st.VMsLive == 1 && st.Threads == 1 })
	waitFor(t, func() bool {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		return !s.pool.reaping
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConcurrentRequests hammers one script from 50 goroutines and checks
// the totals, the shared store and that steady load creates no VM.
func TestConcurrentRequests(t *testing.T) {
	const workers, perWorker = 50, 200
	e := newEnv(t)
	store := NewMemoryStore()
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize = 4
	cfg.MaxExecution = time.Second // -race on a loaded box is slow
	s := e.load(t, cfg, os.DirFS("testdata"), "concurrent.lua", Options{Store: store})

	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: s.Handler, Concurrency: 4096}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	client := &fasthttp.HostClient{Addr: "mem", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: workers}

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for range perWorker {
				req.SetRequestURI(fmt.Sprintf("http://mem/count/%d", w))
				if err := client.Do(req, resp); err != nil {
					errs <- err
					return
				}
				if resp.StatusCode() != 200 || !strings.Contains(string(resp.Body()), `"seen":true`) {
					errs <- fmt.Errorf("worker %d: %d %s", w, resp.StatusCode(), resp.Body())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, _ := store.Get("hits"); got != fmt.Sprint(workers*perWorker) {
		t.Errorf("store hits = %s, want %d", got, workers*perWorker)
	}
	for w := range workers {
		if got, _ := store.Get(fmt.Sprintf("worker:%d", w)); got != fmt.Sprint(perWorker) {
			t.Errorf("worker %d count = %s, want %d", w, got, perWorker)
		}
	}
	st := s.Stats()
	if st.Requests != workers*perWorker || st.Errors != 0 || st.VMsDiscarded != 0 {
		t.Errorf("stats %+v", st)
	}
	if st.VMsCreated > uint64(s.cfg.MaxVMs) || uint64(st.VMsLive) != st.VMsCreated {
		t.Errorf("stats %+v: VMs beyond the cap or lost", st)
	}
}

// TestSteadyLoadCreatesNoVM: sequential requests never find the pool
// empty, so warm-up created every VM there will be.
func TestSteadyLoadCreatesNoVM(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	s := loadTestdata(t, e, cfg, "bare.lua", Options{})
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/hello")
	for range 1000 {
		ctx.Response.Reset()
		s.Handler(&ctx)
	}
	if st := s.Stats(); st.VMsCreated != uint64(cfg.PoolSize) || string(ctx.Response.Body()) != "Hello World" {
		t.Errorf("stats %+v after 1000 requests, want VMsCreated == PoolSize %d", st, cfg.PoolSize)
	}
}

func TestCloseReleasesVMs(t *testing.T) {
	e := newEnv(t)
	s := loadTestdata(t, e, testConfig(&logBuffer{}), "bare.lua", Options{})
	s.Close()
	s.Close()
	if st := s.Stats(); st.VMsIdle != 0 || st.VMsLive != 0 {
		t.Errorf("after Close: %+v", st)
	}
	if _, _, err := s.acquire(); err != ErrClosed {
		t.Errorf("acquire after Close: %v, want ErrClosed", err)
	}
}

// TestScriptsDoNotShareGlobals: two Scripts of one file run in separate
// VMs; a global set in one is invisible to the other.
func TestScriptsDoNotShareGlobals(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize, cfg.MaxVMs = 1, 1
	a := serveScript(t, loadTestdata(t, e, cfg, "sandbox.lua", Options{Tenant: "a"}))
	b := serveScript(t, loadTestdata(t, e, cfg, "sandbox.lua", Options{Tenant: "b"}))
	for _, want := range []string{"1", "2", "3"} {
		if r := a.do(t, "GET", "/global", nil, ""); r.body != want {
			t.Errorf("tenant a: %q, want %q", r.body, want)
		}
	}
	if r := b.do(t, "GET", "/global", nil, ""); r.body != "1" {
		t.Errorf("tenant b saw tenant a's global: %q", r.body)
	}
}

func TestRemoteAddrIsTheHostsClientIP(t *testing.T) {
	e := newEnv(t)
	s := e.load(t, testConfig(&logBuffer{}), scriptFS(`
local r = chi.NewRouter()
r:Get("/ip", function(w, req) w:Write(req.RemoteAddr) end)
return r
`), "main.lua", Options{})
	for _, tt := range []struct{ clientIP, want string }{
		{"", "0.0.0.0"}, // the test host falls back to the (absent) TCP peer
		{"203.0.113.7", "203.0.113.7"},
		{"2001:db8::1", "2001:db8::1"},
	} {
		e.host.clientIP = tt.clientIP
		ctx := newCtx("GET", "/ip")
		s.Handler(ctx)
		if got := string(ctx.Response.Body()); got != tt.want {
			t.Errorf("host client IP %q: req.RemoteAddr = %q, want %q", tt.clientIP, got, tt.want)
		}
	}
}
