package server

import (
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/auth"
	"github.com/valyala/fasthttp"
)

// reqState is the per-request bookkeeping of the pipeline: what the access
// log prints and what a Lua script's keystone.Proxy needs to continue the
// request. Server.handle acquires it and passes it down, as a parameter,
// to every stage (access, rate limits, the proxy stage, admin, finish).
// It is pooled: acquireState hands out a reset value and releaseState
// takes it back; nothing may keep a *reqState, or a slice of one, after
// releaseState.
type reqState struct {
	start    time.Time
	tenant   *tenant
	upstream *upstream  // last upstream tried, for the access log
	attempts int        // upstream attempts made
	admin    bool       // served by the admin endpoints
	peer     netip.Addr // the TCP peer
	clientIP netip.Addr // the peer, or who a trusted proxy says it forwards

	// ident is the identity the tenant's auth (or a script's auth
	// middleware) accepted; nil when none. Logged as consumer and
	// auth_method.
	ident *auth.Identity

	// errKind names why the gateway answered on its own ("" when the
	// upstream or a script answered); logged.
	errKind string

	// id holds the request id; reqID is the slice of it in use.
	id    [maxRequestIDLen]byte
	reqID []byte

	// body wraps a streamed request body (bounding a chunked one by
	// max_request_body).
	body streamBody

	// scratch builds header values (X-Forwarded-For) without allocating.
	scratch []byte

	// sent is the request as the client sent it, for the access log:
	// method, host, path (as sent, percent-encoding kept) and query,
	// back to back, ending at sentMethod, sentHost, sentPath and
	// len(sent). Copied on arrival (captureRequest), before strip_prefix,
	// scripts or preserve_host rewrite the request; empty when the access
	// log is off.
	sent                           []byte
	sentMethod, sentHost, sentPath int

	// slot is the request's index in Server.inflight, or -1 when it is
	// not tracked there. Written by the request's goroutine before it
	// publishes the state in the slot.
	slot int32
	// logged is set by whoever writes the request's access line: finish,
	// or Shutdown logging the requests its grace period cut off. Either
	// may set it; the loser writes nothing. Invariant: at most one access
	// line per request.
	logged atomic.Bool

	obs obsState // trace, durations, counter shard (observe.go)
}

var statePool = sync.Pool{New: func() any { return &reqState{scratch: make([]byte, 0, 128), slot: -1} }}

func acquireState() *reqState { return statePool.Get().(*reqState) }

func releaseState(rs *reqState) {
	scratch, sent := rs.scratch[:0], rs.sent[:0]
	if cap(scratch) > 4096 {
		// Don't let one huge X-Forwarded-For chain pin memory in the pool.
		scratch = make([]byte, 0, 128)
	}
	if cap(sent) > 4096 {
		sent = nil
	}
	*rs = reqState{scratch: scratch, sent: sent, slot: -1}
	statePool.Put(rs)
}

// captureRequest copies what the client sent into rs.sent for the access
// log. It allocates only while the pooled buffer grows.
func (rs *reqState) captureRequest(ctx *fasthttp.RequestCtx) {
	u := ctx.URI()
	b := append(rs.sent[:0], ctx.Method()...)
	rs.sentMethod = len(b)
	b = append(b, u.Host()...)
	rs.sentHost = len(b)
	b = append(b, u.PathOriginal()...)
	rs.sentPath = len(b)
	rs.sent = append(b, u.QueryString()...)
}

// scriptKey attaches a request's *reqState to its RequestCtx while the
// tenant's Lua script runs, and only then (tenant.runScript). It is the one
// place the state crosses a boundary through the ctx: luavm calls back into
// the gateway (keystone.Proxy's handler, the router's fallback,
// Host.WriteError, ClientIP, Auth) with the ctx alone, because its routes
// are fasthttp/router handlers, which take nothing else. A small integer
// constant boxes into an interface without allocating.
type ctxKey uint8

const scriptKey ctxKey = 1

// scriptState returns the state of the request whose script called back
// into the gateway, or nil for a ctx no script runs on (a test calling a
// luavm handler directly).
func scriptState(ctx *fasthttp.RequestCtx) *reqState {
	rs, _ := ctx.UserValue(scriptKey).(*reqState)
	return rs
}

// maxRequestIDLen caps a propagated request id; a longer or malformed one is
// replaced by a generated id rather than forwarded.
const maxRequestIDLen = 128

// setRequestID propagates a valid client-supplied id or generates one: 32
// lowercase hex characters, the shape of a W3C trace-id, so the id can
// become the trace id when tracing lands.
func (rs *reqState) setRequestID(given []byte) {
	if validRequestID(given) {
		rs.reqID = append(rs.id[:0], given...)
		return
	}
	var raw [16]byte
	// math/rand/v2's global source is a per-thread ChaCha8: safe for
	// concurrent use, allocation-free and unpredictable enough for a
	// correlation id (it is not a secret).
	a, b := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		raw[i] = byte(a >> (8 * i))
		raw[8+i] = byte(b >> (8 * i))
	}
	hex.Encode(rs.id[:32], raw[:])
	rs.reqID = rs.id[:32]
}

// validRequestID accepts 1..128 visible characters from a conservative set,
// so a client cannot inject header syntax or log noise through its id.
func validRequestID(b []byte) bool {
	if len(b) == 0 || len(b) > maxRequestIDLen {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '/', c == '+', c == '=':
		default:
			return false
		}
	}
	return true
}

// errBodyTooLarge ends a streamed request body that passed max_request_body.
var errBodyTooLarge = errors.New("server: request body too large")

// streamBody wraps a request body that streams to the upstream. It bounds a
// chunked body by max_request_body (its size is known only as it streams),
// and it copies through a pooled buffer: without it fasthttp hands the
// stream to bufio.Writer.ReadFrom, which ends in net.TCPConn.ReadFrom's
// io.Copy and a fresh 32 KiB buffer per request (98% of the bytes the POST
// 64 KiB bench scenario allocated).
//
// It also tells the client's faults from the upstream's: an attempt whose
// request body could not be read from the client (a malformed chunk, a
// body cut short, a client too slow for server.read_timeout) fails inside
// the upstream client's write, where it looks like a broken upstream
// connection. clientErr records it, so the proxy stage aborts the attempt
// without blaming the upstream and answers the client itself.
type streamBody struct {
	r        io.Reader
	n        int64 // bytes still allowed; < 0 when unbounded
	exceeded bool
	// clientErr is the first error other than io.EOF that reading the
	// client's body returned; nil while the body reads cleanly. Written
	// and read by the request's goroutine only.
	clientErr error
}

// clientFault reports whether the request body failed on the client's side:
// too large, malformed, truncated or too slow.
func (b *streamBody) clientFault() bool { return b.exceeded || b.clientErr != nil }

func (b *streamBody) Read(p []byte) (int, error) {
	if b.exceeded {
		return 0, errBodyTooLarge
	}
	if b.clientErr != nil {
		return 0, b.clientErr
	}
	if b.n < 0 {
		return b.read(p)
	}
	// Ask for one byte more than allowed: getting it proves the body is
	// too large without waiting for the rest.
	if int64(len(p)) > b.n+1 {
		p = p[:b.n+1]
	}
	n, err := b.read(p)
	if int64(n) > b.n {
		b.exceeded = true
		return 0, errBodyTooLarge
	}
	b.n -= int64(n)
	return n, err
}

// read reads from the client's stream and records its failure. fasthttp's
// request stream reports a malformed chunk size, chunk data longer than
// announced or a connection closed before the end of the body as an error
// other than io.EOF (a truncated Content-Length body as
// io.ErrUnexpectedEOF).
func (b *streamBody) read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.clientErr = err
	}
	return n, err
}

// SupportsBodyWriteTo tells fasthttp to copy with WriteTo (fasthttp's
// BodyWriterTo).
func (b *streamBody) SupportsBodyWriteTo() bool { return true }

// copyBufs are the buffers streamed bodies are copied through.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// WriteTo copies the body to w through a pooled buffer.
func (b *streamBody) WriteTo(w io.Writer) (int64, error) {
	buf := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(buf)
	var total int64
	for {
		n, rerr := b.Read(buf[:])
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m < n {
				return total, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
