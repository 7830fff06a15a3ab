package balancer

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// eventually polls cond every 5ms until it holds, failing the test after a
// deadline generous enough for a busy 2-core CI machine. Tests wait with it
// instead of sleeping, so they assert outcomes, never timings.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// upstreamServer is a real fasthttp server on 127.0.0.1 answering every
// request with status and recording the last path and Host it saw.
type upstreamServer struct {
	status   atomic.Int64
	lastPath atomic.Value // string
	lastHost atomic.Value // string
	srv      *fasthttp.Server
	addr     string
	done     chan struct{}
}

func startUpstream(t *testing.T, addr string, status int) *upstreamServer {
	t.Helper()
	ln := listen(t, addr)
	s := &upstreamServer{addr: ln.Addr().String(), done: make(chan struct{})}
	s.status.Store(int64(status))
	s.srv = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			s.lastPath.Store(string(ctx.Path()))
			s.lastHost.Store(string(ctx.Host()))
			ctx.SetStatusCode(int(s.status.Load()))
			ctx.SetBodyString("ok")
		},
		IdleTimeout: time.Second,
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down, listener included, and waits for Serve to
// return. It is idempotent.
func (s *upstreamServer) stop() {
	_ = s.srv.Shutdown()
	<-s.done
}

// listen listens on addr ("127.0.0.1:0" for any port), retrying for a while
// if a just-closed listener still holds the port.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	eventually(t, "listening on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp4", addr)
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
		return err == nil
	})
	return ln
}

// syncBuffer is a log sink safe for the checker goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func startChecker(t *testing.T, cfg HealthCheckConfig, logger *slog.Logger, ups ...*Upstream) *Checker {
	t.Helper()
	if logger == nil {
		logger = testLogger(t)
	}
	c := NewChecker(cfg, ups, logger)
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

func checked(u *Upstream) bool { return !u.Status().LastCheck.IsZero() }

// TestHealthDownAndUp runs an upstream that answers, is shut down (listener
// and server), and comes back on the same port: it must be marked down
// after exactly UnhealthyThreshold failed checks and up again after
// HealthyThreshold passing ones, with the change logged.
func TestHealthDownAndUp(t *testing.T) {
	t.Parallel()
	srv := startUpstream(t, "", 200)
	u := mustUpstream(t, UpstreamConfig{URL: "http://" + srv.addr})
	var logs syncBuffer
	startChecker(t, HealthCheckConfig{
		Path: "/healthz", Interval: 20 * time.Millisecond, Timeout: time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 3,
	}, slog.New(slog.NewTextHandler(&logs, nil)), u)

	eventually(t, "a first check passed", func() bool { return checked(u) && u.Status().ConsecutiveSuccesses >= 1 })
	if p, _ := srv.lastPath.Load().(string); p != "/healthz" {
		t.Fatalf("checked path %q, want /healthz", p)
	}
	if h, _ := srv.lastHost.Load().(string); h != srv.addr {
		t.Fatalf("checked with Host %q, want the upstream's host %q", h, srv.addr)
	}

	srv.stop()
	eventually(t, "marked down", func() bool {
		s := u.Status()
		if s.Healthy == (s.ConsecutiveFailures >= 3) {
			t.Fatalf("Healthy = %v after %d consecutive failures, threshold 3", s.Healthy, s.ConsecutiveFailures)
		}
		return !s.Healthy
	})
	if s := u.Status(); s.LastCheckError == "" || s.Available {
		t.Fatalf("down upstream: %+v", s)
	}
	if n := u.Outages(); n != 1 {
		t.Fatalf("Outages = %d after being marked down once, want 1", n)
	}

	restarted := startUpstream(t, srv.addr, 200)
	eventually(t, "marked up again", func() bool {
		s := u.Status()
		if s.Healthy && s.ConsecutiveSuccesses < 2 && s.ConsecutiveFailures == 0 {
			t.Fatalf("Healthy after %d consecutive successes, threshold 2", s.ConsecutiveSuccesses)
		}
		return s.Healthy
	})
	if s := u.Status(); s.LastCheckError != "" || !s.Available {
		t.Fatalf("up upstream: %+v", s)
	}
	if n := u.Outages(); n != 1 {
		t.Fatalf("Outages = %d after coming back, want still 1", n)
	}
	_ = restarted

	out := logs.String()
	for _, want := range []string{
		"component=health", "upstream=http://" + srv.addr, "from=healthy to=unhealthy", "from=unhealthy to=healthy",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

// TestHealthHangingUpstream checks that an upstream that accepts
// connections and never answers fails its checks at Timeout.
func TestHealthHangingUpstream(t *testing.T) {
	t.Parallel()
	ln := listen(t, "")
	t.Cleanup(func() { ln.Close() })
	// held records how long the first connection stayed open: it is read
	// to EOF but never answered, so it ends when the checker gives up.
	var held atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				start := time.Now()
				_, _ = io.Copy(io.Discard, c)
				held.CompareAndSwap(0, int64(time.Since(start)))
			}()
		}
	}()

	const timeout = 100 * time.Millisecond
	u := mustUpstream(t, UpstreamConfig{URL: "http://" + ln.Addr().String()})
	startChecker(t, HealthCheckConfig{Interval: 20 * time.Millisecond, Timeout: timeout, UnhealthyThreshold: 1}, nil, u)
	eventually(t, "marked down", func() bool { return !u.Healthy() })
	// "fasthttp: timeout" waiting for the answer; on a loaded machine a
	// later check may instead time out dialing ("timed out").
	if s := u.Status(); !strings.Contains(s.LastCheckError, "timeout") && !strings.Contains(s.LastCheckError, "timed out") {
		t.Fatalf("LastCheckError = %q, want a timeout", s.LastCheckError)
	}
	// The checker waited for the Timeout before giving up on the
	// connection. The bound is loose: the server accepted after the check
	// started its clock.
	eventually(t, "the first connection closed", func() bool { return held.Load() != 0 })
	if d := time.Duration(held.Load()); d < timeout/2 {
		t.Fatalf("the checker gave up after %v, want about %v", d, timeout)
	}
}

// TestHealthExpectedStatus checks the status classification against real
// servers: the default 200..399 range and a custom Expected.
func TestHealthExpectedStatus(t *testing.T) {
	t.Parallel()
	only204 := func(status int) bool { return status == 204 }
	tests := []struct {
		name     string
		status   int
		expected func(int) bool
		healthy  bool
	}{
		{"200 passes by default", 200, nil, true},
		{"302 passes by default", 302, nil, true},
		{"399 passes by default", 399, nil, true},
		{"400 fails by default", 400, nil, false},
		{"404 fails by default", 404, nil, false},
		{"500 fails by default", 500, nil, false},
		{"503 fails by default", 503, nil, false},
		{"204 passes when expected", 204, only204, true},
		{"200 fails when only 204 is expected", 200, only204, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startUpstream(t, "", tt.status)
			u := mustUpstream(t, UpstreamConfig{URL: "http://" + srv.addr})
			// Start from "down" so that a pass is visible as a change too.
			u.healthy.Store(false)
			startChecker(t, HealthCheckConfig{Interval: 20 * time.Millisecond, Timeout: time.Second, Expected: tt.expected}, nil, u)
			eventually(t, "a check ran", func() bool { return checked(u) })
			s := u.Status()
			if s.Healthy != tt.healthy {
				t.Fatalf("status %d: Healthy = %v, want %v (%+v)", tt.status, s.Healthy, tt.healthy, s)
			}
			if !tt.healthy && s.LastCheckError == "" {
				t.Fatal("failed check without an error")
			}
			if !tt.healthy && tt.expected == nil && !strings.Contains(s.LastCheckError, "unexpected status") {
				t.Fatalf("LastCheckError = %q, want the unexpected status", s.LastCheckError)
			}
		})
	}
}

func TestHealthHostHeaderAndTLS(t *testing.T) {
	t.Parallel()
	var host atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	u := mustUpstream(t, UpstreamConfig{URL: srv.URL})
	if !u.TLS {
		t.Fatal("https upstream without TLS")
	}
	u.healthy.Store(false)
	startChecker(t, HealthCheckConfig{
		Host: "health.internal", Interval: 20 * time.Millisecond, Timeout: time.Second,
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"},
	}, nil, u)
	eventually(t, "healthy over TLS", func() bool { return u.Healthy() })
	if h, _ := host.Load().(string); h != "health.internal" {
		t.Fatalf("Host = %q, want the configured health.internal", h)
	}
}

// TestHealthPanicRecovered checks that a panicking check fails instead of
// killing the process, and that checks go on.
func TestHealthPanicRecovered(t *testing.T) {
	t.Parallel()
	srv := startUpstream(t, "", 200)
	u := mustUpstream(t, UpstreamConfig{URL: "http://" + srv.addr})
	var calls atomic.Int64
	startChecker(t, HealthCheckConfig{
		Interval: 20 * time.Millisecond, Timeout: time.Second, UnhealthyThreshold: 2,
		Expected: func(int) bool { calls.Add(1); panic("boom") },
	}, slog.New(slog.DiscardHandler), u)
	eventually(t, "marked down by panicking checks", func() bool { return !u.Healthy() })
	if s := u.Status(); !strings.Contains(s.LastCheckError, "panicked: boom") {
		t.Fatalf("LastCheckError = %q", s.LastCheckError)
	}
	n := calls.Load()
	eventually(t, "checks continue", func() bool { return calls.Load() > n })
}

// TestCheckerOwnership checks the reload handoff: a new Checker takes over
// an upstream's health state without resetting it, the displaced Checker
// neither writes it nor releases it on Stop, and the last owner's Stop
// marks the upstream healthy again (no active checks).
func TestCheckerOwnership(t *testing.T) {
	t.Parallel()
	srv := startUpstream(t, "", 500)
	u := mustUpstream(t, UpstreamConfig{URL: "http://" + srv.addr})
	cfg := HealthCheckConfig{Interval: 20 * time.Millisecond, Timeout: time.Second}
	old := NewChecker(cfg, []*Upstream{u}, testLogger(t))
	old.Start()
	t.Cleanup(old.Stop)
	eventually(t, "marked down", func() bool { return !u.Healthy() })

	// Reload: the new checker expects 500, so only its results mark the
	// upstream up; the old one's would keep it down.
	cfg.Expected = func(status int) bool { return status == 500 }
	cfg.HealthyThreshold = 3
	next := NewChecker(cfg, []*Upstream{u}, testLogger(t))
	next.Start()
	t.Cleanup(next.Stop)
	if u.Healthy() {
		t.Fatal("taking over reset the health state")
	}
	old.Stop()
	if u.Healthy() {
		t.Fatal("stopping a displaced checker released the upstream")
	}
	eventually(t, "the new checker marks it up", func() bool { return u.Healthy() })
	eventually(t, "the new checker keeps it up", func() bool { return u.Status().ConsecutiveSuccesses >= 5 })

	// A config without health checks: the last owner stops, and the
	// upstream is healthy with no checks.
	srv.status.Store(200) // would fail next's Expected
	next.Stop()
	if s := u.Status(); !s.Healthy || s.ConsecutiveFailures != 0 || s.ConsecutiveSuccesses != 0 {
		t.Fatalf("released upstream: %+v", s)
	}
	if u.checker.Load() != nil {
		t.Fatal("released upstream still has an owner")
	}
}

func TestCheckerStartStop(t *testing.T) {
	t.Parallel()
	srv := startUpstream(t, "", 200)
	u := mustUpstream(t, UpstreamConfig{URL: "http://" + srv.addr})
	c := NewChecker(HealthCheckConfig{Interval: time.Hour}, []*Upstream{u}, nil)
	c.Stop() // before Start: fine
	c.Start()
	if u.checker.Load() != nil {
		t.Fatal("Start after Stop took ownership")
	}

	c = NewChecker(HealthCheckConfig{Interval: time.Hour}, []*Upstream{u}, nil)
	c.Start()
	c.Start() // idempotent
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(c.Stop) // concurrent Stops all return once stopped
	}
	wg.Wait()
	if u.checker.Load() != nil {
		t.Fatal("Stop did not release the upstream")
	}
}

func TestHealthCheckConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  HealthCheckConfig
		ok   bool
	}{
		{"an interval is enough", HealthCheckConfig{Interval: time.Second}, true},
		{"a full config", HealthCheckConfig{Path: "/h", Host: "x", Interval: time.Second, Timeout: time.Second, HealthyThreshold: 2, UnhealthyThreshold: 3}, true},
		{"no interval is refused", HealthCheckConfig{}, false},
		{"a relative path is refused", HealthCheckConfig{Path: "health", Interval: time.Second}, false},
		{"a negative timeout is refused", HealthCheckConfig{Interval: time.Second, Timeout: -1}, false},
		{"a negative threshold is refused", HealthCheckConfig{Interval: time.Second, HealthyThreshold: -1}, false},
		{"a negative unhealthy threshold is refused", HealthCheckConfig{Interval: time.Second, UnhealthyThreshold: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidHealthCheck)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Fatal("NewChecker accepted an invalid config")
		}
	}()
	NewChecker(HealthCheckConfig{}, nil, nil)
}
