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
//	         (an upgrade: pick → breaker → own connection → 101 → tunnel)
//	       → compression → response headers → access log
//
// Stages not built yet (auth, rate limits, caching, tracing)
// would slot in between the tenant match and the proxy stage, or around it,
// as handlers of the same shape.
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
	"github.com/keystone-gateway/keystone/observe"
	"github.com/valyala/fasthttp"
)

// Options configure a Server beyond its config file.
type Options struct {
	// Logger receives the gateway's logs and access logs. If nil, a logger
	// built from the config's logging block writing to stdout/stderr.
	Logger *slog.Logger

	// Version is reported by /admin/health. If empty, "dev".
	Version string

	// Load reads the config again for a reload (SIGHUP, POST
	// /admin/reload, file watching): typically config.Load of the same
	// file, with the same command-line overrides. If nil, those reloads
	// fail with ErrNoLoader; Reload with a config still works.
	Load func() (*config.Config, error)
}

// Server is a running gateway. Create it with New, run it with Serve or
// ListenAndServe, stop it with Shutdown. Its methods are safe for
// concurrent use.
type Server struct {
	log *slog.Logger
	// access receives the access lines: log, or a logger on accessFile
	// (logging.access_log_file), which ReopenLogs reopens.
	access     *slog.Logger
	accessFile *logFile
	version    string
	started    time.Time

	// snap is the published snapshot. Stored by New and by Reload (under
	// rl.mu), loaded once at the start of every request.
	snap atomic.Pointer[snapshot]

	// reg owns the upstream state snapshots share (registry.go).
	reg *registry
	// rl serializes reloads and keeps their records (reload.go).
	rl reloads
	// load reads the config for a reload; nil if there is none.
	load func() (*config.Config, error)
	// serving is set by Serve: checkers start from then on.
	serving atomic.Bool
	// watch is the file watcher (reload.watch), nil if off. Set by Serve
	// and cleared by Shutdown, under rl.mu.
	watch *watcher

	srv *fasthttp.Server

	// stores hold each tenant's keystone.store data; they outlive
	// snapshots so a script reload keeps its counters.
	storesMu sync.Mutex
	stores   map[string]luavm.Store

	lnMu sync.Mutex
	ln   net.Listener

	// tunnels are the upgraded (WebSocket) connections, which outlive
	// the requests that opened them and fasthttp does not track.
	tunnels *tunnels
	// tls is the TLS listener's state (tls.go); nil without server.tls.
	tls *edgeTLS

	// inflight tracks requests in flight while the access log is on, so
	// that Shutdown logs those its grace period cuts off. Nil when the
	// access log is off.
	inflight *inflight
	// obs holds the metrics; it outlives snapshots.
	obs *observe.Registry
	// exporter sends spans to tracing.otlp_endpoint; nil without one.
	exporter *observe.Exporter

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
		reg:     newRegistry(),
		load:    opts.Load,
		tunnels: newTunnels(),
	}
	s.rl.stop = make(chan struct{})
	s.obs = observe.New(observe.Config{Version: opts.Version, ProcessMetrics: true})
	s.obs.Collect(s.collectGauges)
	if s.log == nil {
		out := os.Stdout
		if cfg.Logging.Output == "stderr" {
			out = os.Stderr
		}
		s.log = NewLogger(cfg.Logging, out)
	}
	s.access = s.log
	if path := cfg.Logging.AccessLogFile; path != "" {
		f, err := openLogFile(path)
		if err != nil {
			return nil, err
		}
		s.accessFile = f
		s.access = NewLogger(cfg.Logging, f)
	}
	if s.version == "" {
		s.version = "dev"
	}
	s.exporter = newExporter(cfg, s.log)
	snap, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.snap.Store(snap)
	s.obs.ConfigLoaded(true, time.Now())
	if s.tls, err = s.newEdgeTLS(cfg); err != nil {
		snap.close()
		return nil, err
	}
	s.srv = s.newFastHTTP(cfg)
	if cfg.Logging.AccessLog {
		s.inflight = newInflight(cfg.Server.MaxConns)
	}
	return s, nil
}

// Check builds everything a server would from cfg (pools, scripts, routes)
// without listening or starting health checks, and reports the first error.
// It is `keystone check`.
func Check(cfg *config.Config) error {
	s := &Server{log: slog.New(slog.DiscardHandler), stores: make(map[string]luavm.Store), reg: newRegistry()}
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
			// From the published snapshot, so a reload changes it.
			return fasthttp.RequestConfig{ReadTimeout: s.snap.Load().readTimeout}
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
		ReduceMemoryUsage: true,
		CloseOnShutdown:   true,
		// Upgraded connections are closed by their tunnel, which lets
		// go of fasthttp's read buffer first (websocket.go).
		KeepHijackedConns:     true,
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
	s.rl.mu.Lock()
	s.serving.Store(true)
	s.snap.Load().start()
	if cfg := snap.cfg; cfg.Reload.Watch && s.watch == nil && !s.rl.down {
		if s.load == nil {
			s.log.Error("reload.watch is set but the server has no config file to read again; not watching", "component", "reload")
		} else if w, err := s.startWatcher(cfg); err != nil {
			s.log.Error("cannot watch the config files; reload with SIGHUP or POST /admin/reload", "component", "reload", "error", err.Error())
		} else {
			s.watch = w
		}
	}
	s.rl.mu.Unlock()
	s.startObserve(snap, ln)
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
//
// When ctx ends first, fasthttp stops waiting and leaves the handlers still
// running to the process exit; each request they serve gets its access line
// now, with status 0 and error "shutdown" (docs/operations.md), and not
// again if its handler finishes after all.
func (s *Server) Shutdown(ctx context.Context) error {
	// No reload from here on. The watcher is stopped outside rl.mu: a
	// watch reload it runs may be waiting for it.
	s.rl.mu.Lock()
	s.rl.down = true
	w := s.watch
	s.watch = nil
	s.rl.mu.Unlock()
	if w != nil {
		w.close()
	}
	tlsDone := make(chan struct{})
	go func() { s.shutdownTLS(ctx); close(tlsDone) }()
	err := s.srv.ShutdownWithContext(ctx)
	<-tlsDone
	if err != nil && s.inflight != nil {
		s.inflight.cutOff(s.cutOffLog)
	}
	// fasthttp does not wait for hijacked connections: upgraded ones
	// run until the grace ends, then get a close frame.
	s.tunnels.shutdown(ctx)
	// No reload after this point: the snapshot closed below stays the
	// published one.
	s.rl.mu.Lock()
	defer s.rl.mu.Unlock()
	s.stopRetiring()
	if snap := s.snap.Load(); snap != nil {
		snap.close()
	}
	if s.exporter != nil {
		s.exporter.Stop(ctx) // sends the spans of the last requests
	}
	if s.accessFile != nil {
		s.accessFile.Close() // after the cut-off lines
	}
	s.limits.close()
	if err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

// ReopenLogs reopens the access log file at its path (logrotate's
// SIGUSR1), or does nothing when access lines go to the main log.
func (s *Server) ReopenLogs() error {
	if s.accessFile == nil {
		return nil
	}
	return s.accessFile.Reopen()
}

// handle is the pipeline; see the package doc.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	rs := acquireState()
	// fasthttp read the clock when the request arrived; reuse it.
	rs.start = ctx.Time()
	snap := s.snap.Load()
	for !snap.life.enter() {
		// Retired between the load and the count: a reload published a
		// newer one first (snapLife).
		snap = s.snap.Load()
	}
	// Deferred first, so it runs last: the snapshot may be closed as
	// soon as this request stops counting.
	defer snap.life.exit()
	defer s.finish(ctx, rs, snap)
	if snap.cfg.Logging.AccessLog {
		// Before anything rewrites the request.
		rs.captureRequest(ctx)
	}

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
	if snap.edge != nil && s.edgeRequest(ctx, rs, snap) {
		return
	}

	// ctx.Path is the normalized path: percent-decoded, dot segments and
	// duplicate slashes removed. It is what admin, the tenant index and
	// scripts see and what is forwarded, so "//admin", "/%61dmin" and
	// "/svc/%2e%2e/admin" all reach the admin check as "/admin".
	path := ctx.Path()
	if snap.isMetricsPath(path) {
		s.serveMetrics(ctx, rs, snap)
		return
	}
	if snap.adminEnabled && hasSegmentPrefix(path, snap.adminPrefix) {
		rs.admin = true
		snap.admin.ServeRequest(ctx, path[len(snap.adminPrefix):], (*adminRequest)(rs))
		return
	}
	t, ok := snap.index.Match(ctx.Host(), path)
	if !ok {
		rs.errKind = codeNotFound
		writeError(ctx, rs.reqID, fasthttp.StatusNotFound, codeNotFound, "no tenant matches this host and path")
		return
	}
	rs.tenant = t
	rs.beginRequest(ctx, snap)
	if s.inflight != nil {
		// Everything a cut-off access line shows is set by now.
		s.inflight.add(rs, ctx.ConnID())
	}
	if h.IsTrace() && !t.cfg.AllowTrace {
		// TRACE echoes the request back, cookies and credentials
		// included (cross-site tracing); only a tenant that asks for
		// it gets it.
		rs.errKind = codeMethodNotAllowed
		writeError(ctx, rs.reqID, fasthttp.StatusMethodNotAllowed, codeMethodNotAllowed, "TRACE is not allowed")
		return
	}
	if t.script != nil {
		// Scripts find the request id in the request header (their log
		// lines, req:Header()); a generated id, or one replacing an
		// invalid client id, is not there yet. The proxy stage sets the
		// same value again for the upstream.
		setOnly(h, snap.reqIDHeader, rs.reqID)
	}
	if t.access != nil {
		serveAccess(ctx, rs, t)
	} else {
		rs.serveTenant(ctx, t)
	}
	if t.compress != nil {
		t.compress.apply(ctx)
	}
}

// rejectMalformed answers requests the gateway must not forward and reports
// whether it did.
func (s *Server) rejectMalformed(ctx *fasthttp.RequestCtx, rs *reqState, snap *snapshot) bool {
	h := &ctx.Request.Header
	var status int
	var code, msg string
	switch {
	case !supportedVersion(h):
		status, code, msg = fasthttp.StatusHTTPVersionNotSupported, codeVersion, "only HTTP/1.1 and HTTP/1.0 are served here"
	case framingError(h):
		status, code, msg = fasthttp.StatusBadRequest, codeBadRequest, "ambiguous request framing"
	case len(h.RequestURI()) > snap.maxRequestLine:
		status, code, msg = fasthttp.StatusRequestURITooLong, codeURITooLong, "request line too long"
	case len(h.RawHeaders()) > snap.maxHeaderBytes || fieldLines(h) > snap.maxHeaders:
		status, code, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, codeHeaderTooLarge, "request header too large"
	case badAuthority(h):
		status, code, msg = fasthttp.StatusBadRequest, codeBadRequest, "malformed host"
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
	if status == fasthttp.StatusBadRequest || status == fasthttp.StatusHTTPVersionNotSupported {
		// Framing the gateway does not trust, a protocol it does not
		// speak, or a request lying about its host: it cannot know
		// where the next request starts, or trust the client to say.
		// Close. For the other rejections the framing is sound and
		// fasthttp discards an unread body (up to 256 KiB, closing
		// beyond) so the connection can be reused.
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
	if rs.body.clientFault() {
		answerBodyFault(ctx, rs)
	}
	if snap.edge != nil {
		finishEdge(ctx, snap.edge)
	}
	// One field, the gateway's: an upstream's own ids are replaced.
	ctx.Response.Header.DelBytes(snap.reqIDHeader)
	ctx.Response.Header.SetCanonical(snap.reqIDHeader, rs.reqID)
	rs.endRequest(ctx, snap)
	release := true
	if rs.slot >= 0 && !rs.logged.CompareAndSwap(false, true) {
		// Shutdown logged the request as cut off when the grace period
		// ended, and may still be reading rs: leave it to the GC.
		release = false
	} else if snap.cfg.Logging.AccessLog && rs.logSampled(ctx, snap) {
		s.accessLog(ctx, rs)
	}
	if rs.slot >= 0 {
		s.inflight.remove(rs)
		// Once Shutdown scans the table, a state it loaded must not be
		// reused under it (inflight's doc).
		release = release && !s.inflight.cutoff.Load()
	}
	if release {
		releaseState(rs)
	}
}

// answerBodyFault answers a request whose streamed body failed on the
// client's side. The upstream, if the body was streaming to one, saw a
// request cut short and nothing else. The connection is closed: where the
// next request would start on it is unknown.
func answerBodyFault(ctx *fasthttp.RequestCtx, rs *reqState) {
	ctx.SetConnectionClose()
	switch {
	case rs.body.exceeded:
		rs.errKind = codeTooLarge
		writeError(ctx, rs.reqID, fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "request body too large")
	case isTimeout(rs.body.clientErr):
		rs.errKind = codeTimeout
		writeError(ctx, rs.reqID, fasthttp.StatusRequestTimeout, codeTimeout, "request body not received in time")
	default:
		rs.errKind = codeBadRequest
		writeError(ctx, rs.reqID, fasthttp.StatusBadRequest, codeBadRequest, "malformed or incomplete request body")
	}
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
