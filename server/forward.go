package server

import (
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
type upstream struct {
	*balancer.Upstream
	client *fasthttp.HostClient
	// host is the Host header sent when the tenant does not preserve the
	// client's.
	host string
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
)

// sent reports whether the request may have reached the upstream.
func (f failure) sent() bool {
	return f != failConnect && f != failConnTimeout && f != failNoConns
}

// dialError marks an error from establishing the upstream connection, so the
// proxy can tell "nothing was sent" from failures after the request left.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialer returns the pool's dial function: fasthttp's cached-DNS TCP dialer
// bounded by the connect timeout (or the request's remaining time, if
// shorter).
func dialer(connect time.Duration) fasthttp.DialFuncWithTimeout {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		if timeout <= 0 || timeout > connect {
			timeout = connect
		}
		c, err := fasthttp.DialTimeout(addr, timeout)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	}
}

func classify(err error) failure {
	if err == nil {
		// Before any errors.As target is declared: its address escapes,
		// and the success path must not allocate.
		return failNone
	}
	return classifyErr(err)
}

func classifyErr(err error) failure {
	var de *dialError
	switch {
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

// serve proxies the request in ctx to one of the pool's upstreams and leaves
// the answer, or the gateway's JSON error, in ctx.Response. It is the proxy
// stage of the pipeline and the handler behind keystone.Proxy in scripts.
//
// The request is forwarded in place: ctx.Request is edited (hop-by-hop
// headers removed, X-Forwarded-* set) and handed to the upstream's
// HostClient with ctx.Response to fill, so a proxied request copies no
// headers or bodies and allocates nothing (BenchmarkProxyHandler).
func (p *pool) serve(ctx *fasthttp.RequestCtx) {
	rs := stateOf(ctx)
	if rs == nil {
		// A handler invoked outside the pipeline (tests, tools): give it
		// its own state so the proxy stage works the same.
		rs = acquireState()
		defer releaseState(rs)
		rs.start = time.Now()
		rs.peer = peerAddr(ctx.RemoteIP())
		rs.clientIP = rs.peer
		rs.setRequestID(nil)
	}
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
	clientClose := req.Header.ConnectionClose()
	p.prepare(ctx, rs)

	idempotent := isIdempotent(&req.Header)
	if idempotent && p.retry.resends() && req.IsBodyStream() && !p.bufferBody(ctx, rs) {
		return
	}
	streamed := req.IsBodyStream()
	if p.retry.attempts > 0 {
		p.budget.deposit(rs.start)
	}

	rs.beginUpstream()
	var tried balancer.Set
	retries := 0
	rejected := 0 // picks refused by an open or busy breaker
	for {
		i := p.picker.Pick(tried)
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
		rs.attempts++
		if !p.preserveHost {
			req.URI().SetHost(up.host)
		}

		up.dropStaleConns()
		up.Acquire()
		// DoTimeout reads the clock once; DoDeadline would read it twice.
		err := up.client.DoTimeout(req, &ctx.Response, p.timeout)
		up.Release()

		if rs.body.exceeded {
			// The client's chunked body passed max_request_body: the
			// upstream is not at fault, and finish answers 413. The
			// attempt proves nothing either way, so it gives its
			// breaker admission back (a half-open probe slot) rather
			// than report a success that could close the breaker.
			up.Breaker.Cancel(tok)
			break
		}
		f := classify(err)
		if f == failNone && ctx.Response.StatusCode() >= 500 {
			f = failStatus
		}
		rs.attemptDone(up, f, ctx.Response.StatusCode())
		up.report(tok, f, err)
		if f == failNone {
			break
		}
		if retries < p.retry.attempts && p.retry.allows(f, ctx.Response.StatusCode(), idempotent, streamed) &&
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
	removeResponseHopHeaders(&ctx.Response.Header)
	if clientClose {
		ctx.SetConnectionClose()
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
// keep the breaker rejecting every request.
func (u *upstream) report(tok breaker.Token, f failure, err error) {
	switch f {
	case failNoConns:
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
	u.ReportResult(ok)
}

// defaultReplayBody is pool.replayBody when zero: fasthttp's read-ahead of
// a request body, so the bodies it qualifies are in memory already.
const defaultReplayBody = 8 << 10

// replayBufs holds the buffers bufferBody reads bodies through, so a steady
// stream of small PUTs does not allocate one per request.
var replayBufs = sync.Pool{New: func() any { return new([]byte) }}

// bufferBody reads a streamed request body of known size, up to
// p.replayBody, into the request, so that a retry can send it again. The
// server streams every request body (fasthttp reads ahead at most 8KiB of
// it), and a stream can be sent once: without this, a PUT of a few bytes
// could never be retried after reaching an upstream. It reports false after
// answering the client itself, when the body could not be read.
func (p *pool) bufferBody(ctx *fasthttp.RequestCtx, rs *reqState) bool {
	req := &ctx.Request
	n := req.Header.ContentLength()
	limit := p.replayBody
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

	// X-Forwarded-For: the chain so far plus the peer. Collect it before
	// hop-by-hop removal, which deletes whatever Connection names.
	xff := rs.scratch[:0]
	for _, v := range h.PeekAll(fasthttp.HeaderXForwardedFor) {
		if len(xff) > 0 {
			xff = append(xff, ", "...)
		}
		xff = append(xff, v...)
	}
	if len(xff) > 0 {
		xff = append(xff, ", "...)
	}
	xff = peer.AppendTo(xff)
	rs.scratch = xff

	// A trusted proxy in front of us already said what the client used;
	// anyone else's claim is replaced.
	keepProto := peerTrusted && len(h.Peek(fasthttp.HeaderXForwardedProto)) > 0
	keepHost := peerTrusted && len(h.Peek(fasthttp.HeaderXForwardedHost)) > 0

	removeRequestHopHeaders(h)
	// The keys are in canonical form already: SetCanonical skips
	// re-normalizing them on every request.
	h.SetCanonical(keyXForwardedFor, xff)
	if !keepProto {
		if ctx.IsTLS() {
			h.SetCanonical(keyXForwardedProto, valueHTTPS)
		} else {
			h.SetCanonical(keyXForwardedProto, valueHTTP)
		}
	}
	if !keepHost {
		h.SetCanonical(keyXForwardedHost, req.URI().Host())
	}
	h.SetCanonical(p.reqIDHeader, rs.reqID)

	if p.strip && len(p.prefix) > 0 {
		path := req.URI().Path()
		if hasSegmentPrefix(path, p.prefix) {
			rest := path[len(p.prefix):]
			// The URI re-decodes what it is given, so hand it the
			// escaped form: "/a%2525b" must stay "%25" on the wire, not
			// turn into a "%" — nor "%252e%252e" into "..".
			esc := appendEscapedPath(rs.scratch[len(rs.scratch):], rest)
			if len(esc) == 0 {
				esc = append(esc, '/')
			}
			req.URI().SetPathBytes(esc)
		}
	}
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
