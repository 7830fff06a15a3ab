package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsUpstream is a real WebSocket server on loopback (coder/websocket over
// net/http). Paths: /echo echoes every message; /bye closes with 4000
// after the first message; /die drops the TCP connection after the first
// message, without a close frame; /refuse answers 403 without upgrading.
type wsUpstream struct {
	addr    string
	mu      sync.Mutex
	headers http.Header // of the last handshake
	// closes receives the close status of each /echo connection as the
	// upstream saw it end.
	closes chan websocket.StatusCode
	opened atomic.Int64
	mux    *http.ServeMux
}

func startWSUpstream(t *testing.T) *wsUpstream {
	t.Helper()
	u := &wsUpstream{closes: make(chan websocket.StatusCode, 2048)}
	mux := http.NewServeMux()
	mux.HandleFunc("/refuse", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		http.Error(w, "no websockets here", http.StatusForbidden)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.record(r)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		u.opened.Add(1)
		c.SetReadLimit(8 << 20)
		ctx := context.Background()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				u.closes <- websocket.CloseStatus(err)
				c.CloseNow()
				return
			}
			switch r.URL.Path {
			case "/bye":
				c.Close(4000, "bye")
				return
			case "/die":
				c.CloseNow()
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	u.mux = mux
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	return u
}

// TestWebSocketTLSUpstream relays a WebSocket to a wss (https://) upstream:
// the gateway's own upstream connection does the TLS handshake, verified
// against the upstream's certificate.
func TestWebSocketTLSUpstream(t *testing.T) {
	t.Parallel()
	plain := startWSUpstream(t)
	ts := httptest.NewTLSServer(plain.mux)
	t.Cleanup(ts.Close)
	g := startGateway(t, oneTenant("wss", "logging: {level: error}", "", ts.URL))
	trustUpstreams(g, ts.Certificate())
	ctx := wsContext(t)
	c := wsConnect(t, ctx, "ws://"+g.addr+"/echo")
	if err := c.Write(ctx, websocket.MessageBinary, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "over tls" {
		t.Fatalf("echo over a TLS upstream: %q, %v", b, err)
	}
}

func (u *wsUpstream) record(r *http.Request) {
	u.mu.Lock()
	u.headers = r.Header.Clone()
	u.mu.Unlock()
}

func (u *wsUpstream) lastHeaders() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers
}

// wsContext bounds a test's WebSocket calls to 10s.
func wsContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wsConnect dials url (wsDial) and fails the test if that fails; the
// connection is closed when the test ends.
func wsConnect(t *testing.T, ctx context.Context, url string, hdr ...string) *websocket.Conn {
	t.Helper()
	c, _, err := wsDial(t, ctx, url, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func wsDial(t testing.TB, ctx context.Context, url string, hdr ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if c != nil {
		c.SetReadLimit(8 << 20)
	}
	return c, resp, err
}

// wsGateway starts a gateway with one tenant, "ws", over up; keys are
// added to the tenant (oneTenant).
func wsGateway(t *testing.T, up *wsUpstream, keys string, files ...string) *gateway {
	t.Helper()
	return startGateway(t, oneTenant("ws", "logging: {level: error}", keys, "http://"+up.addr), files...)
}

// upgradedCount reads the tenant's upgraded_connections from /admin/tenants.
func upgradedCount(t *testing.T, g *gateway, tenant string) int {
	t.Helper()
	resp := g.get("/admin/tenants")
	var doc []struct {
		Name     string `json:"name"`
		Upgraded int    `json:"upgraded_connections"`
	}
	if err := json.Unmarshal(resp.Body(), &doc); err != nil {
		t.Fatalf("/admin/tenants: %v: %s", err, resp.Body())
	}
	for _, d := range doc {
		if d.Name == tenant {
			return d.Upgraded
		}
	}
	t.Fatalf("/admin/tenants has no tenant %q: %s", tenant, resp.Body())
	return 0
}

func TestWebSocketEcho(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "")
	ctx := wsContext(t)
	c, resp, err := wsDial(t, ctx, "ws://"+g.addr+"/echo", "X-Request-ID", "ws-test-1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("X-Request-ID"); got != "ws-test-1" {
		t.Errorf("101 X-Request-ID = %q, want the client's", got)
	}
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<18) // 1 MiB: many reads, frames across them
	for _, m := range []struct {
		typ websocket.MessageType
		b   []byte
	}{{websocket.MessageText, []byte("hello")}, {websocket.MessageBinary, []byte{0, 0xfe, 0xff}}, {websocket.MessageBinary, big}, {websocket.MessageText, []byte("")}} {
		if err := c.Write(ctx, m.typ, m.b); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != m.typ || !bytes.Equal(got, m.b) {
			t.Fatalf("echo of %d bytes (%v): got %d bytes, type %v, err %v", len(m.b), m.typ, len(got), typ, err)
		}
	}
	h := up.lastHeaders()
	if h.Get("Upgrade") != "websocket" || !strings.EqualFold(h.Get("Connection"), "Upgrade") ||
		h.Get("Sec-Websocket-Key") == "" || h.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("upstream saw handshake headers %v", h)
	}
	if n := upgradedCount(t, g, "ws"); n != 1 {
		t.Errorf("upgraded_connections = %d while open, want 1", n)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close handshake through the gateway: %v", err)
	}
	if st := <-up.closes; st != websocket.StatusNormalClosure {
		t.Errorf("upstream saw close status %v, want 1000", st)
	}
	eventually(t, 5*time.Second, "upgraded_connections back to 0", func() bool { return upgradedCount(t, g, "ws") == 0 })
}

func TestWebSocketUpstreamCloses(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "")
	ctx := wsContext(t)
	for path, want := range map[string]websocket.StatusCode{
		"/bye": 4000, // the upstream's own close frame, relayed
		"/die": 1014, // the upstream vanished: the gateway says bad gateway
	} {
		c, _, err := wsDial(t, ctx, "ws://"+g.addr+path)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		_, _, err = c.Read(ctx)
		if st := websocket.CloseStatus(err); st != want {
			t.Errorf("%s: client read ended with %v (status %d), want close status %d", path, err, st, want)
		}
		c.CloseNow()
	}
	eventually(t, 5*time.Second, "upgraded_connections back to 0", func() bool { return upgradedCount(t, g, "ws") == 0 })
}

func TestWebSocketRefusedByUpstream(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "")
	resp := g.get("/refuse", "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13",
		"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if resp.StatusCode() != 403 || !strings.Contains(string(resp.Body()), "no websockets here") {
		t.Fatalf("status %d body %q: want the upstream's 403", resp.StatusCode(), resp.Body())
	}
	if len(resp.Header.Peek("Upgrade")) != 0 {
		t.Errorf("a refused upgrade's answer carries Upgrade: %q", resp.Header.Peek("Upgrade"))
	}
}

func TestWebSocketDisabledForwardsPlainRequest(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "websocket: {enabled: false}")
	resp := g.get("/refuse", "Connection", "Upgrade", "Upgrade", "websocket")
	if resp.StatusCode() != 403 {
		t.Fatalf("status %d", resp.StatusCode())
	}
	if h := up.lastHeaders(); h.Get("Upgrade") != "" || h.Get("Connection") != "" {
		t.Errorf("a tenant without websockets forwarded the upgrade: %v", h)
	}
}

// TestWebSocketLuaAuth checks that a script's middleware runs before the
// upgrade: without the token the upgrade is refused and never reaches the
// upstream; with it, the middleware's next leads to the tunnel.
func TestWebSocketLuaAuth(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "script: auth.lua", "auth.lua", `
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    if req:Header():Get("Authorization") ~= "Bearer letmein" then
      w:JSON(401, { error = "unauthorized" })
      return
    end
    next(w, req)
  end
end)
r:Handle("/*", keystone.Proxy("ws"))
return r
`)
	ctx := wsContext(t)
	_, resp, err := wsDial(t, ctx, "ws://"+g.addr+"/echo")
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("without a token: err %v, response %v; want 401", err, resp)
	}
	if n := up.opened.Load(); n != 0 {
		t.Fatalf("the upstream accepted %d connections the middleware refused", n)
	}
	c := wsConnect(t, ctx, "ws://"+g.addr+"/echo", "Authorization", "Bearer letmein")
	if err := c.Write(ctx, websocket.MessageText, []byte("authorized")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "authorized" {
		t.Fatalf("echo after auth: %q, %v", b, err)
	}
}

func TestWebSocketIdleTimeout(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "websocket: {idle_timeout: 1s}")
	ctx := wsContext(t)
	c := wsConnect(t, ctx, "ws://"+g.addr+"/echo")
	// Activity keeps it open past the idle timeout.
	for range 4 {
		time.Sleep(300 * time.Millisecond)
		if err := c.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatalf("an active connection was closed: %v", err)
		}
	}
	start := time.Now()
	_, _, err := c.Read(ctx)
	if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
		t.Fatalf("idle read ended with %v, want close status 1001", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v idle", d)
	}
	if st := <-up.closes; st != websocket.StatusGoingAway {
		t.Errorf("upstream saw close status %v, want 1001", st)
	}
}

func TestWebSocketShutdownSendsGoingAway(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "")
	ctx := wsContext(t)
	c := wsConnect(t, ctx, "ws://"+g.addr+"/echo")
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.Read(ctx)
		readErr <- err
	}()
	grace, cancelGrace := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelGrace()
	start := time.Now()
	_ = g.srv.Shutdown(grace)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Shutdown returned after %v, before the grace ended with a WebSocket open", d)
	}
	if st := websocket.CloseStatus(<-readErr); st != websocket.StatusGoingAway {
		t.Errorf("client saw close status %v, want 1001", st)
	}
	if st := <-up.closes; st != websocket.StatusGoingAway {
		t.Errorf("upstream saw close status %v, want 1001", st)
	}
}

// TestWebSocketManyConcurrent runs 1,000 WebSockets through the gateway
// at once, each echoing messages, and checks every echo and the admin
// count at the peak.
func TestWebSocketManyConcurrent(t *testing.T) {
	up := startWSUpstream(t)
	g := wsGateway(t, up, "")
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := wsDial(t, ctx, "ws://"+g.addr+"/echo")
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := upgradedCount(t, g, "ws"); got != n {
		t.Errorf("upgraded_connections = %d, want %d", got, n)
	}
	var echoed atomic.Int64
	errs = make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 3 {
				msg := fmt.Sprintf("conn %d message %d", i, j)
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					errs <- err
					return
				}
				_, b, err := c.Read(ctx)
				if err != nil || string(b) != msg {
					errs <- fmt.Errorf("conn %d: got %q, %v", i, b, err)
					return
				}
				echoed.Add(1)
			}
			errs <- c.Close(websocket.StatusNormalClosure, "")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if echoed.Load() != 3*n {
		t.Errorf("%d echoes, want %d", echoed.Load(), 3*n)
	}
	eventually(t, 10*time.Second, "upgraded_connections back to 0", func() bool { return upgradedCount(t, g, "ws") == 0 })
}

// TestUpgradeOtherProtocol relays a protocol listed in upgrade_protocols to
// a raw upstream that answers 101 and then echoes bytes, and leaves an
// unlisted one as a plain request.
func TestUpgradeOtherProtocol(t *testing.T) {
	t.Parallel()
	up := faultyUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Header.Get("Upgrade") != "foo/1" {
			fmt.Fprintf(c, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		// The 101 and the first bytes of the new protocol in one write:
		// the gateway must pass both on.
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\nready\n")
		io.Copy(c, br) //nolint:errcheck
	})
	g := startGateway(t, oneTenant("raw", "logging: {level: error}", "upgrade_protocols: [foo]", up))
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "foo/1" {
		t.Fatalf("status %d, Upgrade %q", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("first bytes after the 101: %q, %v", line, err)
	}
	fmt.Fprintf(c, "ping 1\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping 1\n" {
		t.Fatalf("echo: %q, %v", line, err)
	}

	// Unlisted: forwarded without the upgrade, answered as a request.
	other := g.get("/tunnel", "Connection", "Upgrade", "Upgrade", "bar")
	if other.StatusCode() != 426 {
		t.Errorf("unlisted protocol: status %d, want the upstream's 426 to a plain request", other.StatusCode())
	}
}

// TestWebSocketDeadUpstream checks that an upgrade to an upstream that
// refuses connections fails over to a live one, and with none answers 502.
func TestWebSocketDeadUpstream(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	dead := deadURLs(t, 1)[0]
	g := startGateway(t, yamlf(`
logging: {level: error}
tenants:
  - {name: both, path_prefix: /both, upstreams: [{url: %q}, {url: "http://%s"}], retries: {attempts: 0}}
  - {name: dead, path_prefix: /, upstreams: [{url: %q}]}
`, dead, up.addr, dead))
	ctx := wsContext(t)
	for range 2 { // round robin: one of the two picks the dead one first
		c, _, err := wsDial(t, ctx, "ws://"+g.addr+"/both/echo")
		if err != nil {
			t.Fatalf("with a live upstream beside a dead one: %v", err)
		}
		c.CloseNow()
	}
	_, resp, err := wsDial(t, ctx, "ws://"+g.addr+"/echo")
	if err == nil || resp == nil || resp.StatusCode != 502 {
		t.Fatalf("dead upstream: %v, %v; want 502", err, resp)
	}
}

// FuzzFrameTracker checks that the frame tracker reaches the same state
// whatever the reads that cut a stream of frames, and never panics on
// garbage.
func FuzzFrameTracker(f *testing.F) {
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o', 0x88, 0x02, 0x03, 0xe8}, 3)
	f.Add([]byte{0x82, 0xfe, 0x00, 0x04, 1, 2, 3, 4, 9, 9, 9, 9}, 5)
	f.Add([]byte{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1, 0xaa}, 9)
	f.Fuzz(func(t *testing.T, stream []byte, cut int) {
		var whole, split frameTracker
		whole.feed(stream)
		if cut < 0 {
			cut = -cut
		}
		if len(stream) > 0 {
			cut %= len(stream) + 1
		} else {
			cut = 0
		}
		split.feed(stream[:cut])
		split.feed(stream[cut:])
		if whole != split {
			t.Fatalf("state after one read %+v differs from after two %+v", whole, split)
		}
	})
}

func TestFrameTracker(t *testing.T) {
	t.Parallel()
	var f frameTracker
	// A masked 300-byte binary frame: 126 length form, mask key, payload.
	frame := append([]byte{0x82, 0x80 | 126, 0x01, 0x2c, 1, 2, 3, 4}, make([]byte, 300)...)
	for i, b := range frame {
		if f.atBoundary() != (i == 0) {
			t.Fatalf("byte %d: atBoundary %v", i, f.atBoundary())
		}
		f.feed([]byte{b})
	}
	if !f.atBoundary() || f.sawClose {
		t.Fatalf("after the frame: %+v", f)
	}
	f.feed([]byte{0x88, 0x00})
	if !f.atBoundary() || !f.sawClose {
		t.Fatalf("after a close frame: %+v", f)
	}
}

func TestWebSocketMaxLifetime(t *testing.T) {
	t.Parallel()
	up := startWSUpstream(t)
	g := wsGateway(t, up, "websocket: {idle_timeout: 1m, max_lifetime: 400ms}")
	ctx := wsContext(t)
	start := time.Now() // before the upgrade, which starts the lifetime
	c := wsConnect(t, ctx, "ws://"+g.addr+"/echo")
	// Busy all along: the lifetime ends it anyway.
	var err error
	for {
		if err = c.Write(ctx, websocket.MessageText, []byte("busy")); err != nil {
			// Closing already: the read reports how.
			_, _, err = c.Read(ctx)
			break
		}
		if _, _, err = c.Read(ctx); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
		t.Fatalf("ended with %v, want close status 1001", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
		t.Errorf("closed after %v, want about the 400ms lifetime", d)
	}
}

// TestWebSocketHangingUpstream checks that an upstream that accepts the
// connection and never answers the handshake gets the request's timeout:
// 504, and the upgrade is not left open.
func TestWebSocketHangingUpstream(t *testing.T) {
	t.Parallel()
	g := startGateway(t, oneTenant("hang", "logging: {level: error}", "timeouts: {request: 300ms}", "http://"+hangingListener(t)))
	ctx := wsContext(t)
	_, resp, err := wsDial(t, ctx, "ws://"+g.addr+"/echo")
	if err == nil || resp == nil || resp.StatusCode != 504 {
		t.Fatalf("hanging upstream: %v, %v; want 504", err, resp)
	}
	if n := upgradedCount(t, g, "hang"); n != 0 {
		t.Errorf("upgraded_connections = %d after a failed handshake", n)
	}
}
