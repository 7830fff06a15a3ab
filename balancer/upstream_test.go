package balancer

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/breaker"
)

// fakeClock is an injected monotonic clock that tests advance by hand.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() int64              { return c.ns.Load() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func mustUpstream(t testing.TB, cfg UpstreamConfig) *Upstream {
	t.Helper()
	u, err := NewUpstream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestNewUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		url      string
		weight   int
		wantAddr string
		wantTLS  bool
		wantErr  error
	}{
		{name: "http with a port", url: "http://127.0.0.1:9001", wantAddr: "127.0.0.1:9001"},
		{name: "http defaults to port 80", url: "http://backend.internal", wantAddr: "backend.internal:80"},
		{name: "https defaults to port 443", url: "https://api.example.com", wantAddr: "api.example.com:443", wantTLS: true},
		{name: "a trailing slash is allowed", url: "https://api.example.com:8443/", wantAddr: "api.example.com:8443", wantTLS: true},
		{name: "IPv6 literals keep their brackets", url: "http://[::1]:9001", wantAddr: "[::1]:9001"},
		{name: "IPv6 literals get a default port", url: "https://[2001:db8::1]", wantAddr: "[2001:db8::1]:443", wantTLS: true},
		{name: "the scheme is case-insensitive", url: "HTTP://h:1", wantAddr: "h:1"},
		{name: "a weight is kept", url: "http://h:1", weight: 7, wantAddr: "h:1"},
		{name: "a missing scheme is refused", url: "127.0.0.1:9001", wantErr: ErrInvalidURL},
		{name: "other schemes are refused", url: "ftp://h:1", wantErr: ErrInvalidURL},
		{name: "a path is refused", url: "http://h:1/api", wantErr: ErrInvalidURL},
		{name: "a query is refused", url: "http://h:1?x=1", wantErr: ErrInvalidURL},
		{name: "an empty query is refused", url: "http://h:1?", wantErr: ErrInvalidURL},
		{name: "a fragment is refused", url: "http://h:1#x", wantErr: ErrInvalidURL},
		{name: "user info is refused", url: "http://user:pw@h:1", wantErr: ErrInvalidURL},
		{name: "a missing host is refused", url: "http://:80", wantErr: ErrInvalidURL},
		{name: "an empty URL is refused", url: "", wantErr: ErrInvalidURL},
		{name: "a bad port is refused", url: "http://h:port", wantErr: ErrInvalidURL},
		{name: "a negative weight is refused", url: "http://h:1", weight: -1, wantErr: ErrInvalidWeight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := NewUpstream(UpstreamConfig{URL: tt.url, Weight: tt.weight})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("NewUpstream(%q) error = %v, want %v", tt.url, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewUpstream(%q): %v", tt.url, err)
			}
			if u.Addr != tt.wantAddr || u.TLS != tt.wantTLS || u.URL != tt.url {
				t.Fatalf("NewUpstream(%q) = Addr %q TLS %v URL %q, want %q %v", tt.url, u.Addr, u.TLS, u.URL, tt.wantAddr, tt.wantTLS)
			}
			if want := max(tt.weight, 1); u.Weight != want {
				t.Fatalf("Weight = %d, want %d", u.Weight, want)
			}
			if !u.Available() || !u.Healthy() {
				t.Fatal("a new upstream is not available and healthy")
			}
		})
	}
}

func TestNewUpstreamOutlierValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  OutlierConfig
		ok   bool
	}{
		{"zero is off", OutlierConfig{}, true},
		{"off ignores the other fields", OutlierConfig{Backoff: -1}, true},
		{"a backoff is enough", OutlierConfig{ConsecutiveFailures: 5, Backoff: time.Second}, true},
		{"max backoff at least backoff", OutlierConfig{ConsecutiveFailures: 5, Backoff: time.Second, MaxBackoff: time.Second}, true},
		{"no backoff is refused", OutlierConfig{ConsecutiveFailures: 5}, false},
		{"max backoff below backoff is refused", OutlierConfig{ConsecutiveFailures: 5, Backoff: time.Second, MaxBackoff: time.Millisecond}, false},
		{"negative failures are refused", OutlierConfig{ConsecutiveFailures: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewUpstream(UpstreamConfig{URL: "http://h:1", Outlier: tt.cfg})
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidOutlier)) {
				t.Fatalf("NewUpstream with %+v: %v, want ok=%v", tt.cfg, err, tt.ok)
			}
		})
	}
}

func TestAvailable(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{}
	br := breaker.New(breaker.Settings{FailureThreshold: 1, OpenTimeout: time.Second, Clock: clk.Now})
	u := mustUpstream(t, UpstreamConfig{
		URL: "http://h:1", Breaker: br, Clock: clk.Now,
		Outlier: OutlierConfig{ConsecutiveFailures: 1, Backoff: time.Second},
	})
	if !u.Available() {
		t.Fatal("new upstream unavailable")
	}

	u.healthy.Store(false)
	if u.Available() || u.Healthy() {
		t.Fatal("unhealthy upstream available")
	}
	if s := u.Status(); s.Healthy || s.Available {
		t.Fatalf("Status of an unhealthy upstream: %+v", s)
	}
	u.healthy.Store(true)

	u.ReportResult(false)
	if u.Available() || !u.Healthy() {
		t.Fatal("ejected upstream available, or ejection changed the active health")
	}
	clk.Advance(time.Second)
	if !u.Available() {
		t.Fatal("upstream still unavailable after its ejection")
	}

	tok, _ := br.Allow()
	br.Done(tok, false)
	if u.Available() {
		t.Fatal("upstream with an open breaker available")
	}
	if s := u.Status(); s.Breaker != "open" {
		t.Fatalf("Status().Breaker = %q, want open", s.Breaker)
	}
	clk.Advance(time.Second)
	if !u.Available() {
		t.Fatal("upstream unavailable once its breaker lets probes through")
	}
}

// TestOutlierDetection walks passive ejection with an injected clock: the
// threshold, failures during an ejection, doubling up to MaxBackoff, and
// the reset by a success after the ejection.
func TestOutlierDetection(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{}
	u := mustUpstream(t, UpstreamConfig{
		URL: "http://h:1", Clock: clk.Now,
		Outlier: OutlierConfig{ConsecutiveFailures: 3, Backoff: time.Second, MaxBackoff: 4 * time.Second},
	})
	fail := func(n int) {
		for range n {
			u.ReportResult(false)
		}
	}
	// ejectedFor checks that u is ejected for exactly d from now.
	ejectedFor := func(step string, d time.Duration) {
		t.Helper()
		if u.Available() || !u.Status().Ejected {
			t.Fatalf("%s: not ejected", step)
		}
		clk.Advance(d - time.Nanosecond)
		if u.Available() {
			t.Fatalf("%s: ejection ended before %v", step, d)
		}
		clk.Advance(time.Nanosecond)
		if !u.Available() || u.Status().Ejected {
			t.Fatalf("%s: still ejected after %v", step, d)
		}
	}

	fail(2)
	u.ReportResult(true)
	fail(2)
	if !u.Available() {
		t.Fatal("ejected although a success broke the run")
	}
	if s := u.Status(); s.PassiveFailures != 2 {
		t.Fatalf("PassiveFailures = %d, want 2", s.PassiveFailures)
	}
	if n := u.Outages(); n != 0 {
		t.Fatalf("Outages = %d before any ejection", n)
	}
	fail(1)
	if s := u.Status(); !s.Ejected || s.EjectedUntil.IsZero() || s.PassiveFailures != 0 {
		t.Fatalf("Status after the third failure: %+v", s)
	}
	if n := u.Outages(); n != 1 {
		t.Fatalf("Outages = %d after an ejection, want 1", n)
	}
	fail(10) // in-flight requests failing during the ejection do not count
	if n := u.Outages(); n != 1 {
		t.Fatalf("Outages = %d after failures during the ejection, want 1", n)
	}
	u.ReportResult(true)
	ejectedFor("first ejection", time.Second)

	fail(3)
	ejectedFor("second ejection doubles", 2*time.Second)
	fail(3)
	ejectedFor("third ejection doubles again", 4*time.Second)
	fail(3)
	ejectedFor("fourth ejection is capped", 4*time.Second)

	u.ReportResult(true) // a success after the ejection ended resets the doubling
	fail(3)
	ejectedFor("after a success the backoff starts over", time.Second)
}

func TestOutlierDetectionOff(t *testing.T) {
	t.Parallel()
	u := mustUpstream(t, UpstreamConfig{URL: "http://h:1"})
	for range 1000 {
		u.ReportResult(false)
	}
	if !u.Available() || u.Status().PassiveFailures != 0 {
		t.Fatal("passive detection ran while off")
	}
}

func TestOutlierMaxBackoffZeroMeansNoDoubling(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{}
	u := mustUpstream(t, UpstreamConfig{URL: "http://h:1", Clock: clk.Now, Outlier: OutlierConfig{ConsecutiveFailures: 1, Backoff: time.Second}})
	for range 3 {
		u.ReportResult(false)
		clk.Advance(time.Second)
		if !u.Available() {
			t.Fatal("an ejection lasted longer than Backoff")
		}
	}
}

func TestInflight(t *testing.T) {
	t.Parallel()
	u := mustUpstream(t, UpstreamConfig{URL: "http://h:1", Weight: 3})
	u.Acquire()
	u.Acquire()
	u.Release()
	if n := u.Inflight(); n != 1 {
		t.Fatalf("Inflight() = %d, want 1", n)
	}
	s := u.Status()
	if s.Inflight != 1 || s.Weight != 3 || s.URL != "http://h:1" || s.Breaker != "" || !s.Healthy || !s.Available {
		t.Fatalf("Status() = %+v", s)
	}
}
