package server

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

const hardenedConfig = `
server:
  header_timeout: 300ms
  idle_timeout: 400ms
  max_header_bytes: 4KiB
  max_request_line: 1KiB
  max_headers: 20
  max_request_body: 64KiB
  stream_request_body_over: 16KiB
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %q}]
`

func TestHardeningLimitsAnswerWithTheRightStatus(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(hardenedConfig, up.url()))
	manyHeaders := ""
	for i := range 30 {
		manyHeaders += "X-H" + strings.Repeat("a", i) + ": v\r\n"
	}
	cases := []struct {
		name, req, status string
	}{
		{"a request line over max_request_line is 414",
			"GET /" + strings.Repeat("a", 2000) + " HTTP/1.1\r\nHost: x\r\n\r\n", "414"},
		{"a header block over max_header_bytes is 431",
			"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 4500) + "\r\n\r\n", "431"},
		{"a header block over the read buffer is 431",
			"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n\r\n", "431"},
		{"more than max_headers fields is 431",
			"GET / HTTP/1.1\r\nHost: x\r\n" + manyHeaders + "\r\n", "431"},
		{"a Content-Length over max_request_body is 413",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("z", 100000), "413"},
	}
	for _, c := range cases {
		out := g.raw(c.req, 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 "+c.status) {
			t.Errorf("%s: got %.80q", c.name, out)
			continue
		}
		if !strings.Contains(out, `"request_id":"`) {
			t.Errorf("%s: no JSON error body with a request id: %.300q", c.name, out)
		}
	}
	if n := up.requests.Load(); n != 0 {
		t.Errorf("%d rejected requests reached the upstream", n)
	}
}

func TestChunkedBodyOverTheLimitIs413(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(hardenedConfig, up.url()))
	chunk := strings.Repeat("c", 8192)
	var b strings.Builder
	b.WriteString("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 12 { // 96 KiB > 64 KiB
		b.WriteString("2000\r\n" + chunk + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	out := g.raw(b.String(), 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 413") {
		t.Fatalf("got %.200q", out)
	}
	// Within the limit, chunked bodies stream through.
	b.Reset()
	b.WriteString("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
	for range 4 {
		b.WriteString("2000\r\n" + chunk + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	out = g.raw(b.String(), 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, `"body_len":32768`) {
		t.Fatalf("chunked body within the limit: %.300q", out)
	}
}

func TestSlowHeadersGet408AndTheConnectionIsClosed(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(hardenedConfig, up.url()))
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	// Slowloris: a request line, then nothing.
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to a stalled header block after %v: %v", time.Since(start), err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 408") {
		t.Errorf("got %q, want 408", line)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow client held the connection %v, header_timeout is 300ms", d)
	}
	// The connection is closed after the answer.
	for {
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
	}
}

func TestIdleKeepAliveConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(hardenedConfig, up.url()))
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle connection stayed open %v, idle_timeout is 400ms", d)
	}
}

func TestRequestSmugglingAttemptsAreRejected(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(hardenedConfig, up.url()))
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct{ name, req string }{
		{"Content-Length and Transfer-Encoding together",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"Transfer-Encoding before Content-Length",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
		{"duplicate Content-Length",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + smuggled},
		{"malformed Content-Length",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4a\r\n\r\nabcd" + smuggled},
		{"signed Content-Length",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd" + smuggled},
		{"unknown transfer coding",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"repeated transfer codings",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"identity transfer coding",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" + smuggled},
		{"Transfer-Encoding on HTTP/1.0",
			"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"space before the colon",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + smuggled},
	}
	for _, c := range cases {
		before := up.requests.Load()
		out := g.raw(c.req, 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 400") {
			t.Errorf("%s: got %.120q, want 400", c.name, out)
		}
		if strings.Count(out, "HTTP/1.1 ") != 1 {
			t.Errorf("%s: the connection must close after the 400, got:\n%s", c.name, out)
		}
		if n := up.requests.Load() - before; n != 0 {
			t.Errorf("%s: %d requests reached the upstream", c.name, n)
		}
	}
}

func TestObsFoldIsNeverForwardedRaw(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(hardenedConfig, up.url()))
	out := g.raw("GET / HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n two\r\nConnection: close\r\n\r\n", 3*time.Second)
	switch {
	case strings.HasPrefix(out, "HTTP/1.1 400"):
		if up.requests.Load() != 0 {
			t.Errorf("a rejected folded header reached the upstream")
		}
	case strings.HasPrefix(out, "HTTP/1.1 200"):
		up.mu.Lock()
		raw := up.last.Header.String()
		up.mu.Unlock()
		if strings.Contains(raw, "\r\n two") || strings.Contains(raw, "\r\n\ttwo") {
			t.Errorf("obs-fold forwarded raw:\n%q", raw)
		}
	default:
		t.Fatalf("got %.120q", out)
	}
}

func TestWithoutStreamingBodiesAreBufferedAndStillBounded(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	// A threshold at max_request_body: nothing streams, fasthttp buffers
	// every body and enforces the limit itself.
	g := startGateway(t, yamlf(`
server: {max_request_body: 64KiB, stream_request_body_over: 64KiB}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	if g.srv.srv.StreamRequestBody {
		t.Fatal("streaming should be off when the threshold equals max_request_body")
	}
	resp := g.do("POST", "", "/up", []byte(strings.Repeat("b", 60<<10)))
	if e := decodeEcho(t, resp); e.Body != 60<<10 {
		t.Errorf("upstream got %d bytes, want %d", e.Body, 60<<10)
	}
	out := g.raw("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"+strings.Repeat("z", 70000), 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 413") || !strings.Contains(out, `"error":"request_too_large"`) {
		t.Errorf("Content-Length over the limit: %.200q", out)
	}
	var b strings.Builder
	b.WriteString("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 10 {
		b.WriteString("2000\r\n" + strings.Repeat("c", 8192) + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	if out := g.raw(b.String(), 3*time.Second); !strings.HasPrefix(out, "HTTP/1.1 413") {
		t.Errorf("chunked body over the limit: %.200q", out)
	}
}
