// Package server is Keystone's request pipeline: the fasthttp listener and
// its hardening, the tenant index, the proxy stage and the admin endpoints,
// all driven by one immutable snapshot of the config.
//
// One request, step by step:
//
//	accept → snapshot → request id, client IP, framing and size checks
//	       → admin (on the normalized path) → tenant match
//	       → tenant script (luavm router, middleware) → proxy stage:
//	         pick → breaker → forward → report → retry
//	       → response headers → access log
//
// Later stages (auth, rate limits, caching, compression, tracing) slot in
// between the tenant match and the proxy stage, or around it, as handlers of
// the same shape.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
	"github.com/valyala/fasthttp"
)

// Options configure a Server beyond its config file.
type Options struct {
	// Logger receives the gateway's logs and access logs. If nil, a logger
	// built from the config's logging block writing to stdout/stderr.
	Logger *slog.Logger

	// Version is reported by /admin/health. If empty, "dev".
	Version string
}

// Server is a running gateway. Create it with New, run it with Serve or
// ListenAndServe, stop it with Shutdown. Its methods are safe for
// concurrent use.
type Server struct {
	log     *slog.Logger
	version string
	started time.Time

	// snap is the published snapshot. Stored by New (and by a reload),
	// loaded once at the start of every request.
	snap atomic.Pointer[snapshot]

	srv *fasthttp.Server

	// stores hold each tenant's keystone.store data; they outlive
	// snapshots so a script reload keeps its counters.
	storesMu sync.Mutex
	stores   map[string]luavm.Store

	lnMu sync.Mutex
	ln   net.Listener

	// limits is the rate-limit state kept across snapshots (ratelimit.go).
	limits limitRegistry
}

// New builds a server from a loaded config. It compiles every script and
// builds every pool; it does not listen yet.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("server: nil config")
	}
	s := &Server{
		log:     opts.Logger,
		version: opts.Version,
		started: time.Now(),
		stores:  make(map[string]luavm.Store),
	}
	if s.log == nil {
		out := os.Stdout
		if cfg.Logging.Output == "stderr" {
			out = os.Stderr
		}
		s.log = NewLogger(cfg.Logging, out)
	}
	if s.version == "" {
		s.version = "dev"
	}
	snap, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.snap.Store(snap)
	s.srv = s.newFastHTTP(cfg)
	return s, nil
}

// Check builds everything a server would from cfg (pools, scripts, routes)
// without listening or starting health checks, and reports the first error.
// It is `keystone check`.
func Check(cfg *config.Config) error {
	s := &Server{log: slog.New(slog.DiscardHandler), stores: make(map[string]luavm.Store)}
	snap, err := s.build(cfg)
	s.limits.close()
	if err != nil {
		return err
	}
	snap.close()
	return nil
}

// newFastHTTP configures fasthttp for a proxy. fasthttp is a server library
// with server-library defaults: unlimited timeouts, a 4 KiB header limit
// that answers 400, no panic recovery. Each setting below replaces one.
func (s *Server) newFastHTTP(cfg *config.Config) *fasthttp.Server {
	sc := cfg.Server
	readTimeout := sc.ReadTimeout.D()
	stream := sc.StreamRequestBodyOver < sc.MaxRequestBody
	maxBuffered := int(sc.StreamRequestBodyOver)
	if !stream {
		// fasthttp itself answers a larger body (ErrBodyTooLarge →
		// handleError → 413); the pipeline checks Content-Length first.
		maxBuffered = int(sc.MaxRequestBody)
	}
	return &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: s.handleError,
		// The header deadline bounds a slow client sending headers
		// (slowloris); once they are in, the body gets the read timeout.
		ReadTimeout: sc.HeaderTimeout.D(),
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if h.ContentLength() == 0 || h.ContentLength() == -2 {
				// No body to read: keep the header deadline rather
				// than pay a clock read and a timer update for a
				// deadline nothing waits on.
				return fasthttp.RequestConfig{}
			}
			return fasthttp.RequestConfig{ReadTimeout: readTimeout}
		},
		WriteTimeout: sc.WriteTimeout.D(),
		IdleTimeout:  sc.IdleTimeout.D(),
		// The header block is read into this buffer; one that does not
		// fit is ErrSmallBuffer → 431. The pipeline checks the finer
		// limits (request line 414, header bytes and count 431).
		ReadBufferSize: int(sc.MaxHeaderBytes + sc.MaxRequestLine),
		// Bodies up to the threshold are buffered (and can be retried);
		// larger ones stream to the upstream. max_request_body itself is
		// enforced by the pipeline, which answers 413.
		//
		// fasthttp keeps a streaming server's read buffer
		// (max_header_bytes + max_request_line) on every idle keep-alive
		// connection, 40 KiB by default: 10,000 idle clients cost ~180
		// MiB RSS instead of ~105. A threshold at max_request_body means
		// nothing ever streams, so streaming is switched off and that
		// memory freed (docs/operations.md, "Memory").
		StreamRequestBody:            stream,
		MaxRequestBodySize:           maxBuffered,
		DisablePreParseMultipartForm: true, // a proxy forwards forms, it never parses them
		Concurrency:                  sc.MaxConns,
		MaxConnsPerIP:                sc.MaxConnsPerIP,
		// Idle keep-alive connections give their read buffers back to
		// the pool: 10,000 idle clients must not pin 10,000 × 40 KiB.
		ReduceMemoryUsage:     true,
		CloseOnShutdown:       true,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{s.log},
	}
}

// ListenAndServe listens on server.listen and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.snap.Load().cfg.Server.Listen)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Serve serves on ln until Shutdown. It starts the health checks.
func (s *Server) Serve(ln net.Listener) error {
	s.lnMu.Lock()
	s.ln = ln
	s.lnMu.Unlock()
	snap := s.snap.Load()
	snap.start()
	if snap.adminEnabled && snap.cfg.Admin.Token == "" && !loopback(ln.Addr()) {
		s.log.Warn("admin endpoints are reachable from the network without a token; set admin.token",
			"component", "server", "prefix", snap.cfg.Admin.Prefix)
	}
	s.log.Info("listening", "component", "server", "addr", ln.Addr().String(), "version", s.version,
		"tenants", len(s.snap.Load().tenants))
	return s.srv.Serve(ln)
}

// Addr returns the address the server listens on, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting connections, lets requests in flight finish until
// ctx is done, then stops health checks and scripts. Keep-alive connections
// are closed as soon as they are idle (fasthttp's CloseOnShutdown), so an
// idle client cannot hold shutdown up.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.ShutdownWithContext(ctx)
	if snap := s.snap.Load(); snap != nil {
		snap.close()
	}
	s.limits.close()
	if err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

// handle is the pipeline; see the package doc.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	rs := acquireState()
	// fasthttp read the clock when the request arrived; reuse it.
	rs.start = ctx.Time()
	ctx.SetUserValue(stateKey, rs)
	snap := s.snap.Load()
	defer s.finish(ctx, rs, snap)

	h := &ctx.Request.Header
	rs.setRequestID(h.PeekCanonical(snap.reqIDHeader))
	rs.peer = peerAddr(ctx.RemoteIP())
	rs.clientIP = rs.peer
	if len(snap.trusted) > 0 {
		rs.clientIP = snap.trusted.clientIP(rs.peer, h.PeekAll(fasthttp.HeaderXForwardedFor))
	}
	if s.rejectMalformed(ctx, rs, snap) {
		return
	}

	// ctx.Path is the normalized path: percent-decoded, dot segments and
	// duplicate slashes removed. It is what admin, the tenant index and
	// scripts see and what is forwarded, so "//admin", "/%61dmin" and
	// "/svc/%2e%2e/admin" all reach the admin check as "/admin".
	path := ctx.Path()
	if snap.adminEnabled && hasSegmentPrefix(path, snap.adminPrefix) {
		rs.admin = true
		snap.admin.Serve(ctx, path[len(snap.adminPrefix):])
		return
	}
	t, ok := snap.index.Match(ctx.Host(), path)
	if !ok {
		rs.errKind = codeNotFound
		writeError(ctx, rs.reqID, fasthttp.StatusNotFound, codeNotFound, "no tenant matches this host and path")
		return
	}
	rs.tenant = t
	if t.script != nil {
		// Scripts find the request id in the request header (their log
		// lines, req:Header()); a generated id, or one replacing an
		// invalid client id, is not there yet. The proxy stage sets the
		// same value again for the upstream.
		h.SetCanonical(snap.reqIDHeader, rs.reqID)
	}
	if t.access != nil {
		serveAccess(ctx, rs, t)
		return
	}
	t.serve(ctx)
}

// rejectMalformed answers requests the gateway must not forward and reports
// whether it did.
func (s *Server) rejectMalformed(ctx *fasthttp.RequestCtx, rs *reqState, snap *snapshot) bool {
	h := &ctx.Request.Header
	var status int
	var code, msg string
	switch {
	case framingError(h):
		status, code, msg = fasthttp.StatusBadRequest, codeBadRequest, "ambiguous request framing"
	case len(h.RequestURI()) > snap.maxRequestLine:
		status, code, msg = fasthttp.StatusRequestURITooLong, codeURITooLong, "request line too long"
	case len(h.RawHeaders()) > snap.maxHeaderBytes || h.Len() > snap.maxHeaders:
		status, code, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, codeHeaderTooLarge, "request header too large"
	case int64(h.ContentLength()) > snap.maxBody:
		status, code, msg = fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "request body too large"
	default:
		if uri := h.RequestURI(); len(uri) > 0 && uri[0] != '/' && !h.IsOptions() {
			// absolute-form ("GET http://host/p"): the request-target's
			// host wins over the Host header (RFC 9112 section 3.2.2);
			// make the header say so before anything forwards it.
			h.SetHostBytes(ctx.URI().Host())
		}
		if ctx.Request.IsBodyStream() {
			// A chunked body's size is known only as it streams: count
			// it against max_request_body on the way to the upstream.
			// The stream stays the server loop's to drain and release;
			// replacing it here only puts streamBody in front.
			limit, size := int64(-1), h.ContentLength()
			if size == -1 {
				limit = snap.maxBody
			}
			rs.body = streamBody{r: ctx.RequestBodyStream(), n: limit}
			ctx.Request.SetBodyStream(&rs.body, size)
		}
		return false
	}
	if status == fasthttp.StatusBadRequest {
		// Framing the gateway does not trust means it cannot know where
		// the next request starts: close. For the other rejections the
		// framing is sound and fasthttp discards an unread body (up to
		// 256 KiB, closing beyond) so the connection can be reused.
		ctx.SetConnectionClose()
	}
	rs.errKind = code
	writeError(ctx, rs.reqID, status, code, msg)
	return true
}

// finish runs after every request: it turns a panic into a 500, stamps the
// request id on the response, writes the access log and releases the state.
// fasthttp does not recover panics in handlers; without this one bad
// request (or script binding) would take the process down.
func (s *Server) finish(ctx *fasthttp.RequestCtx, rs *reqState, snap *snapshot) {
	if r := recover(); r != nil {
		s.log.Error("panic serving request", "component", "server",
			"request_id", string(rs.reqID), "method", string(ctx.Method()), "path", string(ctx.Path()),
			"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		rs.errKind = codeInternal
		writeError(ctx, rs.reqID, fasthttp.StatusInternalServerError, codeInternal, "internal error")
	}
	if rs.body.exceeded {
		// The upstream saw a truncated chunked body; the client gets 413.
		ctx.SetConnectionClose()
		rs.errKind = codeTooLarge
		writeError(ctx, rs.reqID, fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "request body too large")
	}
	ctx.Response.Header.SetCanonical(snap.reqIDHeader, rs.reqID)
	if snap.cfg.Logging.AccessLog {
		s.accessLog(ctx, rs)
	}
	ctx.RemoveUserValue(stateKey)
	releaseState(rs)
}

// handleError answers requests fasthttp could not parse. The connection is
// closed after the answer.
func (s *Server) handleError(ctx *fasthttp.RequestCtx, err error) {
	rs := acquireState()
	defer releaseState(rs)
	rs.setRequestID(nil)
	status, code, msg := fasthttp.StatusBadRequest, codeBadRequest, "malformed request"
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		status, code, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, codeHeaderTooLarge, "request header too large"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, code, msg = fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "request body too large"
	case isTimeout(err):
		status, code, msg = fasthttp.StatusRequestTimeout, codeTimeout, "request not received in time"
	}
	writeError(ctx, rs.reqID, status, code, msg)
	reqIDHeader := []byte("X-Request-Id")
	if snap := s.snap.Load(); snap != nil {
		reqIDHeader = snap.reqIDHeader
	}
	ctx.Response.Header.SetCanonical(reqIDHeader, rs.reqID)
	s.log.Info("rejected request", "component", "server", "request_id", string(rs.reqID),
		"remote", ctx.RemoteIP().String(), "status", status, "error", err.Error())
}

// loopback reports whether addr only accepts connections from this host.
func loopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
