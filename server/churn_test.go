package server

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Upstream churn: dead upstreams and upstreams that close keep-alive
// connections must be invisible to clients (issue 8 §3). The upstreams are
// real listeners on loopback; nothing is mocked.

// churnLoad sends n sequential GETs, then n more from 8 concurrent workers,
// and returns the failures (anything but 200) of each phase, with a few
// examples.
func churnLoad(c *client, n int, method string, body []byte) (seq, conc int, examples []string) {
	var mu sync.Mutex
	note := func(phase string, i int, r result) {
		mu.Lock()
		defer mu.Unlock()
		if len(examples) < 5 {
			examples = append(examples, fmt.Sprintf("%s request %d: %v", phase, i, r))
		}
	}
	for i := range n {
		if r := c.do(method, "/x", body); r.err != nil || r.status != 200 {
			seq++
			note("sequential", i, r)
		}
	}
	const workers = 8
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if r := c.do(method, "/x", body); r.err != nil || r.status != 200 {
					failed.Add(1)
					note("concurrent", i, r)
				}
			}
		})
	}
	wg.Wait()
	return seq, int(failed.Load()), examples
}

// TestDeadUpstreamIsInvisibleToClients puts a closed port beside a live
// upstream with no health check and the default config otherwise: every
// request fails over from the dead one to the live one without spending
// the retry budget (nothing was sent), POSTs included and with retries
// off, and default passive ejection takes the dead one out of rotation.
func TestDeadUpstreamIsInvisibleToClients(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method, retries string
	}{
		{"GETs with the default retries", "GET", ""},
		{"POSTs with the default retries", "POST", ""},
		{"GETs with retries off", "GET", "retries: {attempts: 0}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			live, dead := startBackend(t, "live"), deadURL(t)
			g := startGateway(t, oneTenant("api", "logging: {access_log: false}", tc.retries, dead, live.url()))
			c := newClient(t, g)
			seq, conc, ex := churnLoad(c, 200, tc.method, []byte("payload"))
			t.Logf("failures: %d of 200 sequential, %d of 200 concurrent", seq, conc)
			if seq+conc != 0 {
				t.Fatalf("%d of 400 requests failed with a dead upstream beside a live one: %s", seq+conc, strings.Join(ex, "; "))
			}
			if n := live.requests.Load(); n != 400 {
				t.Errorf("the live upstream saw %d requests, want each of the 400 exactly once", n)
			}
			u := c.upstream(t, "api", dead)
			if !u.Ejected || u.Available {
				t.Errorf("the dead upstream after 400 requests: %+v, want ejected by default", u)
			}
		})
	}
}

// closingUpstream is an HTTP/1.1 upstream that answers each request it
// reads (head and Content-Length body) with a keep-alive response (no
// Connection: close) and then does what after says: close the connection
// at once, or keep it for more requests.
type closingUpstream struct {
	addr     string
	requests atomic.Int64 // requests read
	conns    atomic.Int64 // connections accepted
	closed   atomic.Int64 // connections closed
}

// startClosingUpstream starts an upstream whose connections serve `serve`
// requests each: it answers the first serve-1 and keeps the connection, and
// on the last either answers and closes (answerLast) or reads the request
// and closes without a byte of answer.
func startClosingUpstream(t *testing.T, serve int, answerLast bool, extraHeaders string) *closingUpstream {
	t.Helper()
	return startClosingUpstreamTLS(t, serve, answerLast, extraHeaders, nil)
}

// startClosingUpstreamTLS is startClosingUpstream speaking TLS with cfg, or
// plain HTTP if cfg is nil.
func startClosingUpstreamTLS(t *testing.T, serve int, answerLast bool, extraHeaders string, cfg *tls.Config) *closingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &closingUpstream{addr: ln.Addr().String()}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			u.conns.Add(1)
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
					u.closed.Add(1)
				}()
				tp := textproto.NewReader(bufio.NewReader(c))
				for i := 1; i <= serve; i++ {
					if _, err := tp.ReadLine(); err != nil {
						return
					}
					h, err := tp.ReadMIMEHeader()
					if err != nil {
						return
					}
					if n, _ := strconv.Atoi(h.Get("Content-Length")); n > 0 {
						if _, err := io.CopyN(io.Discard, tp.R, int64(n)); err != nil {
							return
						}
					}
					u.requests.Add(1)
					if i == serve && !answerLast {
						return
					}
					body := `{"id":"closing"}`
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", extraHeaders, len(body), body)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

func (u *closingUpstream) url() string { return "http://" + u.addr }

// TestUpstreamClosingKeepAliveConnectionsIsInvisible proxies GETs to an
// upstream that closes every connection right after its response without
// saying so: a request that meets a pooled connection the upstream closed
// is sent on a fresh connection, whatever the retry budget, and the
// upstream sees every request exactly once. Before the fix, 80 of 200
// sequential GETs got 502.
func TestUpstreamClosingKeepAliveConnectionsIsInvisible(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, header, retries string
	}{
		{"silently, default retries", "", ""},
		{"silently, retries off", "", "retries: {attempts: 0}"},
		{"with Connection: close", "Connection: close\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := startClosingUpstream(t, 1, true, tc.header)
			g := startGateway(t, oneTenant("api", "logging: {access_log: false}", tc.retries, up.url()))
			c := newClient(t, g)
			seq, conc, ex := churnLoad(c, 200, "GET", nil)
			t.Logf("failures: %d of 200 sequential, %d of 200 concurrent", seq, conc)
			if seq+conc != 0 {
				t.Fatalf("%d of 400 requests failed on an upstream closing its connections: %s", seq+conc, strings.Join(ex, "; "))
			}
			if n := up.requests.Load(); n != 400 {
				t.Errorf("the upstream read %d requests, want each of the 400 exactly once", n)
			}
		})
	}
}

// TestPOSTMeetingAClosedConnectionIsSentOnANewOne sends POSTs to an upstream
// that closes each connection after its response, each POST after the
// upstream has closed the previous connection: nothing of a POST was sent
// on the closed connection, so it goes on a new one, and arrives once.
func TestPOSTMeetingAClosedConnectionIsSentOnANewOne(t *testing.T) {
	t.Parallel()
	up := startClosingUpstream(t, 1, true, "")
	g := startGateway(t, oneTenant("api", "", "", up.url()))
	c := newClient(t, g)
	const n = 50
	for i := range n {
		if r := c.do("POST", "/x", []byte("payload")); r.err != nil || r.status != 200 {
			t.Fatalf("POST %d: %v", i, r)
		}
		eventually(t, 5*time.Second, "the upstream to close the connection", func() bool { return up.closed.Load() == int64(i+1) })
	}
	if got := up.requests.Load(); got != n {
		t.Errorf("the upstream read %d POSTs, want each of the %d exactly once", got, n)
	}
	if got := up.conns.Load(); got != n {
		t.Errorf("the upstream accepted %d connections for %d POSTs, want one each", got, n)
	}
}

// TestRequestSentOnAClosingConnectionIsResentOnlyIfIdempotent uses an
// upstream that answers the first request of each connection and reads the
// second, then closes without a byte of answer: the second request was sent
// on a reused connection and may have been processed. A GET goes again once
// on a new connection; a POST is not sent twice, and gets 502.
func TestRequestSentOnAClosingConnectionIsResentOnlyIfIdempotent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method     string
		wantStatus int
		wantReads  int64 // by the upstream, for the two requests
	}{
		{"GET", 200, 3},
		{"POST", 502, 2},
	} {
		t.Run(tc.method, func(t *testing.T) {
			t.Parallel()
			up := startClosingUpstream(t, 2, false, "")
			g := startGateway(t, oneTenant("api", "", "", up.url()))
			c := newClient(t, g)
			if r := c.do(tc.method, "/x", []byte("first")); r.err != nil || r.status != 200 {
				t.Fatalf("first %s: %v", tc.method, r)
			}
			r := c.do(tc.method, "/x", []byte("second"))
			if tc.wantStatus == 200 {
				if r.err != nil || r.status != 200 {
					t.Fatalf("second %s: %v", tc.method, r)
				}
			} else {
				wantError(t, r, tc.wantStatus, "upstream_error")
			}
			if got := up.requests.Load(); got != tc.wantReads {
				t.Errorf("the upstream read %d requests, want %d", got, tc.wantReads)
			}
		})
	}
}

// TestKeepAliveTimeoutIsHonoured: an upstream announcing Keep-Alive:
// timeout=1 gets a new connection for a request sent after 600ms idle (past
// the timeout less its margin), although it has not closed the old one yet.
func TestKeepAliveTimeoutIsHonoured(t *testing.T) {
	t.Parallel()
	up := startClosingUpstream(t, 1000, true, "Keep-Alive: timeout=1\r\n")
	g := startGateway(t, oneTenant("api", "", "", up.url()))
	c := newClient(t, g)
	for i := range 3 {
		if r := c.get("/x"); r.err != nil || r.status != 200 {
			t.Fatalf("GET %d: %v", i, r)
		}
	}
	if got := up.conns.Load(); got != 1 {
		t.Fatalf("3 GETs in a row used %d connections, want 1 kept alive", got)
	}
	time.Sleep(600 * time.Millisecond)
	if r := c.get("/x"); r.err != nil || r.status != 200 {
		t.Fatalf("GET after 600ms: %v", r)
	}
	if got := up.conns.Load(); got != 2 {
		t.Errorf("after 600ms idle with timeout=1 announced: %d connections, want a new one (2)", got)
	}
	if got := up.requests.Load(); got != 4 {
		t.Errorf("the upstream read %d requests, want 4", got)
	}
}

// TestAnswered500sDoNotEjectByDefault: both upstreams answer 500 to a path
// a client chooses, many times in a row. With the default config (ejection
// on, 500 not in retries.on) that is the upstream answering, not failing:
// neither is ejected, and the other paths keep working.
func TestAnswered500sDoNotEjectByDefault(t *testing.T) {
	t.Parallel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	for _, up := range []*backend{a, b} {
		up.setHandler(func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/bad" {
				ctx.SetStatusCode(500)
				return
			}
			answer(ctx, up.id)
		})
	}
	g := startGateway(t, oneTenant("api", "", "", a.url(), b.url()))
	c := newClient(t, g)
	for i := range 20 {
		if r := c.get("/bad"); r.status != 500 {
			t.Fatalf("GET /bad %d: %v, want the upstream's 500", i, r)
		}
	}
	for _, up := range []*backend{a, b} {
		if u := c.upstream(t, "api", up.url()); u.Ejected || !u.Available || u.PassiveFailures != 0 {
			t.Errorf("%s after 10 answered 500s in a row: %+v, want available with no passive failures", up.id, u)
		}
	}
	seen := map[string]bool{}
	for range 4 {
		seen[c.get("/ok").from()] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("after the 500s, GET /ok reached %v, want both upstreams", seen)
	}
}

// TestFullPoolFailsOverToAnotherUpstream fills the gateway's only
// connection to one upstream: a request picked for it finds no free
// connection within max_conn_wait, nothing was sent, and it goes to the
// other upstream, with retries off.
func TestFullPoolFailsOverToAnotherUpstream(t *testing.T) {
	t.Parallel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	gt := newGate(t)
	a.setHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/held" {
			<-gt.ch
		}
		answer(ctx, "a")
	})
	g := startGateway(t, oneTenant("api", "", `
pool: {max_conns: 1, max_conn_wait: 20ms}
retries: {attempts: 0}
`, a.url(), b.url()))
	c := newClient(t, g)
	// The first pick is a: the held request takes its only connection.
	held := c.background("GET", "/held")
	eventually(t, 10*time.Second, "the held request to reach a", func() bool { return a.requests.Load() == 1 })
	// Round robin picks a for every other request: each of those waits
	// 20ms for a connection, then goes to b.
	for i := range 6 {
		if r := c.get("/x"); r.from() != "b" {
			t.Fatalf("GET %d with a's only connection held: %v, want b", i, r)
		}
	}
	if n := a.requests.Load(); n != 1 {
		t.Errorf("a got %d requests, want only the held one", n)
	}
	if u := c.upstream(t, "api", a.url()); u.Ejected || u.PassiveFailures != 0 {
		t.Errorf("a after its pool was full: %+v, want no failure held against it", u)
	}
	gt.open()
	if r := <-held; r.from() != "a" {
		t.Errorf("held request: %v", r)
	}
}

// TestEveryUpstreamDeadTriesEachOnce: with every upstream refusing, the free
// failover tries each once and stops; retries (one by default, from the
// budget) come on top, and the client gets the gateway's 502.
func TestEveryUpstreamDeadTriesEachOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, retries string
		attempts      int
	}{
		{"retries off", "{attempts: 0}", 3},
		{"one retry", "{attempts: 1}", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dead := deadURLs(t, 3)
			g := startGateway(t, oneTenant("api", "", yamlf(`
outlier_detection: {consecutive_failures: 0}
retries: %s
`, tc.retries), dead[0], dead[1], dead[2]))
			c := newClient(t, g)
			r := c.do("GET", "/x", nil, "X-Request-ID", "all-dead")
			wantError(t, r, 502, "upstream_connect_failed")
			if n := attemptsOf(t, g, "all-dead"); n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
		})
	}
}

// deadURLs returns the URLs of n distinct loopback ports nothing listens
// on: all are held open until every one is chosen (deadURL, called n
// times, may hand out a port twice).
func deadURLs(t *testing.T, n int) []string {
	t.Helper()
	urls := make([]string, n)
	lns := make([]net.Listener, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], urls[i] = ln, "http://"+ln.Addr().String()
	}
	for _, ln := range lns {
		ln.Close()
	}
	return urls
}
