package luavm

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
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

func TestPoolGrowsToMaxVMsThenAnswers503(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.PoolSize = 1
	cfg.MaxVMs = 3
	cfg.MaxExecution = 50 * time.Millisecond
	host := &slowHost{testHost: e.host, release: make(chan struct{})}
	s := loadTestdata(t, e, cfg, "slow.lua", Options{Host: host})
	f := serveScript(t, s)

	// Three requests hold every VM inside keystone.Proxy.
	var wg sync.WaitGroup
	results := make(chan result, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- f.do(t, "GET", "/slow-wrapped", nil, "")
		}()
	}
	waitFor(t, func() bool { return s.Stats().VMsLive == 3 && s.Stats().VMsIdle == 0 })

	// A fourth finds none, may not create one, and gives up at its deadline.
	start := time.Now()
	r := f.do(t, "GET", "/slow-wrapped", map[string]string{"X-Request-ID": "r4"}, "")
	if r.status != 503 || !strings.Contains(r.body, "script busy") || !strings.Contains(r.body, "r4") {
		t.Errorf("fourth request: %d %q, want 503 script busy", r.status, r.body)
	}
	if d := time.Since(start); d < cfg.MaxExecution {
		t.Errorf("fourth request answered after %v, before its deadline", d)
	}

	close(host.release)
	wg.Wait()
	close(results)
	for r := range results {
		if r.status != 200 || r.headers["X-Wrapped"] != "1" {
			t.Errorf("held request: %d %q", r.status, r.body)
		}
	}
	st := s.Stats()
	if st.VMsCreated != 3 || st.VMsIdle != 3 || st.Errors != 1 {
		t.Errorf("stats %+v, want 3 VMs created, 3 idle, 1 error", st)
	}
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
	if _, err := s.acquire(); err != ErrClosed {
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
