package server

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/breaker"
	"github.com/valyala/fasthttp"
)

// strictConfig is a tenant whose single upstream is judged as harshly as
// possible: one failure opens its breaker, one failure ejects it, and the
// default retry policy applies. A client's fault that were counted against
// the upstream would show at once.
const strictConfig = `
server:
  header_timeout: 400ms
  read_timeout: 400ms
  max_request_body: 1MiB
  stream_request_body_over: 1KiB
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %q}]
    timeouts: {connect: 300ms, request: 500ms}
    circuit_breaker: {failure_threshold: 1, open_timeout: 1m}
    outlier_detection: {consecutive_failures: 1, backoff: 1m}
`

// strictNoRetryConfig is strictConfig without retries, so the status of the
// one attempt reaches the client.
const strictNoRetryConfig = strictConfig + `    retries: {attempts: 0}
`

// upstreamJudged reports the breaker state and availability of the first
// upstream of the gateway's first tenant.
func upstreamJudged(g *gateway) (breaker.State, bool) {
	up := g.srv.snap.Load().tenants[0].pool.ups[0]
	return up.Breaker.State(), up.Available()
}

// rawExchange writes head and body on a new connection, half-closes it
// when closeWrite is set (the client stops sending), and returns the whole
// answer up to the gateway closing the connection.
func (g *gateway) rawExchange(data string, closeWrite bool, timeout time.Duration) string {
	g.t.Helper()
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, data); err != nil {
		g.t.Fatal(err)
	}
	if closeWrite {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestClientFaultsNeverCountAgainstTheUpstream(t *testing.T) {
	t.Parallel()
	const post = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	big := strings.Repeat("d", 4096) // over stream_request_body_over: it streams
	cases := []struct {
		name       string
		req        string
		closeWrite bool
		status     string
		closes     bool // the gateway must close the connection after answering
	}{
		{"a chunk size with trailing garbage (1zzz)", post + "1zzz\r\na\r\n0\r\n\r\n", false, "400", true},
		{"a chunk size in C hex notation (0x5)", post + "0x5\r\nabcde\r\n0\r\n\r\n", false, "400", true},
		{"a signed chunk size (+5)", post + "+5\r\nabcde\r\n0\r\n\r\n", false, "400", true},
		{"a chunk size with an underscore (5_)", post + "5_\r\nabcde\r\n0\r\n\r\n", false, "400", true},
		{"an overflowing chunk size", post + "fffffffffffffffffffff\r\nabcde\r\n0\r\n\r\n", false, "400", true},
		{"a chunk size one digit past 64 bits' worth", post + "ffffffffffffffff\r\nabcde\r\n0\r\n\r\n", false, "400", true},
		{"a huge announced chunk that never comes (read_timeout)", post + "fffffffffffffff\r\nabcde\r\n0\r\n\r\n", false, "408", true},
		{"a chunk without its CRLF", post + "5\r\nabcde0\r\n\r\n", false, "400", true},
		{"a bad trailer", post + "5\r\nabcde\r\n0\r\nbad trailer\r\n\r\n", false, "400", true},
		{"chunk data longer than announced", post + "5\r\nabcdefghij\r\n0\r\n\r\n", false, "400", true},
		{"a bad chunk after a good one", post + "1000\r\n" + big + "\r\nzz\r\n", false, "400", true},
		{"a chunked body cut short", post + "1000\r\n" + big[:100], true, "400", true},
		{"a Content-Length body cut short",
			"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + big[:100], true, "400", true},
		{"a chunked body the client stops sending (read_timeout)", post + "1000\r\n" + big[:100], false, "408", true},
		{"a Content-Length body the client stops sending (read_timeout)",
			"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + big[:100], false, "408", true},
		{"a chunked body over max_request_body",
			post + strings.Repeat("1000\r\n"+big+"\r\n", 300) + "0\r\n\r\n", false, "413", true},
		{"an absolute-form https target on the plain listener",
			"GET https://b.example/echo HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n", false, "200", true},
		{"an absolute-form target in upper case",
			"GET HTTPS://b.example/echo HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n", false, "200", true},
		{"an HTTP/1.0 request without Host",
			"GET /echo HTTP/1.0\r\n\r\n", false, "200", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			up := startEcho(t, "up")
			g := startGateway(t, yamlf(strictConfig, up.url()))
			out := g.rawExchange(c.req, c.closeWrite, 5*time.Second)
			if !strings.HasPrefix(out, "HTTP/1.1 "+c.status) {
				t.Fatalf("got %.300q, want %s", out, c.status)
			}
			if c.status != "200" && !strings.Contains(out, `"request_id":"`) {
				t.Errorf("no JSON error body with a request id: %.400q", out)
			}
			if c.closes && strings.Count(out, "HTTP/1.1 ") != 1 {
				t.Errorf("want exactly one answer and the connection closed: %q", out)
			}
			if st, avail := upstreamJudged(g); st != breaker.StateClosed || !avail {
				t.Fatalf("after the client's fault the breaker is %v and available=%v; want closed and available", st, avail)
			}
			for _, l := range g.accessLines() {
				if l["attempts"].(float64) > 1 {
					t.Errorf("a client's fault was retried: %v", l)
				}
			}
			// The next good request goes through.
			resp := g.do("POST", "", "/after", []byte(big))
			if e := decodeEcho(t, resp); e.Body != len(big) || resp.StatusCode() != 200 {
				t.Errorf("next request: status %d, body_len %d", resp.StatusCode(), e.Body)
			}
		})
	}
}

// faultyUpstream serves each connection with serve on a real loopback
// listener (serveConns) and returns its URL.
func faultyUpstream(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	return "http://" + serveConns(t, serve)
}

// readHead reads a request head from c.
func readHead(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return
		}
	}
}

func TestUpstreamFaultsStillOpenTheBreaker(t *testing.T) {
	t.Parallel()
	closedPort := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}
	answer := func(raw string) func(*testing.T) string {
		return func(t *testing.T) string {
			return faultyUpstream(t, func(c net.Conn) {
				readHead(c)
				_, _ = io.WriteString(c, raw)
			})
		}
	}
	cases := []struct {
		name     string
		upstream func(t *testing.T) string
		body     bool // send a chunked body that streams
		status   int
	}{
		{"a refused connect", closedPort, false, 502},
		{"an upstream that never answers", func(t *testing.T) string { return "http://" + hangingListener(t) }, false, 504},
		{"a reset connection", func(t *testing.T) string {
			return faultyUpstream(t, func(c net.Conn) {
				readHead(c)
				_ = c.(*net.TCPConn).SetLinger(0)
			})
		}, false, 502},
		{"a reset while the request body streams", func(t *testing.T) string {
			return faultyUpstream(t, func(c net.Conn) {
				readHead(c)
				_ = c.(*net.TCPConn).SetLinger(0)
			})
		}, true, 502},
		{"an answer cut off while the request body streams", answer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"), true, 502},
		{"a malformed answer", answer("HTTP/1.1 2x0 What\r\n\r\n"), false, 502},
		{"a truncated answer", answer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"), false, 502},
		{"a configured 5xx", answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"), false, 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g := startGateway(t, yamlf(strictNoRetryConfig, c.upstream(t)))
			var resp *fasthttp.Response
			if c.body {
				// 128 KiB: over stream_request_body_over, so it streams,
				// and under what the gateway drains after answering, so
				// the client reads the answer rather than a reset.
				resp = g.do("POST", "", "/x", []byte(strings.Repeat("u", 128<<10)))
			} else {
				resp = g.get("/x")
			}
			if resp.StatusCode() != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode(), c.status, resp.Body())
			}
			if st, avail := upstreamJudged(g); st != breaker.StateOpen || avail {
				t.Fatalf("after the upstream's fault the breaker is %v and available=%v; want open and ejected", st, avail)
			}
			errorBody(t, g.get("/x"), 503, codeCircuitOpen)
		})
	}
}
