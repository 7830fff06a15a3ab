package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
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
			// tried takes it, as for a plain request (pool.forward).
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
