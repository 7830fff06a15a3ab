package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/balancer"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// upgradePolicy is what a tenant's pool does with "Connection: Upgrade"
// requests (RFC 9110 section 7.8): which protocols it relays, for how long,
// and where the relayed connections are registered. Immutable.
type upgradePolicy struct {
	websocket bool
	// protocols are the other protocols allowed, lowercased: "foo"
	// (any version) or "foo/1".
	protocols []string
	idle      time.Duration
	lifetime  time.Duration // 0: none
	connect   time.Duration // timeouts.connect
	tenant    string
	tunnels   *tunnels
}

// newUpgradePolicy returns tc's upgrade policy, or nil when the tenant
// relays no upgrade (the request is then forwarded without it, as
// hop-by-hop removal leaves it).
func newUpgradePolicy(tc *config.Tenant, reg *tunnels) *upgradePolicy {
	if reg == nil || (!tc.WebSocket.Enabled && len(tc.UpgradeProtocols) == 0) {
		return nil
	}
	up := &upgradePolicy{
		websocket: tc.WebSocket.Enabled,
		idle:      tc.WebSocket.IdleTimeout.D(),
		lifetime:  tc.WebSocket.MaxLifetime.D(),
		connect:   tc.Timeouts.Connect.D(),
		tenant:    tc.Name,
		tunnels:   reg,
	}
	for _, p := range tc.UpgradeProtocols {
		up.protocols = append(up.protocols, strings.ToLower(p))
	}
	return up
}

// allows reports whether every protocol an Upgrade value lists is allowed,
// and whether it is a WebSocket upgrade.
func (u *upgradePolicy) allows(v []byte) (ok, ws bool) {
	n := 0
	for len(v) > 0 {
		var tok []byte
		tok, v = nextListItem(v)
		if len(tok) == 0 {
			continue
		}
		n++
		if bytes.EqualFold(tok, []byte("websocket")) {
			if !u.websocket {
				return false, false
			}
			ws = true
			continue
		}
		name, _, versioned := bytes.Cut(tok, []byte{'/'})
		found := false
		for _, p := range u.protocols {
			if bytes.EqualFold(tok, []byte(p)) || (versioned && bytes.EqualFold(name, []byte(p))) {
				found = true
				break
			}
		}
		if !found {
			return false, false
		}
	}
	return n > 0, ws
}

// serveUpgrade relays an upgrade request: it picks an upstream (balancer and
// breaker as for any request), dials its own connection to it (an upgraded
// connection never returns to the keep-alive pool), sends the request with
// its Connection: Upgrade and Upgrade fields, and reads the answer. A 101
// is passed to the client and the two connections are joined until either
// side closes (tunnel); any other answer is the client's like a plain
// request's. It reports false, having done nothing, for a request that is
// not an upgrade the tenant relays: that one is forwarded without the
// upgrade.
func (p *pool) serveUpgrade(ctx *fasthttp.RequestCtx, rs *reqState) bool {
	req := &ctx.Request
	h := &req.Header
	proto := h.Peek(fasthttp.HeaderUpgrade)
	ok, ws := p.upgrade.allows(proto)
	if !ok || !h.IsHTTP11() || req.IsBodyStream() || h.ContentLength() > 0 || (ws && !h.IsGet()) {
		// A WebSocket handshake is a GET without a body (RFC 6455
		// section 4.1); an upgrade carrying a body is not relayed.
		return false
	}
	proto = append([]byte(nil), proto...)
	p.prepare(ctx, rs)
	// prepare removed them as hop-by-hop; for an upgrade they are what
	// the request is about (RFC 9110 section 7.8).
	h.Set(fasthttp.HeaderConnection, "Upgrade")
	h.SetBytesV(fasthttp.HeaderUpgrade, proto)

	var tried balancer.Set
	rejected := 0 // picks refused by an open or busy breaker
	next := -1    // the upstream a failover picked
	for {
		i := next
		if i < 0 {
			i = p.picker.Pick(tried)
		}
		next = -1
		if i < 0 {
			p.unavailable(ctx, rs)
			return true
		}
		up := p.ups[i]
		tried = tried.With(i)
		tok, allowed := up.Breaker.Allow()
		if !allowed {
			if rejected++; rejected > len(p.ups) {
				p.unavailable(ctx, rs)
				return true
			}
			continue
		}
		rs.upstream = up
		rs.attempts++
		p.address(req, up)
		conn, br, f, err := p.handshake(ctx, up)
		status := ctx.Response.StatusCode()
		if f == failNone && status >= 500 {
			f = failStatus
		}
		up.report(tok, f, err, f == failStatus && !p.retry.statuses.has(status))
		if !f.sent() {
			// Nothing reached the upstream: one the request has not
			// tried takes it, as for a plain request (pool.serve).
			if j := p.picker.Pick(tried); j >= 0 {
				next = j
				ctx.Response.Reset()
				continue
			}
		}
		if f != failNone && f != failStatus {
			p.fail(ctx, rs, f)
			return true
		}
		if conn == nil {
			// The upstream answered without switching: its answer is
			// the client's, framed by the gateway.
			removeResponseHopHeaders(&ctx.Response.Header)
			return true
		}
		p.switchProtocols(ctx, rs, conn, br, ws)
		return true
	}
}

// handshake dials up, sends the upgrade request and reads the answer into
// ctx.Response. On a 101 it returns the connection and its reader (which
// may hold bytes the upstream sent after the 101); otherwise the
// connection is closed and conn is nil.
func (p *pool) handshake(ctx *fasthttp.RequestCtx, up *upstream) (conn net.Conn, br *bufio.Reader, f failure, err error) {
	up.Acquire()
	defer up.Release()
	deadline := time.Now().Add(p.timeout)
	conn, err = fasthttp.DialTimeout(up.Addr, min(p.timeout, p.upgrade.connect))
	if err != nil {
		return nil, nil, classify(&dialError{err}, &ctx.Response), err
	}
	if up.TLS {
		tc := tls.Client(conn, up.client.TLSConfig)
		_ = tc.SetDeadline(deadline)
		if err = tc.Handshake(); err != nil {
			conn.Close()
			return nil, nil, failConnect, err
		}
		conn = tc
	}
	_ = conn.SetDeadline(deadline)
	bw := bufio.NewWriterSize(conn, 4<<10)
	if err = ctx.Request.Write(bw); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		conn.Close()
		return nil, nil, classify(err, &ctx.Response), err
	}
	br = bufio.NewReaderSize(conn, 4<<10)
	if err = ctx.Response.ReadLimitBody(br, up.client.MaxResponseBodySize); err != nil {
		conn.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, failClosed, err
		}
		return nil, nil, classify(err, &ctx.Response), err
	}
	if ctx.Response.StatusCode() != fasthttp.StatusSwitchingProtocols {
		conn.Close()
		return nil, nil, failNone, nil
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, failNone, nil
}

// switchProtocols answers the client with the upstream's 101 and hands both
// connections to a tunnel once fasthttp lets go of the client's.
func (p *pool) switchProtocols(ctx *fasthttp.RequestCtx, rs *reqState, upConn net.Conn, br *bufio.Reader, ws bool) {
	rh := &ctx.Response.Header
	upgrade := append([]byte(nil), rh.Peek(fasthttp.HeaderUpgrade)...)
	removeResponseHopHeaders(rh)
	rh.Set(fasthttp.HeaderConnection, "Upgrade")
	rh.SetBytesV(fasthttp.HeaderUpgrade, upgrade)
	rh.DelBytes(p.reqIDHeader)
	rh.SetCanonical(p.reqIDHeader, rs.reqID)
	head := rh.AppendBytes(nil)
	var fromUpstream []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		fromUpstream = append([]byte(nil), b...)
	}
	t := &tunnel{ws: ws, upstream: upConn, idle: p.upgrade.idle, tenant: p.upgrade.tenant, reg: p.upgrade.tunnels,
		done: make(chan struct{})}
	if p.upgrade.lifetime > 0 {
		t.end = time.Now().Add(p.upgrade.lifetime)
	}
	if t.reg.isClosing() {
		// Shutting down: no new tunnel.
		upConn.Close()
		ctx.Response.Reset()
		writeError(ctx, rs.reqID, fasthttp.StatusServiceUnavailable, codeUnavailable, "the gateway is shutting down")
		ctx.SetConnectionClose()
		return
	}
	// The gateway writes the 101 itself, on the hijacked connection:
	// fasthttp skips a hijack handler when it closes the connection
	// after the response (a client's "Connection: close", shutdown), and
	// the upstream connection would be left open.
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		t.start(c, head, fromUpstream)
	})
}

// tunnels registers the upgraded connections of a server, across
// snapshots: admin counts them and Shutdown closes them. Its methods are
// safe for concurrent use; none is on the plain request path.
type tunnels struct {
	mu       sync.Mutex
	all      map[*tunnel]struct{}
	byTenant map[string]int
	closing  bool
	// changed is closed and replaced whenever a tunnel ends, for drain.
	changed chan struct{}
}

func newTunnels() *tunnels {
	return &tunnels{all: make(map[*tunnel]struct{}), byTenant: make(map[string]int), changed: make(chan struct{})}
}

func (r *tunnels) isClosing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}

func (r *tunnels) add(t *tunnel) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.all[t] = struct{}{}
	r.byTenant[t.tenant]++
	return true
}

func (r *tunnels) remove(t *tunnel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.all[t]; !ok {
		return
	}
	delete(r.all, t)
	if r.byTenant[t.tenant]--; r.byTenant[t.tenant] <= 0 {
		delete(r.byTenant, t.tenant)
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// active returns the number of upgraded connections of a tenant.
func (r *tunnels) active(tenant string) int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byTenant[tenant]
}

// shutdown refuses new tunnels, lets the open ones run until ctx is done
// (the shutdown grace), then closes those left, WebSocket ones with a
// close frame 1001 (going away) to each side, and waits for them to end.
func (r *tunnels) shutdown(ctx context.Context) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	for {
		r.mu.Lock()
		n, changed := len(r.all), r.changed
		r.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-changed:
			continue
		case <-ctx.Done():
		}
		break
	}
	r.mu.Lock()
	open := make([]*tunnel, 0, len(r.all))
	for t := range r.all {
		open = append(open, t)
	}
	r.mu.Unlock()
	for _, t := range open {
		t.close(closeGoingAway)
	}
	for _, t := range open {
		<-t.done
	}
}

// WebSocket close codes the gateway sends (RFC 6455 section 7.4.1; 1014 is
// registered with IANA).
const (
	closeGoingAway  = 1001 // shutdown, idle timeout, max lifetime
	closeBadGateway = 1014 // the upstream went away without a close frame
)

// closeLinger is how long a tunnel waits, after sending its close frames,
// for the peers to answer them and close.
const closeLinger = time.Second

// tunnelBuf is each direction's copy buffer: an idle tunnel holds two.
const tunnelBuf = 4 << 10

// tunnel is one upgraded connection: the client's (hijacked from fasthttp)
// joined to its own connection to the upstream. Two goroutines copy, one
// per direction; the last to stop closes both connections and
// unregisters it.
type tunnel struct {
	ws       bool
	tenant   string
	reg      *tunnels
	client   net.Conn
	upstream net.Conn
	idle     time.Duration
	end      time.Time // max lifetime; zero: none

	toClient, toUpstream side
	// last is when a byte last came from either side, in unix
	// nanoseconds. Written by both copiers after each read; read by both
	// when their read deadline passes, to tell an idle tunnel from a
	// one-way stream.
	last atomic.Int64
	// closingAt is when a tunnel the gateway is closing gives up on its
	// peers, in unix nanoseconds; 0 while open. Written once by close.
	closingAt atomic.Int64
	closeOnce sync.Once
	running   atomic.Int32
	done      chan struct{}
}

// side is where one copier writes. The gateway writes its own close frame
// under mu, between the copier's writes, only at a frame boundary.
type side struct {
	mu     sync.Mutex
	conn   net.Conn
	frames frameTracker // frames written to conn so far (WebSocket only)
	masked bool         // frames written here are masked: the upstream's side
	closed bool         // the gateway sent its close frame: forward no more
}

func (t *tunnel) start(c net.Conn, head, fromUpstream []byte) {
	// fasthttp's hijacked conn reads through the server's pooled read
	// buffer (server.max_header_bytes + max_request_line): take what it
	// holds and read the socket itself, so an idle tunnel does not pin
	// 40 KiB. A read with a deadline in the past returns only buffered
	// bytes.
	raw := c
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	var fromClient []byte
	if raw != c {
		_ = raw.SetReadDeadline(time.Unix(1, 0))
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			fromClient = append(fromClient, buf[:n]...)
			if err != nil {
				break
			}
		}
		_ = raw.SetReadDeadline(time.Time{})
	}
	t.client = raw
	t.toClient = side{conn: raw}
	t.toUpstream = side{conn: t.upstream, masked: true}
	t.last.Store(time.Now().UnixNano())
	if !t.reg.add(t) {
		// Shutdown began between the handshake and the hijack.
		raw.Close()
		t.upstream.Close()
		return
	}
	_ = raw.SetWriteDeadline(time.Now().Add(t.idle))
	if _, err := raw.Write(head); err != nil || !t.toClient.write(t, fromUpstream) || !t.toUpstream.write(t, fromClient) {
		t.running.Store(1)
		t.stopped(nil)
		return
	}
	t.running.Store(2)
	go t.copy(t.upstream, &t.toClient)
	go t.copy(raw, &t.toUpstream)
}

// copy relays src to dst until src ends, the tunnel idles or outlives its
// lifetime, or the gateway closes it.
func (t *tunnel) copy(src net.Conn, dst *side) {
	defer t.stopped(src)
	buf := make([]byte, tunnelBuf)
	for {
		_ = src.SetReadDeadline(t.deadline())
		n, err := src.Read(buf)
		if n > 0 {
			t.last.Store(time.Now().UnixNano())
			if !dst.write(t, buf[:n]) {
				return
			}
		}
		if err == nil {
			continue
		}
		if isTimeout(err) && t.closingAt.Load() == 0 {
			if time.Now().Before(t.deadline()) {
				continue // the other direction was active
			}
			t.close(closeGoingAway)
			continue // wait for the peers to answer, up to closeLinger
		}
		if t.ws && src == t.upstream && !t.toClient.frames.sawClose {
			// The upstream went away without a close frame: say so to
			// the client rather than only drop the connection.
			t.toClient.sendClose(closeBadGateway)
		}
		return
	}
}

// deadline is when a copier's read gives up: the idle timeout after the
// last byte either way, capped by the lifetime, or the close linger.
func (t *tunnel) deadline() time.Time {
	if c := t.closingAt.Load(); c != 0 {
		return time.Unix(0, c)
	}
	d := time.Unix(0, t.last.Load()).Add(t.idle)
	if !t.end.IsZero() && t.end.Before(d) {
		d = t.end
	}
	return d
}

// close starts closing the tunnel: a close frame with code to each side of
// a WebSocket tunnel, then closeLinger for the peers to close.
func (t *tunnel) close(code uint16) {
	t.closeOnce.Do(func() {
		t.closingAt.Store(time.Now().Add(closeLinger).UnixNano())
		if t.ws {
			t.toClient.sendClose(code)
			t.toUpstream.sendClose(code)
		} else {
			t.client.Close()
			t.upstream.Close()
		}
		// Wake the copiers so they pick up the linger deadline.
		_ = t.client.SetReadDeadline(time.Unix(0, t.closingAt.Load()))
		_ = t.upstream.SetReadDeadline(time.Unix(0, t.closingAt.Load()))
	})
}

// stopped is called by each copier as it ends, with the connection it read
// (nil from start). Outside a close the first closes both connections, so
// the other's read returns; while the gateway closes the tunnel, only its
// own, so the other peer can still answer the close frame within the
// linger. The last unregisters.
func (t *tunnel) stopped(src net.Conn) {
	if src != nil && t.closingAt.Load() != 0 {
		src.Close()
	} else {
		t.client.Close()
		t.upstream.Close()
	}
	if t.running.Add(-1) == 0 {
		t.client.Close()
		t.upstream.Close()
		t.reg.remove(t)
		close(t.done)
	}
}

// write forwards p unless the gateway closed this side. It reports false
// when the tunnel should stop.
func (s *side) write(t *tunnel, p []byte) bool {
	if len(p) == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true // discard: the gateway's close frame was the last
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(t.idle))
	if _, err := s.conn.Write(p); err != nil {
		return false
	}
	if t.ws {
		s.frames.feed(p)
	}
	return true
}

// sendClose writes a close frame with code, if the stream is at a frame
// boundary (otherwise it would land inside a frame), and stops forwarding.
func (s *side) sendClose(code uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if !s.frames.atBoundary() || s.frames.sawClose {
		return
	}
	var f [8]byte
	f[0] = 0x80 | 0x8 // FIN, close
	if !s.masked {
		f[1] = 2
		f[2], f[3] = byte(code>>8), byte(code)
		_ = s.conn.SetWriteDeadline(time.Now().Add(closeLinger))
		_, _ = s.conn.Write(f[:4])
		return
	}
	// Frames from a client are masked (RFC 6455 section 5.3), and to the
	// upstream the gateway is the client.
	f[1] = 0x80 | 2
	_, _ = rand.Read(f[2:6])
	f[6], f[7] = byte(code>>8)^f[2], byte(code)^f[3]
	_ = s.conn.SetWriteDeadline(time.Now().Add(closeLinger))
	_, _ = s.conn.Write(f[:8])
}

// frameTracker follows WebSocket frame boundaries in a byte stream (RFC
// 6455 section 5.2), so that the gateway writes its own frames only
// between frames. It reads headers and lengths only, never payloads.
type frameTracker struct {
	hdr      [14]byte
	hn       int    // header bytes collected
	payload  uint64 // payload bytes left of the current frame
	sawClose bool   // a close frame passed
}

func (f *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		if f.payload > 0 {
			k := uint64(len(p))
			if k > f.payload {
				k = f.payload
			}
			p = p[k:]
			f.payload -= k
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn < 2 {
			continue
		}
		need := 2
		l7 := f.hdr[1] & 0x7f
		switch l7 {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4
		}
		if f.hn < need {
			continue
		}
		n := uint64(l7)
		switch l7 {
		case 126:
			n = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			n = 0
			for _, b := range f.hdr[2:10] {
				n = n<<8 | uint64(b)
			}
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.sawClose = true
		}
		f.payload = n
		f.hn = 0
	}
}

func (f *frameTracker) atBoundary() bool { return f.hn == 0 && f.payload == 0 }
