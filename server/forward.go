package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keystone-gateway/keystone/balancer"
	"github.com/keystone-gateway/keystone/breaker"
	"github.com/keystone-gateway/keystone/observe"
	"github.com/valyala/fasthttp"
)

// upstream is one upstream of one tenant: the balancer's long-lived state
// (health, breaker, in-flight) and the keep-alive connection pool to it.
//
// Upstreams of tenants' pools are registry entries shared by every snapshot
// that has the same tenant, URL and connection settings; keystone.Proxy URL
// pools have their own, closed with their snapshot.
type upstream struct {
	*balancer.Upstream
	tenant string // the tenant the upstream belongs to
	client *fasthttp.HostClient
	// fresh is a second client to the same upstream that never reuses a
	// connection (every request on it says Connection: close): the one
	// retry of a request that met a keep-alive connection the upstream
	// had closed goes through it, so it cannot meet another.
	fresh *fasthttp.HostClient
	// keepAlive is the idle timeout, in nanoseconds, the upstream last
	// announced in a Keep-Alive: timeout=N response header; 0 if none.
	// Written by the proxy stage after an answer that carries one (a Store
	// only when it changed); read by upConn before it reuses a connection.
	keepAlive atomic.Int64
	// host is the Host header sent when the tenant does not preserve the
	// client's, in lower case as fasthttp's URI.SetHost stores it (address
	// compares it with the request's).
	host string
	// scheme is the upstream's URL scheme, "http" or "https", which every
	// request sent to it carries in its URI.
	scheme []byte
	// basePath is the path of the upstream's URL without a trailing "/"
	// ("/v2" of "http://svc:8080/v2"), or "".
	basePath string
	// stats counts the attempts to the upstream (nil: metrics off).
	stats *observe.UpstreamStats
	// pooledOutages is the Upstream.Outages count the idle connections
	// in client were last checked against. Written (CAS) by the first
	// attempt that sees a newer count, which then closes them; read by
	// every attempt. Invariant: at most Outages().
	pooledOutages atomic.Uint64
}

// dropStaleConns closes the idle connections to the upstream if it was
// taken out of rotation since they were last checked. An upstream that
// was marked down or ejected has often been restarted: its keep-alive
// connections lead to the old process, and a request on one fails (for a
// POST, with nothing to retry it) although the upstream is back. It costs
// two atomic loads when nothing happened.
func (u *upstream) dropStaleConns() {
	n := u.Outages()
	if seen := u.pooledOutages.Load(); seen != n && u.pooledOutages.CompareAndSwap(seen, n) {
		u.client.CloseIdleConnections()
	}
}

// pool is what the proxy stage forwards to: a tenant's upstreams, their
// picker and the policies that apply to each attempt. It is immutable after
// the snapshot is built.
type pool struct {
	name         string // tenant name, for logs
	ups          []*upstream
	picker       balancer.Picker
	prefix       []byte // stripped from the path when strip is set
	strip        bool
	preserveHost bool
	timeout      time.Duration // per attempt
	// replayBody is the largest request body (by Content-Length) read
	// into memory before the first attempt when a retry might send the
	// request again; larger bodies and chunked ones stream to the
	// upstream once and are never retried after being sent. If zero,
	// defaultReplayBody. newPool sets it to server.stream_request_body_over.
	replayBody  int
	retry       retryPolicy
	budget      *retryBudget
	trusted     trustedProxies
	reqIDHeader []byte // canonical form

	// upgrade relays "Connection: Upgrade" requests (websocket.go); nil
	// when the tenant relays none.
	upgrade *upgradePolicy

	// basePath is the upstreams' base path (they share one), under which
	// the request path is joined: "/v2" + "/items" = "/v2/items". Empty
	// when the upstream URLs have no path.
	basePath []byte
	// stats counts the tenant's retries (nil: metrics off).
	stats *observe.TenantStats
}

// Canonical header keys and values the proxy stage sets on every request.
var (
	keyXForwardedFor   = []byte(fasthttp.HeaderXForwardedFor)
	keyXForwardedProto = []byte(fasthttp.HeaderXForwardedProto)
	keyXForwardedHost  = []byte(fasthttp.HeaderXForwardedHost)
	valueHTTP          = []byte("http")
	valueHTTPS         = []byte("https")
	http11             = []byte("HTTP/1.1")
)

// failure classifies how an upstream attempt ended.
type failure uint8

const (
	failNone        failure = iota
	failConnect             // could not connect: nothing was sent
	failConnTimeout         // connecting timed out: nothing was sent
	failNoConns             // the local pool had no free connection: nothing was sent
	failTimeout             // no complete answer before the deadline
	failClosed              // the connection broke before a complete answer
	failTooLarge            // the answer exceeded max_response_body
	failStatus              // the upstream answered 5xx
	// failStale: a reused keep-alive connection broke before the first
	// byte of the answer; the upstream had most likely closed it while
	// the request was on its way, but it may have been processed.
	failStale
	// failStaleUnsent: a reused keep-alive connection was found closed
	// by the upstream (or idle past its announced timeout) before
	// anything was written: nothing was sent.
	failStaleUnsent
)

// sent reports whether the request may have reached the upstream.
func (f failure) sent() bool {
	return f != failConnect && f != failConnTimeout && f != failNoConns && f != failStaleUnsent
}

// stale reports a failure of a reused connection that says nothing about
// the upstream's health: it closed an idle connection, as HTTP/1.1 lets it
// (RFC 9112 section 9.8), and a fresh connection is likely to work.
func (f failure) stale() bool { return f == failStale || f == failStaleUnsent }

// dialError marks an error from establishing the upstream connection, so the
// proxy can tell "nothing was sent" from failures after the request left.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialer returns the pool's dial function: fasthttp's cached-DNS TCP dialer
// bounded by the connect timeout (or the request's remaining time, if
// shorter). Connections are wrapped in an upConn, which finds keep-alive
// connections the upstream closed. For an https:// upstream the dialer
// sets up TLS itself, under the upConn (with the HostClient's TLSConfig),
// so that the upConn sees requests and answers rather than the handshake.
func dialer(connect time.Duration, up *upstream) fasthttp.DialFuncWithTimeout {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		if timeout <= 0 || timeout > connect {
			timeout = connect
		}
		c, err := fasthttp.DialTimeout(addr, timeout)
		if err != nil {
			return nil, &dialError{err}
		}
		if up.TLS {
			tc := tls.Client(c, up.client.TLSConfig)
			return &upTLSConn{upConn: newUpConn(tc, c, &up.keepAlive), tls: tc}, nil
		}
		return newUpConn(c, c, &up.keepAlive), nil
	}
}

// classify says how an attempt ended that returned err with resp.
func classify(err error, resp *fasthttp.Response) failure {
	if err == nil {
		// Before any errors.As target is declared: its address escapes,
		// and the success path must not allocate.
		return failNone
	}
	return classifyErr(err, resp)
}

func classifyErr(err error, resp *fasthttp.Response) failure {
	var de *dialError
	switch {
	case errors.Is(err, errStaleConn):
		return failStaleUnsent
	case errors.As(err, new(*staleWriteError)):
		if errors.Is(err, errNothingWritten) {
			return failStaleUnsent
		}
		return failStale
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		// Closed before the first byte of the answer: fasthttp reports
		// any error on that byte so (and only on that byte). On a reused
		// connection, the upstream closed it while the request was on
		// its way.
		if _, reused := resp.RemoteAddr().(*reusedAddr); reused {
			return failStale
		}
		return failClosed
	case errors.As(err, &de):
		if errors.Is(err, fasthttp.ErrDialTimeout) || isTimeout(err) {
			return failConnTimeout
		}
		return failConnect
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return failNoConns
	case errors.Is(err, fasthttp.ErrTimeout), isTimeout(err):
		return failTimeout
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return failTooLarge
	default:
		return failClosed
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// serve is the pool as a fasthttp handler, for luavm: the handler behind
// keystone.Proxy and a script router's fallback. It continues the request
// whose script called it (scriptState); called outside a script (a test, a
// tool), it gives the request its own state so the proxy stage works the
// same.
func (p *pool) serve(ctx *fasthttp.RequestCtx) {
	if rs := scriptState(ctx); rs != nil {
		p.forward(ctx, rs)
		return
	}
	rs := acquireState()
	defer releaseState(rs)
	rs.start = time.Now()
	rs.peer = peerAddr(ctx.RemoteIP())
	rs.clientIP = rs.peer
	rs.setRequestID(nil)
	p.forward(ctx, rs)
}

// forward is the proxy stage: it proxies the request in ctx to one of the
// pool's upstreams and leaves the answer, or the gateway's JSON error, in
// ctx.Response. Its inputs are explicit: ctx, and rs with the request id,
// the peer, the start time, the tenant and the scratch buffer; it records
// the upstream, attempts and error kind in rs for the access log.
//
// The request is forwarded in place: ctx.Request is edited (hop-by-hop
// headers removed, X-Forwarded-* set) and handed to the upstream's
// HostClient with ctx.Response to fill, so a proxied request copies no
// headers or bodies and allocates nothing (BenchmarkProxyHandler).
func (p *pool) forward(ctx *fasthttp.RequestCtx, rs *reqState) {
	if len(p.ups) == 0 {
		writeError(ctx, rs.reqID, fasthttp.StatusNotFound, codeNotFound, "no route for this request")
		rs.errKind = codeNotFound
		return
	}
	req := &ctx.Request
	if req.Header.IsConnect() {
		// A reverse proxy does not open tunnels: CONNECT would make the
		// upstream a forward proxy for whoever asks.
		writeError(ctx, rs.reqID, fasthttp.StatusMethodNotAllowed, codeMethodNotAllowed, "CONNECT is not supported")
		rs.errKind = codeMethodNotAllowed
		return
	}
	if p.upgrade != nil && upgradeRequested(&req.Header) && p.serveUpgrade(ctx, rs) {
		return
	}
	clientClose := req.Header.ConnectionClose()
	p.prepare(ctx, rs)

	idempotent := isIdempotent(&req.Header)
	if req.IsBodyStream() {
		// A body held in memory can be sent again. Up to replayBody when
		// the retry policy may resend the request; otherwise up to
		// fasthttp's read-ahead, which holds it already, so that a
		// request of any method that met a keep-alive connection the
		// upstream had closed can go again on a new one.
		limit := defaultReplayBody
		if idempotent && p.retry.resends() {
			limit = p.replayBody
		}
		if !p.bufferBody(ctx, rs, limit) {
			return
		}
	}
	streamed := req.IsBodyStream()
	if p.retry.attempts > 0 {
		p.budget.deposit(rs.start)
	}

	rs.beginUpstream()
	var hop uint16 // the answer's hopMask, once hopKnown
	hopKnown := false
	var tried balancer.Set
	retries := 0
	failovers := 0 // free moves to an untried upstream after nothing was sent
	rejected := 0  // picks refused by an open or busy breaker
	next := -1     // the upstream a free failover picked
	for {
		i := next
		next = -1
		if i < 0 {
			i = p.picker.Pick(tried)
		}
		if i < 0 && tried != 0 {
			// Every available upstream was tried: retry one of them
			// rather than give up while the budget allows it.
			i = p.picker.Pick(0)
		}
		if i < 0 {
			p.unavailable(ctx, rs)
			break
		}
		up := p.ups[i]
		tried = tried.With(i)
		// A nil breaker (none configured) always allows.
		tok, ok := up.Breaker.Allow()
		if !ok {
			// Half-open with its probes busy, or it just opened: try
			// another upstream, a bounded number of times.
			if rejected++; rejected > len(p.ups) {
				p.unavailable(ctx, rs)
				break
			}
			continue
		}
		rs.upstream = up
		p.address(req, up)

		err := p.attempt(ctx, rs, up, up.client)
		f := classify(err, &ctx.Response)
		if f.stale() && !rs.body.clientFault() && !streamed && (idempotent || !f.sent()) {
			// The upstream closed the keep-alive connection the attempt
			// met (issue 8: 80 of 200 GETs failed this way). Once, on a
			// new connection to the same upstream, under the same
			// breaker admission and outside the retry budget: it is the
			// connection that failed, not the upstream. A POST goes
			// again only if nothing of it was written.
			err = p.attempt(ctx, rs, up, up.fresh)
			f = classify(err, &ctx.Response)
		}

		if rs.body.clientFault() {
			// The client's body passed max_request_body, was malformed
			// or ended early: the upstream is not at fault, nothing is
			// retried, and finish answers 413, 400 or 408. The attempt
			// proves nothing either way, so it gives its breaker
			// admission back (a half-open probe slot) rather than
			// report a success that could close the breaker.
			up.Breaker.Cancel(tok)
			break
		}
		status := ctx.Response.StatusCode()
		if f == failNone && status >= 500 {
			f = failStatus
		}
		rs.attemptDone(up, f, status)
		up.report(tok, f, err, f == failStatus && !p.retry.statuses.has(status))
		if f == failNone {
			// One pass finds the answer's hop-by-hop headers: whether
			// there is a Keep-Alive to note, and what to remove below.
			hop, hopKnown = hopMask(ctx.Response.Header.All()), true
			if hop&keepAliveBit != 0 {
				up.noteKeepAlive(ctx.Response.Header.Peek(fasthttp.HeaderKeepAlive))
			}
			break
		}
		if !f.sent() && (!streamed || f != failStaleUnsent) && failovers < len(p.ups)-1 {
			// Nothing reached the upstream: another one that the
			// request has not tried takes it, whatever the method and
			// without spending the retry budget or retries.attempts
			// (nginx's proxy_next_upstream tries each server once).
			// Bounded by the pool: at most one move per upstream.
			if j := p.picker.Pick(tried); j >= 0 {
				failovers++
				next = j
				ctx.Response.Reset()
				continue
			}
		}
		if retries < p.retry.attempts && p.retry.allows(f, status, idempotent, streamed) &&
			p.budget.withdraw(rs.start) {
			retries++
			ctx.Response.Reset()
			if p.retry.backoff > 0 {
				time.Sleep(p.retry.backoff)
			}
			rs.retried(p)
			continue
		}
		if f != failStatus {
			p.fail(ctx, rs, f)
		}
		break
	}
	if !hopKnown {
		hop = hopMask(ctx.Response.Header.All())
	}
	removeResponseHop(&ctx.Response.Header, hop)
	if clientClose {
		ctx.SetConnectionClose()
	}
}

// address points the request at up. The scheme is always the upstream's:
// an absolute-form target ("GET https://b.example/ HTTP/1.1" on the plain
// listener) names the scheme the client used to reach the gateway, not the
// one the gateway speaks to its upstream, and fasthttp's HostClient refuses
// a URI whose scheme is not its own (an error that would read as the
// upstream's failure). The host is the upstream's unless the tenant
// preserves the client's; an HTTP/1.0 request may have none, and then
// gets the upstream's too, since a request cannot be written without one.
//
// Each is set only when it differs: a set copies and lowercases, and the
// client's scheme is nearly always the upstream's already.
func (p *pool) address(req *fasthttp.Request, up *upstream) {
	u := req.URI()
	if string(u.Scheme()) != string(up.scheme) {
		u.SetSchemeBytes(up.scheme)
	}
	if host := u.Host(); (!p.preserveHost || len(host) == 0) && string(host) != up.host {
		u.SetHost(up.host)
	}
}

// upstreamClient is what an attempt sends a request through: today a
// *fasthttp.HostClient (HTTP/1.1, over TLS for https:// upstreams). It is
// the seam for a client chosen per upstream by protocol (HTTP/2, gRPC):
// such a client implements these two methods and the proxy stage, retries
// and reporting stay as they are.
type upstreamClient interface {
	DoTimeout(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error
	CloseIdleConnections()
}

var _ upstreamClient = (*fasthttp.HostClient)(nil)

// attempt sends the request to up through client (up.client, or up.fresh
// for a new connection) and leaves the answer in ctx.Response.
func (p *pool) attempt(ctx *fasthttp.RequestCtx, rs *reqState, up *upstream, client upstreamClient) error {
	req := &ctx.Request
	rs.attempts++
	fresh := client == upstreamClient(up.fresh)
	if fresh {
		// The fresh client's connections serve one request each: the
		// request says so, and fasthttp closes the connection after it.
		req.SetConnectionClose()
	} else {
		up.dropStaleConns()
	}
	up.Acquire()
	// DoTimeout reads the clock once; DoDeadline would read it twice.
	err := client.DoTimeout(req, &ctx.Response, p.timeout)
	up.Release()
	if fresh {
		// prepare removed the client's Connection header; the server
		// reads the client's wish from clientClose, not from here.
		req.Header.ResetConnectionClose()
	}
	return err
}

// noteKeepAlive records the idle timeout the upstream announced in a
// Keep-Alive header value, so that no connection is reused past it.
func (u *upstream) noteKeepAlive(v []byte) {
	if d := parseKeepAliveTimeout(v); d > 0 && u.keepAlive.Load() != d {
		u.keepAlive.Store(d)
	}
}

// report tells the upstream's breaker and passive health check how an
// attempt that ended in f (with err) went. They judge the upstream, so only
// what the upstream did counts: connect errors, timeouts, broken
// connections and 5xx answers are failures; an answer larger than
// max_response_body breaks the gateway's own limit and is a success (the
// upstream answered). The gateway's own pool exhaustion says nothing about
// the upstream: the admission is handed back (Breaker.Cancel), which
// matters for a half-open probe, whose slot would otherwise stay taken and
// keep the breaker rejecting every request. So is a keep-alive connection
// the upstream closed: it may do that to an idle connection.
//
// Passive ejection counts a 5xx answer only when the tenant retries that
// status (unlisted5xx false), as nginx's max_fails counts only what
// proxy_next_upstream treats as unsuccessful: ejection is on by default,
// and a client that makes the upstream answer 500 on purpose must not take
// the upstreams out one by one.
func (u *upstream) report(tok breaker.Token, f failure, err error, unlisted5xx bool) {
	switch f {
	case failNoConns, failStale, failStaleUnsent:
		u.Breaker.Cancel(tok)
		return
	case failConnect:
		if errors.Is(err, syscall.ECONNREFUSED) {
			// Nothing listens at the upstream's address any more:
			// every idle connection to it leads to a process that is
			// gone. (Not on other dial errors: closing connections
			// because this host ran out of ports or descriptors would
			// only make it dial more.)
			u.client.CloseIdleConnections()
		}
	}
	ok := f == failNone || f == failTooLarge
	u.Breaker.Done(tok, ok)
	u.ReportResult(ok || unlisted5xx)
}

// defaultReplayBody is pool.replayBody when zero: fasthttp's read-ahead of
// a request body, so the bodies it qualifies are in memory already.
const defaultReplayBody = 8 << 10

// replayBufs holds the buffers bufferBody reads bodies through, so a steady
// stream of small PUTs does not allocate one per request.
var replayBufs = sync.Pool{New: func() any { return new([]byte) }}

// bufferBody reads a streamed request body of known size, up to limit (if
// zero, defaultReplayBody), into the request, so that a retry can send it
// again. The server streams every request body (fasthttp reads ahead at
// most 8KiB of it), and a stream can be sent once: without this, a PUT of a few bytes
// could never be retried after reaching an upstream. It reports false after
// answering the client itself, when the body could not be read.
func (p *pool) bufferBody(ctx *fasthttp.RequestCtx, rs *reqState, limit int) bool {
	req := &ctx.Request
	n := req.Header.ContentLength()
	if limit <= 0 {
		limit = defaultReplayBody
	}
	if n < 0 || n > limit {
		return true // chunked or large: it streams, and is not retried once sent
	}
	bp := replayBufs.Get().(*[]byte)
	defer replayBufs.Put(bp)
	if cap(*bp) < n {
		*bp = make([]byte, n)
	}
	buf := (*bp)[:n]
	if _, err := io.ReadFull(req.BodyStream(), buf); err != nil {
		// The client stopped sending (or was too slow for
		// server.read_timeout): nothing was forwarded yet.
		ctx.SetConnectionClose()
		if isTimeout(err) {
			writeError(ctx, rs.reqID, fasthttp.StatusRequestTimeout, codeTimeout, "request body not received in time")
			rs.errKind = codeTimeout
		} else {
			writeError(ctx, rs.reqID, fasthttp.StatusBadRequest, codeBadRequest, "request body ended early")
			rs.errKind = codeBadRequest
		}
		return false
	}
	// SetBody copies buf into the request's own body buffer and ends the
	// stream, which was read to its end, so the server has nothing left to
	// drain from the connection.
	req.SetBody(buf)
	if cap(*bp) > 1<<20 {
		*bp = nil // don't let one large body pin memory in the pool
	}
	return true
}

// prepare edits the request for forwarding; it runs once per request, not
// per attempt.
func (p *pool) prepare(ctx *fasthttp.RequestCtx, rs *reqState) {
	req := &ctx.Request
	h := &req.Header
	peer := rs.peer
	peerTrusted := p.trusted.trusts(peer)

	// One pass over the fields finds the hop-by-hop headers, counts the
	// fields of the headers the gateway owns, and collects the
	// X-Forwarded-For chain so far, before hop-by-hop removal deletes
	// whatever Connection names. The chain goes on with the peer.
	sc, xff := scanRequest(h, p.reqIDHeader, rs.scratch[:0])
	if len(xff) > 0 {
		xff = append(xff, ", "...)
	}
	xff = peer.AppendTo(xff)
	rs.scratch = xff

	// A trusted proxy in front of us already said what the client used,
	// in one field; anyone else's claim, and a trusted proxy's repeated
	// one, is replaced.
	keepProto := peerTrusted && sc.proto == 1
	keepHost := peerTrusted && sc.host == 1
	if peerTrusted && sc.hop&trailerBit != 0 {
		keepProto = len(h.PeekAll(fasthttp.HeaderXForwardedProto)) == 1
		keepHost = len(h.PeekAll(fasthttp.HeaderXForwardedHost)) == 1
	}

	removeRequestHop(h, sc.hop)
	// Every header the gateway owns leaves as exactly one field
	// (setOwned). The keys are in canonical form already: SetCanonical
	// skips re-normalizing them on every request.
	setOwned(h, keyXForwardedFor, xff, sc.xff)
	if !keepProto {
		if ctx.IsTLS() {
			setOwned(h, keyXForwardedProto, valueHTTPS, sc.proto)
		} else {
			setOwned(h, keyXForwardedProto, valueHTTP, sc.proto)
		}
	}
	if !keepHost {
		setOwned(h, keyXForwardedHost, req.URI().Host(), sc.host)
	}
	setOwned(h, p.reqIDHeader, rs.reqID, sc.reqID)

	// The gateway speaks HTTP/1.1 to upstreams whatever the client spoke
	// (HTTP/1.0; other versions were answered 505).
	if !h.IsHTTP11() {
		h.SetProtocolBytes(http11)
	}
	// The gateway never creates credentials: fasthttp's client turns URI
	// user info into "Authorization: Basic" when it writes the request,
	// even after a script deleted Authorization. The pipeline refuses user
	// info from clients; this also drops any a script's URI change put
	// there.
	if u := req.URI(); len(u.Username()) > 0 || len(u.Password()) > 0 {
		u.SetUsernameBytes(nil)
		u.SetPasswordBytes(nil)
	}

	if (p.strip && len(p.prefix) > 0) || len(p.basePath) > 0 {
		p.rewritePath(req, rs)
	}
}

// rewritePath strips the tenant's path prefix (strip_prefix) and joins what
// is left under the upstreams' base path, as nginx's proxy_pass with a URI
// does: with base "/v2", "/items" goes as "/v2/items", "/" as "/v2/", and
// an empty rest (the prefix itself, stripped) as "/v2". The base has no
// trailing "/" and the rest is empty or starts with "/", so no "//" is
// made. The query is not touched.
func (p *pool) rewritePath(req *fasthttp.Request, rs *reqState) {
	path := req.URI().Path()
	rest := path
	if p.strip && len(p.prefix) > 0 && hasSegmentPrefix(path, p.prefix) {
		rest = path[len(p.prefix):]
	} else if len(p.basePath) == 0 {
		return
	}
	// The URI re-decodes what it is given, so hand it the escaped form:
	// "/a%2525b" must stay "%25" on the wire, not turn into a "%" — nor
	// "%252e%252e" into "..". The base path has no "%" (config).
	esc := append(rs.scratch[len(rs.scratch):], p.basePath...)
	esc = appendEscapedPath(esc, rest)
	if len(esc) == 0 {
		esc = append(esc, '/')
	}
	req.URI().SetPathBytes(esc)
}

// hasSegmentPrefix reports whether prefix matches path on a segment
// boundary: "/api" matches "/api" and "/api/x", not "/apix".
func hasSegmentPrefix(path, prefix []byte) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != string(prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/' || prefix[len(prefix)-1] == '/'
}

// appendEscapedPath appends path percent-encoding '%' and every byte outside
// RFC 3986 pchar and '/', so URI.SetPath's decoding restores path exactly.
func appendEscapedPath(dst, path []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range path {
		if pathByteOK(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hex[c>>4], hex[c&0xf])
	}
	return dst
}

func pathByteOK(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '/', '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}

// isIdempotent reports whether a request may be repeated after it reached an
// upstream (RFC 9110 section 9.2.2); POST and PATCH may not.
func isIdempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsPut() || h.IsDelete() || h.IsTrace()
}

// unavailable answers when no upstream can take the request: 503, with
// Retry-After when circuit breakers are what stands in the way. An open
// breaker says when it lets probes through; a half-open one has its probes
// in flight and decides within a request timeout, so 1s is the honest
// estimate. Retry-After is in whole seconds (RFC 9110 section 10.2.3),
// rounded up so a client never comes back before the breaker is ready.
func (p *pool) unavailable(ctx *fasthttp.RequestCtx, rs *reqState) {
	var wait time.Duration
	tripped := false
	for _, up := range p.ups {
		switch up.Breaker.State() { // nil-safe: no breaker is closed
		case breaker.StateOpen:
			tripped = true
			if d := up.Breaker.RetryAfter(); d > 0 && (wait == 0 || d < wait) {
				wait = d
			}
		case breaker.StateHalfOpen:
			tripped = true
			if wait == 0 || time.Second < wait {
				wait = time.Second
			}
		}
	}
	if tripped {
		writeError(ctx, rs.reqID, fasthttp.StatusServiceUnavailable, codeCircuitOpen, "upstreams are failing; circuit open")
		// The breaker keeps its deadline in whole milliseconds rounded
		// up; that millisecond must not turn 30s into "31".
		secs := max(int64((wait-time.Millisecond+time.Second-1)/time.Second), 1)
		var b [20]byte
		ctx.Response.Header.SetBytesV(fasthttp.HeaderRetryAfter, strconv.AppendInt(b[:0], secs, 10))
		rs.errKind = codeCircuitOpen
		return
	}
	writeError(ctx, rs.reqID, fasthttp.StatusServiceUnavailable, codeUnavailable, "no upstream available")
	rs.errKind = codeUnavailable
}

// fail answers for a transport failure of the last attempt.
func (p *pool) fail(ctx *fasthttp.RequestCtx, rs *reqState, f failure) {
	switch f {
	case failConnect:
		writeError(ctx, rs.reqID, fasthttp.StatusBadGateway, codeUpstreamConnect, "could not connect to upstream")
		rs.errKind = codeUpstreamConnect
	case failConnTimeout, failTimeout:
		writeError(ctx, rs.reqID, fasthttp.StatusGatewayTimeout, codeUpstreamTimeout, "upstream timed out")
		rs.errKind = codeUpstreamTimeout
	case failNoConns:
		writeError(ctx, rs.reqID, fasthttp.StatusServiceUnavailable, codeUnavailable, "upstream connection pool exhausted")
		rs.errKind = codeUnavailable
	case failTooLarge:
		writeError(ctx, rs.reqID, fasthttp.StatusBadGateway, codeUpstreamError, "upstream response too large")
		rs.errKind = codeUpstreamError
	default:
		writeError(ctx, rs.reqID, fasthttp.StatusBadGateway, codeUpstreamError, "upstream closed the connection")
		rs.errKind = codeUpstreamError
	}
}
