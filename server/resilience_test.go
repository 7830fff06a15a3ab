package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// The tests in this file prove the resilience features end to end: a real
// Keystone server on loopback in front of real upstreams that die (their
// listener and every connection closed, like a crashed process), come back
// on the same port, hang, answer 5xx or close in the middle of a response.
// Nothing is mocked. Time bounds are generous lower or upper bounds, never
// tight windows, and every wait polls with eventually, so the tests hold on
// a loaded two-core machine.

// backend is a real upstream that can be killed and restarted on the same
// port. It answers like echo (whose handler and counters it uses), except
// GET /health, which it answers with healthStatus (200 if zero) and counts
// in checks rather than in requests.
type backend struct {
	*echo
	t            *testing.T
	checks       atomic.Int64
	healthStatus atomic.Int32

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	srv   *fasthttp.Server
	dead  bool
}

func startBackend(t *testing.T, id string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{echo: &echo{id: id, addr: ln.Addr().String()}, t: t}
	b.serveOn(ln)
	t.Cleanup(b.kill)
	return b
}

func (b *backend) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == "/health" {
		b.checks.Add(1)
		status := int(b.healthStatus.Load())
		if status == 0 {
			status = fasthttp.StatusOK
		}
		ctx.SetStatusCode(status)
		return
	}
	b.echo.serve(ctx)
}

func (b *backend) serveOn(ln net.Listener) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ln = ln
	b.conns = make(map[net.Conn]struct{})
	b.dead = false
	b.srv = &fasthttp.Server{Handler: b.handle, MaxRequestBodySize: 1 << 30, StreamRequestBody: true}
	go b.srv.Serve(trackingListener{ln, b}) //nolint:errcheck
}

// trackingListener records the connections a backend accepts, so kill can
// close them all.
type trackingListener struct {
	net.Listener
	b *backend
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	if l.b.dead {
		c.Close()
	} else {
		l.b.conns[c] = struct{}{}
	}
	return c, nil
}

// kill stops the backend the way a crashed process stops: the listener and
// every open connection close at once, mid-request or not.
func (b *backend) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead = true
	b.ln.Close()
	for c := range b.conns {
		c.Close()
	}
	clear(b.conns)
}

// stopAccepting closes the listener only: new connections are refused while
// requests on open connections carry on.
func (b *backend) stopAccepting() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ln.Close()
}

// restart listens on the backend's port again, as a restarted process
// would. The port was free a moment ago; another test's listener taking it
// meanwhile is unlikely, and retried for a while.
func (b *backend) restart() {
	b.t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("restart %s on %s: %v", b.id, b.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.serveOn(ln)
}

// rawUpstream is a misbehaving upstream at the TCP level: for every request
// it reads (the head only), it calls answer with the connection, then
// closes the connection. It counts the requests it read.
type rawUpstream struct {
	addr     string
	requests atomic.Int64
}

func startRaw(t *testing.T, answer func(c net.Conn)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rawUpstream{addr: ln.Addr().String()}
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	closed := false
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				r.requests.Add(1)
				answer(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for c := range conns {
			c.Close()
		}
	})
	return r
}

func (r *rawUpstream) url() string { return "http://" + r.addr }

// hang is a raw upstream's answer that never comes: it reads until the
// gateway gives up and closes the connection.
func hang(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// deadURL returns the URL of a loopback port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

// startGatewayWith loads yaml, lets tweak change the loaded config (to go
// below limits config validation keeps operators above, such as health
// check intervals under 1s) and serves it.
func startGatewayWith(t *testing.T, yaml string, tweak func(*config.Config)) *gateway {
	t.Helper()
	cfg := loadConfig(t, yaml)
	if tweak != nil {
		tweak(cfg)
	}
	return startGatewayConfig(t, cfg)
}

// fastChecks sets every tenant's health check interval and timeout.
func fastChecks(interval, timeout time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		for i := range c.Tenants {
			if hc := c.Tenants[i].HealthCheck; hc != nil {
				hc.Interval, hc.Timeout = config.Duration(interval), config.Duration(timeout)
			}
		}
	}
}

// result is one response as a client saw it, or the client's error.
type result struct {
	status     int
	body       []byte
	retryAfter string
	requestID  string
	err        error
	took       time.Duration
}

// client is a keep-alive client of a gateway, safe for concurrent use and
// from any goroutine (it reports errors instead of failing the test).
type client struct {
	hc *fasthttp.HostClient
}

func newClient(t *testing.T, g *gateway) *client {
	c := &client{hc: &fasthttp.HostClient{Addr: g.addr, MaxIdemponentCallAttempts: 1, MaxConns: 64}}
	t.Cleanup(c.hc.CloseIdleConnections)
	return c
}

func (c *client) do(method, uri string, body []byte, headers ...string) result {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.hc.Addr + uri)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != nil {
		req.SetBody(body)
	}
	start := time.Now()
	err := c.hc.DoTimeout(req, resp, 15*time.Second)
	r := result{err: err, took: time.Since(start)}
	if err == nil {
		r.status = resp.StatusCode()
		r.body = append([]byte(nil), resp.Body()...)
		r.retryAfter = string(resp.Header.Peek(fasthttp.HeaderRetryAfter))
		r.requestID = string(resp.Header.Peek("X-Request-ID"))
	}
	return r
}

func (c *client) get(uri string) result { return c.do("GET", uri, nil) }

// String describes r for failure messages.
func (r result) String() string {
	if r.err != nil {
		return fmt.Sprintf("error %v after %v", r.err, r.took)
	}
	return fmt.Sprintf("%d %q after %v", r.status, bytes.TrimSpace(r.body), r.took)
}

// from returns the id of the echo upstream that answered r, or "".
func (r result) from() string {
	var e echoed
	if r.err != nil || r.status != 200 || json.Unmarshal(r.body, &e) != nil {
		return ""
	}
	return e.ID
}

// wantError checks that r is the gateway's JSON error with status and code.
func wantError(t *testing.T, r result, status int, code string) {
	t.Helper()
	if r.err != nil || r.status != status {
		t.Fatalf("got %v, want %d %s", r, status, code)
	}
	var m struct {
		Status    int    `json:"status"`
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("error body is not JSON: %v", r)
	}
	if m.Status != status || m.Error != code || m.RequestID == "" || m.RequestID != r.requestID {
		t.Fatalf("got error body %s (X-Request-ID %q), want status %d, error %q and the request id", r.body, r.requestID, status, code)
	}
}

// healthDoc is /admin/health as a client decodes it.
type healthDoc struct {
	Status  string `json:"status"`
	Tenants []struct {
		Name      string        `json:"name"`
		Status    string        `json:"status"`
		Available int           `json:"available"`
		Total     int           `json:"total"`
		Upstreams []upstreamDoc `json:"upstreams"`
	} `json:"tenants"`
}

type upstreamDoc struct {
	URL                 string     `json:"url"`
	Healthy             bool       `json:"healthy"`
	Available           bool       `json:"available"`
	Ejected             bool       `json:"ejected"`
	EjectedUntil        *time.Time `json:"ejected_until"`
	Breaker             string     `json:"breaker"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	PassiveFailures     int        `json:"passive_failures"`
	LastCheck           *time.Time `json:"last_check"`
	LastError           string     `json:"last_error"`
	Inflight            int64      `json:"inflight"`
}

// health fetches /admin/health.
func (c *client) health(t *testing.T) healthDoc {
	t.Helper()
	r := c.get("/admin/health")
	if r.err != nil || r.status != 200 {
		t.Fatalf("/admin/health: %v", r)
	}
	var h healthDoc
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatalf("/admin/health: %v: %s", err, r.body)
	}
	return h
}

// upstream returns the admin state of the upstream with url in tenant.
func (c *client) upstream(t *testing.T, tenant, url string) upstreamDoc {
	t.Helper()
	for _, tn := range c.health(t).Tenants {
		if tn.Name != tenant {
			continue
		}
		for _, u := range tn.Upstreams {
			if u.URL == url {
				return u
			}
		}
	}
	t.Fatalf("/admin/health has no upstream %s in tenant %s", url, tenant)
	return upstreamDoc{}
}

// attemptsOf returns the attempts the access log recorded for request id.
func attemptsOf(t *testing.T, g *gateway, id string) int {
	t.Helper()
	var n float64
	eventually(t, 5*time.Second, "the access log line of "+id, func() bool {
		for _, l := range g.accessLines() {
			if l["request_id"] == id {
				n, _ = l["attempts"].(float64)
				return true
			}
		}
		return false
	})
	return int(n)
}

// answer writes the minimal echo body, so result.from works for upstreams
// with a custom handler.
func answer(ctx *fasthttp.RequestCtx, id string) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"id":"` + id + `"}`)
}

// statusHandler answers every request with code.
func statusHandler(code int) func(*fasthttp.RequestCtx) {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(code)
		ctx.SetBodyString("upstream answered " + strconv.Itoa(code))
	}
}

// gate holds requests inside an upstream until it is opened.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// holding returns a handler that waits for the gate, then answers as id.
func (g *gate) holding(id string) func(*fasthttp.RequestCtx) {
	return func(ctx *fasthttp.RequestCtx) {
		<-g.ch
		answer(ctx, id)
	}
}

// background sends a request on its own goroutine; the result arrives on
// the returned channel.
func (c *client) background(method, uri string) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- c.do(method, uri, nil) }()
	return ch
}

// ---- Active health checks ----

// TestActiveHealthTakesAKilledUpstreamOutAndBringsItBack kills one of two
// upstreams: the checker marks it down within about one interval (plus
// the check timeout for a host that hangs; a killed one refuses at once),
// after which no request reaches it, even with retries off. Restarted on
// the same port, it is back after healthy_threshold passing checks and
// serves its share again without a failed request.
func TestActiveHealthTakesAKilledUpstreamOutAndBringsItBack(t *testing.T) {
	t.Parallel()
	const interval, timeout = 100 * time.Millisecond, 75 * time.Millisecond
	a, b := startBackend(t, "a"), startBackend(t, "b")
	g := startGatewayWith(t, oneTenant("api", "", `
health_check: {path: /health, healthy_threshold: 2, unhealthy_threshold: 1}
retries: {attempts: 0}
`, a.url(), b.url()), fastChecks(interval, timeout))
	c := newClient(t, g)
	eventually(t, 10*time.Second, "the first check of both upstreams", func() bool {
		return c.upstream(t, "api", a.url()).LastCheck != nil && c.upstream(t, "api", b.url()).LastCheck != nil
	})
	seen := map[string]int{}
	for range 10 {
		seen[c.get("/x").from()]++
	}
	if seen["a"] == 0 || seen["b"] == 0 || seen["a"]+seen["b"] != 10 {
		t.Fatalf("before the kill: %v, want both upstreams to serve", seen)
	}

	a.kill()
	killed := time.Now()
	eventually(t, 10*time.Second, "the checker to mark the killed upstream down", func() bool {
		return !c.upstream(t, "api", a.url()).Healthy
	})
	took := time.Since(killed)
	t.Logf("killed upstream marked down %v after the kill (interval %v, timeout %v)", took, interval, timeout)
	if took > interval+timeout+3*time.Second {
		t.Errorf("marked down %v after the kill, want about interval+timeout (%v)", took, interval+timeout)
	}
	// Retries are off: a request sent to the dead upstream would be a 502.
	// (A 503 would mean b failed a check too, on a machine too loaded for
	// the 75ms check timeout; that is not what this test is about.)
	served := 0
	for i := range 30 {
		r := c.get("/x")
		switch {
		case r.from() == "b":
			served++
		case r.status == 502:
			t.Fatalf("request %d after the upstream was marked down went to it: %v", i, r)
		default:
			t.Logf("request %d: %v", i, r)
		}
	}
	if served == 0 {
		t.Fatal("the surviving upstream served none of 30 requests")
	}

	a.checks.Store(0)
	a.restart()
	eventually(t, 10*time.Second, "the restarted upstream to be marked up", func() bool {
		return c.upstream(t, "api", a.url()).Healthy
	})
	if n := a.checks.Load(); n < 2 {
		t.Errorf("marked up after %d passing checks, want healthy_threshold (2)", n)
	}
	// The first requests to the restarted upstream must not fail on
	// pooled connections to the process that was killed.
	seen = map[string]int{}
	for i := range 10 {
		r := c.get("/x")
		if r.status != 200 {
			t.Fatalf("request %d after the upstream came back: %v", i, r)
		}
		seen[r.from()]++
	}
	if seen["a"] == 0 {
		t.Errorf("after the restart: %v, want the restarted upstream to serve again", seen)
	}
}

// TestAllUpstreamsDownAnswers503Fast checks that once the checker has marked
// every upstream down (one killed, one hanging), requests are answered 503
// with the JSON error at once, without waiting on the dead hosts, and the
// admin API says the tenant and the gateway are down.
func TestAllUpstreamsDownAnswers503Fast(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	hanging := "http://" + hangingListener(t)
	g := startGatewayWith(t, oneTenant("api", "", `
health_check: {unhealthy_threshold: 1}
timeouts: {connect: 2s, request: 5s}
`, a.url(), hanging), fastChecks(100*time.Millisecond, 75*time.Millisecond))
	c := newClient(t, g)
	eventually(t, 10*time.Second, "the hanging upstream to fail its check", func() bool {
		u := c.upstream(t, "api", hanging)
		return !u.Healthy && strings.Contains(u.LastError, "timeout")
	})
	a.kill()
	eventually(t, 10*time.Second, "the killed upstream to fail its check", func() bool {
		return !c.upstream(t, "api", a.url()).Healthy
	})
	h := c.health(t)
	if h.Status != "down" || h.Tenants[0].Status != "down" || h.Tenants[0].Available != 0 || h.Tenants[0].Total != 2 {
		t.Errorf("health with every upstream down: %+v", h)
	}
	for range 5 {
		r := c.get("/x")
		wantError(t, r, 503, "no_upstream_available")
		if r.took > time.Second {
			t.Errorf("503 took %v with every upstream marked down; the request timeout is 5s", r.took)
		}
	}
}

// ---- Passive health (outlier detection) ----

// TestOutlierDetectionEjectsForTheBackoffAndReadmits makes one of two
// upstreams fail real traffic, with no active checks: after
// consecutive_failures failures in a row it is ejected, gets nothing for
// the backoff, and serves again once the backoff is over. A refused
// connection fails over to the other upstream, so the client sees nothing
// of it; the failures are read from the admin API.
func TestOutlierDetectionEjectsForTheBackoffAndReadmits(t *testing.T) {
	t.Parallel()
	const backoff = 1500 * time.Millisecond
	for _, tc := range []struct {
		name       string
		fail, heal func(*backend)
	}{
		{"5xx answers", func(b *backend) { b.setHandler(statusHandler(500)) }, func(b *backend) { b.setHandler(nil) }},
		{"connect errors", (*backend).kill, (*backend).restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := startBackend(t, "a"), startBackend(t, "b")
			g := startGateway(t, oneTenant("api", "", yamlf(`
outlier_detection: {consecutive_failures: 3, backoff: %s, max_backoff: %s}
# 500 is counted by ejection only when retries list it.
retries: {attempts: 0, on: [connect_error, 500]}
`, backoff, backoff), a.url(), b.url()))
			c := newClient(t, g)
			tc.fail(a)
			var lastFailure time.Time // when the ejecting request was sent
			fails := 0
			for i := 0; fails < 3; i++ {
				if i == 20 {
					t.Fatalf("only %d failures in 20 requests", fails)
				}
				sent := time.Now()
				r := c.get("/x")
				if r.err != nil || (r.status != 500 && r.from() != "b") {
					t.Fatalf("request %d: %v", i, r)
				}
				u := c.upstream(t, "api", a.url())
				switch {
				case u.Ejected:
					fails++
					if fails != 3 {
						t.Fatalf("ejected after %d failures, want 3", fails)
					}
					lastFailure = sent
				case u.PassiveFailures == fails+1:
					fails++
				case u.PassiveFailures != fails:
					t.Fatalf("after %d failures: passive_failures %d", fails, u.PassiveFailures)
				}
			}
			u := c.upstream(t, "api", a.url())
			if !u.Ejected || u.Available || u.EjectedUntil == nil {
				t.Fatalf("after 3 failures in a row: %+v, want ejected", u)
			}
			if h := c.health(t); h.Tenants[0].Status != "degraded" || h.Status != "degraded" {
				t.Errorf("with one of two upstreams ejected: gateway %s, tenant %s, want degraded", h.Status, h.Tenants[0].Status)
			}
			tc.heal(a)
			before := a.requests.Load()
			for served := 0; ; served++ {
				r := c.get("/x")
				if r.status != 200 {
					t.Fatalf("request %d during or after the ejection: %v", served, r)
				}
				if r.from() == "a" {
					if since := time.Since(lastFailure); since < backoff {
						t.Fatalf("readmitted %v after the ejecting failure, want at least the %v backoff", since, backoff)
					}
					t.Logf("readmitted after %v; %d requests went to b meanwhile", time.Since(lastFailure), served)
					break
				}
				if time.Since(lastFailure) > backoff+15*time.Second {
					t.Fatalf("not readmitted %v after the ejection (backoff %v)", time.Since(lastFailure), backoff)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := a.requests.Load() - before; n != 1 {
				t.Errorf("the healed upstream saw %d requests, want the 1 that answered", n)
			}
			if u := c.upstream(t, "api", a.url()); u.Ejected || !u.Available {
				t.Errorf("after readmission: %+v", u)
			}
		})
	}
}

// ---- Circuit breaker ----

// TestBreakerTripsAfterConsecutiveFailuresAndTrafficGoesElsewhere fails one
// of two upstreams: its breaker opens on the third consecutive failure
// (the other upstream's successes in between are not its own), and from
// then on every request goes to the healthy upstream.
func TestBreakerTripsAfterConsecutiveFailuresAndTrafficGoesElsewhere(t *testing.T) {
	t.Parallel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	a.setHandler(statusHandler(500))
	g := startGateway(t, oneTenant("api", "", `
circuit_breaker: {failure_threshold: 3, min_requests: 1000, open_timeout: 1m}
retries: {attempts: 0}
`, a.url(), b.url()))
	c := newClient(t, g)
	for i := range 6 { // a, b, a, b, a, b
		r := c.get("/x")
		if want := []int{500, 200}[i%2]; r.status != want {
			t.Fatalf("request %d: %v, want %d", i, r, want)
		}
		if i == 3 {
			if u := c.upstream(t, "api", a.url()); u.Breaker != "closed" {
				t.Fatalf("breaker after 2 failures: %q, want closed", u.Breaker)
			}
		}
	}
	if u := c.upstream(t, "api", a.url()); u.Breaker != "open" || u.Available {
		t.Fatalf("breaker after 3 consecutive failures: %+v, want open", u)
	}
	for i := range 20 {
		if r := c.get("/x"); r.from() != "b" {
			t.Fatalf("request %d with a's breaker open: %v", i, r)
		}
	}
	if n := a.requests.Load(); n != 3 {
		t.Errorf("the upstream behind an open breaker saw %d requests, want 3", n)
	}
}

// TestBreakerCountsTransportErrorsTimeoutsAnd5xx trips a breaker with each
// kind of failure in turn: a refused connection, a timeout, a 500, the
// upstream's own 503 and a connection closed mid-response. With no other
// upstream, the request after the trip gets 503 with Retry-After at once.
func TestBreakerCountsTransportErrorsTimeoutsAnd5xx(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		upstream   func(t *testing.T) (url string, attempts func() int64)
		wantStatus int
	}{
		{"connection refused", func(t *testing.T) (string, func() int64) {
			return deadURL(t), nil
		}, 502},
		{"timeout", func(t *testing.T) (string, func() int64) {
			r := startRaw(t, hang)
			return r.url(), r.requests.Load
		}, 504},
		{"500 answer", func(t *testing.T) (string, func() int64) {
			b := startBackend(t, "b")
			b.setHandler(statusHandler(500))
			return b.url(), b.requests.Load
		}, 500},
		{"the upstream's own 503", func(t *testing.T) (string, func() int64) {
			b := startBackend(t, "b")
			b.setHandler(statusHandler(503))
			return b.url(), b.requests.Load
		}, 503},
		{"connection closed mid-response", func(t *testing.T) (string, func() int64) {
			r := startRaw(t, func(c net.Conn) {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"))
			})
			return r.url(), r.requests.Load
		}, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, attempts := tc.upstream(t)
			g := startGateway(t, oneTenant("api", "", `
timeouts: {request: 200ms}
circuit_breaker: {failure_threshold: 2, open_timeout: 30s}
retries: {attempts: 0}
`, url))
			c := newClient(t, g)
			for i := range 2 {
				if r := c.get("/x"); r.status != tc.wantStatus {
					t.Fatalf("failure %d: %v, want %d", i+1, r, tc.wantStatus)
				}
			}
			r := c.get("/x")
			wantError(t, r, 503, "circuit_open")
			if secs, err := strconv.Atoi(r.retryAfter); err != nil || secs < 1 || secs > 30 {
				t.Errorf("Retry-After %q, want 1..30 seconds (open_timeout 30s)", r.retryAfter)
			}
			if r.took > time.Second {
				t.Errorf("the open breaker's 503 took %v", r.took)
			}
			if attempts != nil {
				if n := attempts(); n != 2 {
					t.Errorf("the upstream saw %d requests, want the 2 that tripped the breaker", n)
				}
			}
		})
	}
}

// TestBreakerTripsOnFailureRatio alternates successes and failures, so
// there are never two failures in a row: the breaker trips on the ratio,
// exactly when min_requests outcomes are in the window.
func TestBreakerTripsOnFailureRatio(t *testing.T) {
	t.Parallel()
	up := startBackend(t, "up")
	var n atomic.Int64
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		if n.Add(1)%2 == 0 {
			ctx.SetStatusCode(500)
			return
		}
		answer(ctx, "up")
	})
	g := startGateway(t, oneTenant("api", "", `
circuit_breaker: {failure_threshold: 100, failure_ratio: 0.5, min_requests: 10, window: 30s, open_timeout: 30s}
retries: {attempts: 0}
`, up.url()))
	c := newClient(t, g)
	for i := 1; i <= 10; i++ {
		if u := c.upstream(t, "api", up.url()); u.Breaker != "closed" {
			t.Fatalf("breaker %s after %d outcomes, want closed until min_requests (10)", u.Breaker, i-1)
		}
		if r := c.get("/x"); r.status != []int{500, 200}[i%2] {
			t.Fatalf("request %d: %v", i, r)
		}
	}
	if u := c.upstream(t, "api", up.url()); u.Breaker != "open" {
		t.Fatalf("breaker %s after 5 failures in 10 requests, want open", u.Breaker)
	}
	wantError(t, c.get("/x"), 503, "circuit_open")
	if got := up.requests.Load(); got != 10 {
		t.Errorf("the upstream saw %d requests, want 10", got)
	}
}

// TestBreakerHalfOpenProbes walks the half-open phase end to end: after
// open_timeout, half_open_max_requests probes go through while others get
// 503 with Retry-After; the probes' success closes the breaker; a failed
// probe re-opens it.
func TestBreakerHalfOpenProbes(t *testing.T) {
	t.Parallel()
	const openTimeout = 200 * time.Millisecond
	up := startBackend(t, "up")
	g := startGateway(t, oneTenant("api", "", yamlf(`
timeouts: {request: 10s}
circuit_breaker: {failure_threshold: 1, open_timeout: %s, half_open_max_requests: 2}
retries: {attempts: 0}
`, openTimeout), up.url()))
	c := newClient(t, g)
	trip := func() time.Time {
		t.Helper()
		up.setHandler(statusHandler(500))
		tripped := time.Now()
		if r := c.get("/x"); r.status != 500 {
			t.Fatalf("tripping request: %v", r)
		}
		if u := c.upstream(t, "api", up.url()); u.Breaker != "open" || u.Available {
			t.Fatalf("after a failure with failure_threshold 1: %+v", u)
		}
		r := c.get("/x")
		wantError(t, r, 503, "circuit_open")
		if r.retryAfter != "1" {
			t.Errorf("Retry-After %q while open for at most 200ms, want 1 (whole seconds, rounded up)", r.retryAfter)
		}
		return tripped
	}
	waitProbes := func(tripped time.Time) {
		t.Helper()
		eventually(t, 10*time.Second, "the breaker to let probes through", func() bool {
			return c.upstream(t, "api", up.url()).Available
		})
		if since := time.Since(tripped); since < openTimeout {
			t.Fatalf("probes allowed %v after the trip, before open_timeout %v", since, openTimeout)
		}
	}

	tripped := trip()
	waitProbes(tripped)
	gt := newGate(t)
	up.setHandler(gt.holding("up"))
	seen := up.requests.Load()
	p1, p2 := c.background("GET", "/probe"), c.background("GET", "/probe")
	eventually(t, 10*time.Second, "both probes to reach the upstream", func() bool { return up.requests.Load() == seen+2 })
	if u := c.upstream(t, "api", up.url()); u.Breaker != "half_open" || u.Inflight != 2 {
		t.Errorf("with two probes in flight: breaker %q, inflight %d", u.Breaker, u.Inflight)
	}
	r := c.get("/x")
	wantError(t, r, 503, "circuit_open")
	if r.retryAfter != "1" {
		t.Errorf("Retry-After %q while half-open, want 1", r.retryAfter)
	}
	if got := up.requests.Load(); got != seen+2 {
		t.Errorf("a third request reached the upstream while half-open with 2 probes")
	}
	gt.open()
	for _, p := range []<-chan result{p1, p2} {
		if r := <-p; r.from() != "up" {
			t.Fatalf("probe: %v", r)
		}
	}
	if u := c.upstream(t, "api", up.url()); u.Breaker != "closed" {
		t.Fatalf("after both probes succeeded: breaker %q, want closed", u.Breaker)
	}
	if r := c.get("/x"); r.from() != "up" {
		t.Fatalf("after the breaker closed: %v", r)
	}

	tripped = trip()
	waitProbes(tripped)
	seen = up.requests.Load()
	if r := c.get("/probe"); r.status != 500 {
		t.Fatalf("failing probe: %v", r)
	}
	if u := c.upstream(t, "api", up.url()); u.Breaker != "open" || u.Available {
		t.Fatalf("after a failed probe: %+v, want open", u)
	}
	wantError(t, c.get("/x"), 503, "circuit_open")
	if got := up.requests.Load() - seen; got != 1 {
		t.Errorf("the re-opened breaker let %d requests through, want only the probe", got)
	}
}

// TestBreakerIgnoresTheGatewaysOwn503s exhausts the gateway's connection
// pool to an upstream: the 503s the gateway answers on its own then are
// not the upstream's failures, and do not trip a breaker that trips on a
// single failure.
func TestBreakerIgnoresTheGatewaysOwn503s(t *testing.T) {
	t.Parallel()
	up := startBackend(t, "up")
	gt := newGate(t)
	up.setHandler(gt.holding("up"))
	g := startGateway(t, oneTenant("api", "", `
pool: {max_conns: 1, max_conn_wait: 20ms}
circuit_breaker: {failure_threshold: 1, min_requests: 1, open_timeout: 1m}
outlier_detection: {consecutive_failures: 1, backoff: 1m}
retries: {attempts: 0}
`, up.url()))
	c := newClient(t, g)
	held := c.background("GET", "/held")
	eventually(t, 10*time.Second, "the first request to hold the only connection", func() bool { return up.requests.Load() == 1 })
	for range 5 {
		wantError(t, c.get("/x"), 503, "no_upstream_available")
	}
	u := c.upstream(t, "api", up.url())
	if u.Breaker != "closed" || u.Ejected || !u.Available || u.PassiveFailures != 0 {
		t.Fatalf("after the gateway's own 503s: %+v, want closed and available", u)
	}
	gt.open()
	if r := <-held; r.from() != "up" {
		t.Fatalf("held request: %v", r)
	}
	if r := c.get("/x"); r.from() != "up" {
		t.Fatalf("after the pool freed up: %v", r)
	}
}

// TestBreakerProbeThatNeverLeftTheGatewayFreesItsSlot reproduces a probe
// that the gateway could not send because its own connection pool was
// full. Such a probe says nothing about the upstream; it must give its
// half-open slot back, or the breaker stays half-open with every slot taken
// and rejects every request for good.
func TestBreakerProbeThatNeverLeftTheGatewayFreesItsSlot(t *testing.T) {
	t.Parallel()
	up := startBackend(t, "up")
	gt := newGate(t)
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/hold" {
			<-gt.ch
		}
		answer(ctx, "up")
	})
	g := startGateway(t, oneTenant("api", "", `
pool: {max_conns: 2, max_conn_wait: 20ms}
timeouts: {request: 10s}
circuit_breaker: {failure_threshold: 1, open_timeout: 200ms, half_open_max_requests: 2}
retries: {attempts: 0}
`, up.url()))
	c := newClient(t, g)
	r1 := c.background("GET", "/hold") // holds connection 1 while the breaker trips
	eventually(t, 10*time.Second, "the first request to reach the upstream", func() bool { return up.requests.Load() == 1 })
	up.stopAccepting()
	wantError(t, c.get("/x"), 502, "upstream_connect_failed") // trips the breaker
	up.restart()
	eventually(t, 10*time.Second, "the breaker to let probes through", func() bool {
		return c.upstream(t, "api", up.url()).Available
	})
	p1 := c.background("GET", "/hold") // probe 1 takes connection 2
	eventually(t, 10*time.Second, "the first probe to reach the upstream", func() bool { return up.requests.Load() == 2 })
	// Probe 2 finds both connections busy: the gateway answers 503 itself.
	wantError(t, c.get("/x"), 503, "no_upstream_available")
	gt.open()
	for _, ch := range []<-chan result{r1, p1} {
		if r := <-ch; r.from() != "up" {
			t.Fatalf("held request: %v", r)
		}
	}
	// One probe succeeded, one was never sent: the next request is the
	// second probe, and its success closes the breaker.
	if r := c.get("/x"); r.from() != "up" {
		t.Fatalf("request after the probes: %v (breaker %s)", r, c.upstream(t, "api", up.url()).Breaker)
	}
	if u := c.upstream(t, "api", up.url()); u.Breaker != "closed" {
		t.Errorf("breaker %q, want closed", u.Breaker)
	}
}

// ---- Retries ----

// retryAll is the retries block of the retry tests: every condition on.
const retryAll = `{attempts: 2, on: [connect_error, timeout, 502, 503, 504]}`

// TestRetryGoesToAnotherUpstream checks that a retry avoids the upstream
// that just failed: with one retry allowed and one of two upstreams down or
// answering 503, every request succeeds.
func TestRetryGoesToAnotherUpstream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bad  func(t *testing.T) (url string, requests func() int64)
		on   string
	}{
		{"connection refused", func(t *testing.T) (string, func() int64) { return deadURL(t), nil }, "connect_error"},
		{"503 answer", func(t *testing.T) (string, func() int64) {
			b := startBackend(t, "bad")
			b.setHandler(statusHandler(503))
			return b.url(), b.requests.Load
		}, "503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			badURL, badRequests := tc.bad(t)
			good := startBackend(t, "good")
			g := startGateway(t, oneTenant("api", "", yamlf("retries: {attempts: 1, on: [%s], budget_ratio: 1}", tc.on), badURL, good.url()))
			c := newClient(t, g)
			for i := range 10 {
				if r := c.get("/x"); r.from() != "good" {
					t.Fatalf("request %d: %v", i, r)
				}
			}
			if badRequests != nil && badRequests() == 0 {
				t.Errorf("no request tried the bad upstream first; the test proves nothing")
			}
		})
	}
}

// TestIdempotentRequestsAreRetriedAfterReachingAnUpstream sends each
// idempotent method, with and without a small body, to an upstream whose
// first answer fails (503, or no answer before the timeout): the retry
// sends the request again, body included, and the client gets the second
// answer.
func TestIdempotentRequestsAreRetriedAfterReachingAnUpstream(t *testing.T) {
	t.Parallel()
	type failure struct {
		name string
		// fail answers the first attempt; release is closed when the
		// subtest ends, so a hanging answer does not outlive it.
		fail func(ctx *fasthttp.RequestCtx, release <-chan struct{})
	}
	failures := []failure{
		{"503", func(ctx *fasthttp.RequestCtx, _ <-chan struct{}) { statusHandler(503)(ctx) }},
		{"timeout", func(ctx *fasthttp.RequestCtx, release <-chan struct{}) { <-release }},
	}
	for _, method := range []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE"} {
		for _, f := range failures {
			for _, body := range [][]byte{nil, []byte(`{"small":"body"}`)} {
				if body != nil && (method == "GET" || method == "HEAD" || method == "OPTIONS") {
					continue
				}
				name := fmt.Sprintf("%s after %s, body of %d bytes", method, f.name, len(body))
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					up := startBackend(t, "up")
					release := make(chan struct{})
					t.Cleanup(func() { close(release) })
					var attempts atomic.Int64
					up.setHandler(func(ctx *fasthttp.RequestCtx) {
						if attempts.Add(1) == 1 {
							f.fail(ctx, release)
							return
						}
						answer(ctx, "up")
						ctx.Response.Header.Set("X-Body-Len", strconv.Itoa(len(ctx.Request.Body())))
					})
					g := startGateway(t, oneTenant("api", "", yamlf(`
timeouts: {request: 200ms}
retries: %s
`, retryAll), up.url()))
					r := newClient(t, g).do(method, "/x", body, "X-Request-ID", "retry-"+method)
					if r.err != nil || r.status != 200 {
						t.Fatalf("%v, want 200 from the retry", r)
					}
					if n := attempts.Load(); n != 2 {
						t.Errorf("the upstream saw %d attempts, want 2", n)
					}
					if n := attemptsOf(t, g, "retry-"+method); n != 2 {
						t.Errorf("access log attempts = %d, want 2", n)
					}
				})
			}
		}
	}
}

// TestBodyOfTheRetryIsTheWholeBody checks what the retried attempt of a PUT
// carries: the same body, byte for byte.
func TestBodyOfTheRetryIsTheWholeBody(t *testing.T) {
	t.Parallel()
	up := startBackend(t, "up")
	var attempts atomic.Int64
	bodies := make(chan string, 2)
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		bodies <- string(ctx.Request.Body())
		if attempts.Add(1) == 1 {
			ctx.SetStatusCode(502)
			return
		}
		answer(ctx, "up")
	})
	g := startGateway(t, oneTenant("api", "", yamlf("retries: %s", retryAll), up.url()))
	body := bytes.Repeat([]byte("0123456789abcdef"), 400) // 6400 bytes
	if r := newClient(t, g).do("PUT", "/x", body); r.from() != "up" {
		t.Fatalf("%v", r)
	}
	for i := range 2 {
		if got := <-bodies; got != string(body) {
			t.Errorf("attempt %d carried %d bytes, want the %d sent", i+1, len(got), len(body))
		}
	}
}

// TestNonIdempotentRequestsAreNotRetriedOnceSent sends POST and PATCH to
// two upstreams that both fail after receiving the request (503, timeout,
// connection closed mid-response): with every retry condition on, exactly
// one attempt is made.
func TestNonIdempotentRequestsAreNotRetriedOnceSent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		start      func(t *testing.T) (url string, requests func() int64)
		wantStatus int
	}{
		{"503 answer", func(t *testing.T) (string, func() int64) {
			b := startBackend(t, "b")
			b.setHandler(statusHandler(503))
			return b.url(), b.requests.Load
		}, 503},
		{"timeout", func(t *testing.T) (string, func() int64) {
			r := startRaw(t, hang)
			return r.url(), r.requests.Load
		}, 504},
		{"connection closed mid-response", func(t *testing.T) (string, func() int64) {
			r := startRaw(t, func(c net.Conn) {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"))
			})
			return r.url(), r.requests.Load
		}, 502},
	} {
		for _, method := range []string{"POST", "PATCH"} {
			t.Run(method+" after "+tc.name, func(t *testing.T) {
				t.Parallel()
				url1, n1 := tc.start(t)
				url2, n2 := tc.start(t)
				g := startGateway(t, oneTenant("api", "", yamlf(`
timeouts: {request: 200ms}
retries: %s
`, retryAll), url1, url2))
				r := newClient(t, g).do(method, "/x", []byte(`{"order":1}`))
				if r.err != nil || r.status != tc.wantStatus {
					t.Fatalf("%v, want %d", r, tc.wantStatus)
				}
				if n := n1() + n2(); n != 1 {
					t.Errorf("the upstreams saw %d attempts of a %s, want exactly 1", n, method)
				}
			})
		}
	}
}

// TestAnyMethodIsRetriedOnConnectError sends every method to a pool whose
// first pick refuses connections: nothing was sent, so even a POST is
// retried on the other upstream, and the body arrives whole, streamed body
// included (a failed dial reads nothing from the client).
func TestAnyMethodIsRetriedOnConnectError(t *testing.T) {
	t.Parallel()
	good := startBackend(t, "good")
	g := startGateway(t, oneTenant("api", "server: {stream_request_body_over: 4KiB}", `
retries: {attempts: 1, on: [connect_error]}
# The dead upstream must stay in rotation for every request.
outlier_detection: {consecutive_failures: 0}
`, deadURL(t), good.url()))
	c := newClient(t, g)
	big := bytes.Repeat([]byte("x"), 64<<10)
	for i, tc := range []struct {
		method string
		body   []byte
	}{
		{"GET", nil}, {"POST", []byte("small")}, {"PATCH", []byte("small")}, {"PUT", []byte("small")},
		{"DELETE", nil}, {"POST", big}, {"PATCH", big},
	} {
		id := fmt.Sprintf("connect-%d", i)
		r := c.do(tc.method, "/x", tc.body, "X-Request-ID", id)
		var e echoed
		if r.err != nil || r.status != 200 || json.Unmarshal(r.body, &e) != nil {
			t.Fatalf("%s with %d bytes: %v", tc.method, len(tc.body), r)
		}
		if e.ID != "good" || e.Method != tc.method || e.Body != len(tc.body) {
			t.Errorf("%s with %d bytes arrived as %s with %d bytes at %s", tc.method, len(tc.body), e.Method, e.Body, e.ID)
		}
		if n := attemptsOf(t, g, id); n != 2 {
			t.Errorf("%s: %d attempts, want 2 (the refused one and the retry)", tc.method, n)
		}
	}
}

// TestStreamedBodiesAreNotRetriedOnceSent sends a PUT whose body is above
// stream_request_body_over: it streams to the upstream, so once the
// upstream has it, a 503 is final. A small PUT to the same upstream is
// retried.
func TestStreamedBodiesAreNotRetriedOnceSent(t *testing.T) {
	t.Parallel()
	up := startBackend(t, "up")
	var attempts atomic.Int64
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		n, _ := io.Copy(io.Discard, ctx.RequestBodyStream())
		ctx.Response.Header.Set("X-Body-Len", strconv.FormatInt(n, 10))
		if attempts.Add(1)%2 == 1 {
			ctx.SetStatusCode(503)
			return
		}
		answer(ctx, "up")
	})
	g := startGateway(t, oneTenant("api", "server: {stream_request_body_over: 4KiB}", yamlf("retries: %s", retryAll), up.url()))
	c := newClient(t, g)
	if r := c.do("PUT", "/x", []byte("small")); r.from() != "up" || attempts.Load() != 2 {
		t.Fatalf("small PUT: %v after %d attempts, want 200 after 2", r, attempts.Load())
	}
	big := bytes.Repeat([]byte("y"), 256<<10)
	r := c.do("PUT", "/x", big)
	if r.err != nil || r.status != 503 {
		t.Fatalf("streamed PUT: %v, want the upstream's 503", r)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("the streamed PUT made %d attempts, want 1", n-2)
	}
}

// ---- Upstreams that break mid-response ----

// TestUpstreamClosingMidResponseAnswers502 has the upstream close the
// connection at each point of a response: before a byte, inside the
// headers, inside a fixed-length body, inside a chunk, before the last
// chunk. The client gets the gateway's 502 JSON error (never the partial
// response as a 200), after the GET was retried twice, and fast.
func TestUpstreamClosingMidResponseAnswers502(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, response string }{
		{"before any byte", ""},
		{"inside the headers", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"inside a fixed-length body", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("x", 100)},
		{"inside a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + strings.Repeat("x", 50)},
		{"before the last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := startRaw(t, func(c net.Conn) { _, _ = io.WriteString(c, tc.response) })
			g := startGateway(t, oneTenant("api", "", yamlf(`
timeouts: {request: 5s}
retries: %s
`, retryAll), raw.url()))
			r := newClient(t, g).get("/x")
			wantError(t, r, 502, "upstream_error")
			if r.took > 3*time.Second {
				t.Errorf("the 502 took %v; nothing should wait on a closed connection", r.took)
			}
			if n := raw.requests.Load(); n != 3 {
				t.Errorf("%d attempts, want 3 (a GET on a broken connection is retried under connect_error)", n)
			}
		})
	}
}

// TestUpstreamStallingMidResponseAnswers504 has the upstream send the
// headers and part of the body, then nothing: every attempt ends at the
// request timeout, and the client gets 504 after the retries, not a hang.
func TestUpstreamStallingMidResponseAnswers504(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	raw := startRaw(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
		hang(c)
	})
	g := startGateway(t, oneTenant("api", "", yamlf(`
timeouts: {request: %s}
retries: %s
`, timeout, retryAll), raw.url()))
	r := newClient(t, g).get("/x")
	wantError(t, r, 504, "upstream_timeout")
	if r.took < 3*timeout || r.took > 3*timeout+3*time.Second {
		t.Errorf("504 after %v, want three attempts of %v each", r.took, timeout)
	}
	if n := raw.requests.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

// TestStreamedResponseCutByTheUpstreamIsCutForTheClient covers
// stream_response_body: the status and headers are on their way before the
// body is read, so a failure can no longer become a 502. The gateway must
// then close the client connection, so the client sees a truncated body as
// the error it is (not a complete response), and within the timeout.
func TestStreamedResponseCutByTheUpstreamIsCutForTheClient(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		then func(net.Conn)
	}{
		{"closed", func(net.Conn) {}},
		{"stalled", hang},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := startRaw(t, func(c net.Conn) {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 1000))
				tc.then(c)
			})
			g := startGateway(t, oneTenant("api", "", yamlf(`
timeouts: {request: %s}
stream_response_body: true
retries: {attempts: 0}
`, timeout), raw.url()))
			r := newClient(t, g).get("/x")
			if r.err == nil {
				t.Fatalf("the client got a complete response: %d with %d bytes", r.status, len(r.body))
			}
			if r.took > timeout+3*time.Second {
				t.Errorf("the client waited %v; the request timeout is %v", r.took, timeout)
			}
		})
	}
}

// ---- Balancers ----

// holdOne sends requests, one at a time, until one of them is held by the
// upstream behind gate (counted by requests); requests the other upstreams
// answer are checked and dropped. It returns the held request's channel.
func holdOne(t *testing.T, c *client, requests *atomic.Int64) <-chan result {
	t.Helper()
	var pending <-chan result
	before := requests.Load()
	eventually(t, 10*time.Second, "a request to be held by the busy upstream", func() bool {
		if requests.Load() > before {
			return true
		}
		if pending != nil {
			select {
			case r := <-pending:
				if r.status != 200 {
					t.Fatalf("request answered by another upstream: %v", r)
				}
			default:
				return false
			}
		}
		pending = c.background("GET", "/x")
		return false
	})
	return pending
}

// TestBalancersEndToEnd runs each balancer through the gateway, with real
// upstreams; the distribution tests of the pickers themselves are in
// balancer/.
func TestBalancersEndToEnd(t *testing.T) {
	t.Parallel()
	t.Run("weighted_round_robin shares 5:1:1 exactly over every cycle", func(t *testing.T) {
		t.Parallel()
		a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
		g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /
    balancer: weighted_round_robin
    upstreams: [{url: %q, weight: 5}, {url: %q, weight: 1}, {url: %q, weight: 1}]
`, a.url(), b.url(), c.url()))
		cl := newClient(t, g)
		for cycle := range 10 {
			seen := map[string]int{}
			for range 7 {
				seen[cl.get("/x").from()]++
			}
			if seen["a"] != 5 || seen["b"] != 1 || seen["c"] != 1 {
				t.Fatalf("cycle %d: %v, want a:5 b:1 c:1", cycle, seen)
			}
		}
	})
	t.Run("least_conn sends nothing to a busy upstream while another is idle", func(t *testing.T) {
		t.Parallel()
		busy, idle := startBackend(t, "busy"), startBackend(t, "idle")
		gt := newGate(t)
		busy.setHandler(gt.holding("busy"))
		g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /
    balancer: least_conn
    upstreams: [{url: %q}, {url: %q}]
`, busy.url(), idle.url()))
		c := newClient(t, g)
		held := holdOne(t, c, &busy.requests)
		if u := c.upstream(t, "api", busy.url()); u.Inflight != 1 {
			t.Errorf("busy upstream: inflight %d, want 1", u.Inflight)
		}
		for i := range 20 {
			if r := c.get("/x"); r.from() != "idle" {
				t.Fatalf("request %d with one upstream busy: %v", i, r)
			}
		}
		gt.open()
		if r := <-held; r.from() != "busy" {
			t.Fatalf("held request: %v", r)
		}
		seen := map[string]int{}
		for range 20 {
			seen[c.get("/x").from()]++
		}
		if seen["busy"] != 10 || seen["idle"] != 10 {
			t.Errorf("both idle: %v, want ties to alternate", seen)
		}
	})
	t.Run("random_two_choices spreads load and avoids a busy upstream", func(t *testing.T) {
		t.Parallel()
		a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
		g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /
    balancer: random_two_choices
    upstreams: [{url: %q}, {url: %q}, {url: %q}]
`, a.url(), b.url(), c.url()))
		cl := newClient(t, g)
		seen := map[string]int{}
		for range 300 {
			seen[cl.get("/x").from()]++
		}
		// Idle upstreams tie, so each pick is uniform: 100 each on
		// average, and 50 is over six standard deviations away.
		for _, id := range []string{"a", "b", "c"} {
			if seen[id] < 50 {
				t.Errorf("%s got %d of 300 requests: %v", id, seen[id], seen)
			}
		}
		gt := newGate(t)
		a.setHandler(gt.holding("a"))
		held := holdOne(t, cl, &a.requests)
		before := a.requests.Load()
		for i := range 30 {
			if r := cl.get("/x"); r.status != 200 || r.from() == "a" {
				t.Fatalf("request %d with a busy: %v", i, r)
			}
		}
		if a.requests.Load() != before {
			t.Errorf("the busy upstream got requests while two others were idle")
		}
		gt.open()
		if r := <-held; r.from() != "a" {
			t.Fatalf("held request: %v", r)
		}
	})
}

// ---- Retry budget ----

// TestRetryBudgetAllowsItsRatioOverTheWindow drives the budget with an
// injected clock: the ratio of the window's requests, the floor of 10, the
// window rolling over, and no overdraft under concurrent withdrawals.
func TestRetryBudgetAllowsItsRatioOverTheWindow(t *testing.T) {
	t.Parallel()
	drain := func(b *retryBudget, now time.Time) int {
		n := 0
		for b.withdraw(now) {
			n++
		}
		return n
	}
	t0 := time.Unix(1_700_000_000, 0)

	b := newRetryBudget(0.2)
	for range 100 {
		b.deposit(t0)
	}
	if n := drain(b, t0); n != 20 {
		t.Errorf("100 requests at ratio 0.2 allowed %d retries, want 20", n)
	}
	// Five seconds on, the same window: 100 more requests allow 20 more.
	for range 100 {
		b.deposit(t0.Add(5 * time.Second))
	}
	if n := drain(b, t0.Add(5*time.Second)); n != 20 {
		t.Errorf("200 requests in the window with 20 retries taken allowed %d more, want 20", n)
	}
	// Ten seconds after the first second, it has left the window, with
	// its requests and its retries.
	if n := drain(b, t0.Add(10*time.Second)); n != 0 {
		t.Errorf("after the first second left the window: %d retries, want 0 (100 requests, 20 retries remain)", n)
	}
	for range 100 {
		b.deposit(t0.Add(10 * time.Second))
	}
	if n := drain(b, t0.Add(10*time.Second)); n != 20 {
		t.Errorf("with a fresh second of 100 requests: %d retries, want 20", n)
	}

	quiet := newRetryBudget(0.2)
	for range 3 {
		quiet.deposit(t0)
	}
	if n := drain(quiet, t0); n != budgetMinRetries {
		t.Errorf("3 requests allowed %d retries, want the floor of %d", n, budgetMinRetries)
	}

	none := newRetryBudget(0)
	none.deposit(t0)
	if n := drain(none, t0); n != budgetMinRetries {
		t.Errorf("ratio 0 allowed %d retries, want the floor of %d", n, budgetMinRetries)
	}

	// Concurrent withdrawals take exactly what the budget holds.
	conc := newRetryBudget(0.1)
	for range 1000 {
		conc.deposit(t0)
	}
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 100 {
				if conc.withdraw(t0) {
					granted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := granted.Load(); n != 100 {
		t.Errorf("16 goroutines withdrew %d retries from a budget of 100", n)
	}
}

// TestRetryBudgetStopsARetryStorm makes every upstream fail every request
// with a retried status: N requests make at most ratio*N retries (plus the
// floor of 10), not attempts*N.
func TestRetryBudgetStopsARetryStorm(t *testing.T) {
	t.Parallel()
	const (
		workers   = 8
		perWorker = 25
		n         = workers * perWorker
		ratio     = 0.2
	)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	a.setHandler(statusHandler(503))
	b.setHandler(statusHandler(503))
	g := startGateway(t, oneTenant("api", "", yamlf(`
retries: {attempts: 3, on: [503], budget_ratio: %v}
# Both upstreams must stay in rotation: the budget is under test.
outlier_detection: {consecutive_failures: 0}
`, ratio), a.url(), b.url()))
	c := newClient(t, g)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if r := c.get("/x"); r.status != 503 {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests did not get the upstreams' 503", bad.Load())
	}
	retries := a.requests.Load() + b.requests.Load() - n
	t.Logf("%d requests made %d retries (attempts 3 would allow %d)", n, retries, 3*n)
	if limit := int64(ratio*n) + budgetMinRetries; retries > limit {
		t.Errorf("%d requests made %d retries, want at most ratio*N + %d = %d", n, retries, budgetMinRetries, limit)
	}
	if retries < budgetMinRetries {
		t.Errorf("%d retries, want at least the floor of %d", retries, budgetMinRetries)
	}
}

// TestRetriesDeliverGETsThroughADyingUpstream runs a bounded load of GETs
// over three upstreams and kills one of them mid-run, its connections and
// requests in flight included: with retries on and a breaker to take the
// dead upstream out, every client request succeeds.
func TestRetriesDeliverGETsThroughADyingUpstream(t *testing.T) {
	t.Parallel()
	const workers, perWorker = 8, 300
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	g := startGateway(t, oneTenant("api", "logging: {access_log: false}", yamlf(`
timeouts: {connect: 1s, request: 5s}
circuit_breaker: {failure_threshold: 3, open_timeout: 500ms}
retries: %s
`, retryAll), a.url(), b.url(), c.url()))
	cl := newClient(t, g)
	var sent atomic.Int64
	var failures sync.Map
	var failed atomic.Int64
	killAt := int64(workers * perWorker / 3)
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if sent.Add(1) == killAt {
					b.kill()
					close(killed)
				}
				if r := cl.get("/x"); r.err != nil || r.status != 200 {
					failed.Add(1)
					failures.Store(fmt.Sprintf("worker %d request %d", w, i), r.String())
				}
			}
		})
	}
	wg.Wait()
	<-killed
	if n := failed.Load(); n != 0 {
		shown := 0
		failures.Range(func(k, v any) bool {
			t.Errorf("%s: %s", k, v)
			shown++
			return shown < 10
		})
		t.Fatalf("%d of %d requests failed while an upstream died", n, workers*perWorker)
	}
	t.Logf("a %d, b %d (killed after about %d requests), c %d", a.requests.Load(), b.requests.Load(), killAt, c.requests.Load())
	if b.requests.Load() == 0 {
		t.Errorf("the killed upstream served nothing before it died; the test proves nothing")
	}
}

// ---- Visible state ----

// TestAdminHealthShowsLiveUpstreamState follows /admin/health through an
// upstream failing its checks, a request in flight, a breaker opening and
// the recovery: per upstream healthy, breaker, consecutive failures, last
// check and its error, in-flight requests; per tenant ok, degraded or down;
// and the gateway's overall status.
func TestAdminHealthShowsLiveUpstreamState(t *testing.T) {
	t.Parallel()
	a, b, w := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "w")
	g := startGatewayWith(t, yamlf(`
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}, {url: %q}]
    health_check: {unhealthy_threshold: 2, healthy_threshold: 1}
    circuit_breaker: {failure_threshold: 2, open_timeout: 1m}
    retries: {attempts: 0}
  - name: web
    path_prefix: /web
    upstreams: [{url: %q}]
`, a.url(), b.url(), w.url()), fastChecks(100*time.Millisecond, 75*time.Millisecond))
	c := newClient(t, g)
	tenant := func(h healthDoc, name string) (status string, available, total int) {
		for _, tn := range h.Tenants {
			if tn.Name == name {
				return tn.Status, tn.Available, tn.Total
			}
		}
		t.Fatalf("no tenant %s in %+v", name, h)
		return "", 0, 0
	}
	wantStatus := func(step, overall, api, web string) {
		t.Helper()
		h := c.health(t)
		gotAPI, _, _ := tenant(h, "api")
		gotWeb, _, _ := tenant(h, "web")
		if h.Status != overall || gotAPI != api || gotWeb != web {
			t.Errorf("%s: gateway %s, api %s, web %s; want %s, %s, %s", step, h.Status, gotAPI, gotWeb, overall, api, web)
		}
	}

	eventually(t, 10*time.Second, "the first checks", func() bool {
		return c.upstream(t, "api", a.url()).LastCheck != nil && c.upstream(t, "api", b.url()).LastCheck != nil
	})
	for _, url := range []string{a.url(), b.url()} {
		u := c.upstream(t, "api", url)
		if !u.Healthy || !u.Available || u.Breaker != "closed" || u.ConsecutiveFailures != 0 || u.LastError != "" ||
			u.Inflight != 0 || time.Since(*u.LastCheck) > time.Minute {
			t.Errorf("healthy upstream: %+v", u)
		}
	}
	if u := c.upstream(t, "web", w.url()); !u.Healthy || u.Breaker != "" || u.LastCheck != nil {
		t.Errorf("upstream without checks or breaker: %+v", u)
	}
	wantStatus("all up", "ok", "ok", "ok")

	a.healthStatus.Store(500)
	eventually(t, 10*time.Second, "a to fail unhealthy_threshold checks", func() bool {
		return !c.upstream(t, "api", a.url()).Healthy
	})
	u := c.upstream(t, "api", a.url())
	if u.Available || u.ConsecutiveFailures < 2 || !strings.Contains(u.LastError, "500") {
		t.Errorf("upstream failing its checks: %+v", u)
	}
	if _, avail, total := tenant(c.health(t), "api"); avail != 1 || total != 2 {
		t.Errorf("api: %d of %d available, want 1 of 2", avail, total)
	}
	wantStatus("a down", "degraded", "degraded", "ok")

	gt := newGate(t)
	b.setHandler(gt.holding("b"))
	held := c.background("GET", "/api/x")
	eventually(t, 10*time.Second, "b to show the request in flight", func() bool {
		return c.upstream(t, "api", b.url()).Inflight == 1
	})
	gt.open()
	if r := <-held; r.from() != "b" {
		t.Fatalf("held request: %v", r)
	}
	if u := c.upstream(t, "api", b.url()); u.Inflight != 0 {
		t.Errorf("inflight %d after the request ended", u.Inflight)
	}

	b.setHandler(statusHandler(500))
	for range 2 {
		if r := c.get("/api/x"); r.status != 500 {
			t.Fatalf("failing request: %v", r)
		}
	}
	if u := c.upstream(t, "api", b.url()); u.Breaker != "open" || u.Available || !u.Healthy {
		t.Errorf("upstream with an open breaker: %+v", u)
	}
	wantStatus("a down, b open", "degraded", "down", "ok")

	a.healthStatus.Store(0)
	eventually(t, 10*time.Second, "a to pass a check again", func() bool {
		return c.upstream(t, "api", a.url()).Healthy
	})
	if u := c.upstream(t, "api", a.url()); u.ConsecutiveFailures != 0 || u.LastError != "" || !u.Available {
		t.Errorf("recovered upstream: %+v", u)
	}
	wantStatus("a back, b open", "degraded", "degraded", "ok")
}

// TestRetryPolicyAllows is the retry decision table: what each condition
// retries, for which methods and bodies, and every listed status (more
// than a handful included).
func TestRetryPolicyAllows(t *testing.T) {
	t.Parallel()
	codes := []int{500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511, 599}
	all := newRetryPolicy(config.Retries{Attempts: 1, Conditions: config.RetryOn{ConnectError: true, Timeout: true, Statuses: codes}})
	none := newRetryPolicy(config.Retries{Attempts: 1})
	for _, code := range codes {
		if !all.allows(failStatus, code, true, false) {
			t.Errorf("status %d listed but not retried", code)
		}
		if none.allows(failStatus, code, true, false) {
			t.Errorf("status %d retried without being listed", code)
		}
	}
	for _, code := range []int{509, 512, 404, 200} {
		if all.allows(failStatus, code, true, false) {
			t.Errorf("status %d retried without being listed", code)
		}
	}
	for _, tc := range []struct {
		f                    failure
		idempotent, streamed bool
		want                 bool
	}{
		{failConnect, false, true, true},     // nothing sent: any request
		{failConnTimeout, false, true, true}, // nothing sent
		{failNoConns, false, true, true},     // nothing sent
		{failClosed, true, false, true},      // sent: idempotent, body in memory
		{failClosed, false, false, false},    // sent: POST
		{failClosed, true, true, false},      // sent: the body was streamed
		{failTimeout, true, false, true},
		{failTimeout, false, false, false},
		{failTimeout, true, true, false},
		{failTooLarge, true, false, false},
	} {
		if got := all.allows(tc.f, 0, tc.idempotent, tc.streamed); got != tc.want {
			t.Errorf("failure %d, idempotent %v, streamed %v: allows = %v, want %v", tc.f, tc.idempotent, tc.streamed, got, tc.want)
		}
		if none.allows(tc.f, 0, tc.idempotent, tc.streamed) {
			t.Errorf("failure %d retried with no condition on", tc.f)
		}
	}
	if !all.resends() || none.resends() {
		t.Errorf("resends: %v with every condition, %v with none", all.resends(), none.resends())
	}
}
