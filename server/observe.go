package server

import (
	"crypto/subtle"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/breaker"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
	"github.com/keystone-gateway/keystone/observe"
	"github.com/keystone-gateway/keystone/ratelimit"
	"github.com/valyala/fasthttp"
)

// obsState is a request's observability bookkeeping, part of reqState.
//
// Durations are offsets from reqState.start measured with the monotonic
// clock. A clock read costs 50-100ns on the machines the benchmarks ran on,
// more than everything else metrics add, so the plain proxy path reads it
// once: after the upstream attempt, a reading the request's end reuses.
type obsState struct {
	trace observe.Trace
	// traceparent holds the value sent upstream.
	traceparent [observe.TraceparentLen]byte
	// shard spreads the request's counters (the connection id).
	shard observe.Shard
	// timed is set when durations are measured (metrics, access log or
	// span export).
	timed bool
	// script is set while a tenant script runs: an upstream attempt then
	// starts at a fresh reading, not at the end of the last one.
	script bool
	// elapsed is the last clock reading (0: none yet); mark is where the
	// next upstream attempt starts counting.
	elapsed, mark time.Duration
	// upstream is the time spent in upstream attempts; lua the time in
	// the tenant script, upstream attempts made from it excluded.
	upstream, lua time.Duration
	// upFirst is where the first upstream attempt started (upSeen: one
	// was made), for the exported upstream span.
	upFirst time.Duration
	upSeen  bool
}

// observeSnapshot is a snapshot's observability settings.
type observeSnapshot struct {
	metricsEnabled bool
	metricsPath    []byte
	tracing        bool
	sampleRatio    float64
	accessSample   float64
	// timed: durations are measured.
	timed bool
	// noneRoute and adminRoute count requests no tenant took.
	noneRoute, adminRoute *observe.RouteStats
	// exporter sends sampled spans (nil: no tracing.otlp_endpoint).
	exporter *observe.Exporter
}

func (s *Server) observeSettings(cfg *config.Config) observeSnapshot {
	o := observeSnapshot{
		metricsEnabled: cfg.Metrics.Enabled,
		metricsPath:    []byte(cfg.Metrics.Path),
		tracing:        cfg.Tracing.Enabled,
		sampleRatio:    cfg.Tracing.SampleRatio,
		accessSample:   cfg.Logging.AccessLogSample,
		timed:          cfg.Metrics.Enabled || cfg.Logging.AccessLog || s.exporter != nil,
		exporter:       s.exporter,
	}
	if cfg.Metrics.Enabled {
		o.noneRoute = s.obs.Route("(none)", "")
		o.adminRoute = s.obs.Route("(admin)", "")
	}
	return o
}

// observeTenant resolves a tenant's counters when the snapshot is built.
// The route label is the tenant's path prefix: scripts' route patterns are
// not yet reported by luavm.
func (s *Server) observeTenant(snap *snapshot, t *tenant) {
	if !snap.obs.metricsEnabled {
		return
	}
	t.route = s.obs.Route(t.cfg.Name, routeOf(t))
	t.stats = s.obs.Tenant(t.cfg.Name, t.cfg.Script)
}

// routeOf is the route label of a request matched to t: the tenant's path
// prefix, "/" for any path.
func routeOf(t *tenant) string {
	if t.cfg.PathPrefix == "" {
		return "/"
	}
	return t.cfg.PathPrefix
}

// traceAttrs are the access log's route and trace fields: the route, the
// trace id, the gateway's span id and the caller's span id when it sent
// one. beginRequest sets them all, so a line written by another goroutine
// may read them once the request was published after it.
func (rs *reqState) traceAttrs() []slog.Attr {
	o := &rs.obs
	route := ""
	if rs.tenant != nil {
		route = routeOf(rs.tenant)
	}
	attrs := make([]slog.Attr, 0, 4)
	attrs = append(attrs, slog.String("route", route))
	if o.trace.Valid() {
		attrs = append(attrs,
			slog.String("trace_id", string(o.trace.TraceID[:])),
			slog.String("span_id", string(o.trace.SpanID[:])))
		if o.trace.ParentID != ([16]byte{}) {
			attrs = append(attrs, slog.String("parent_span_id", string(o.trace.ParentID[:])))
		}
	}
	return attrs
}

// timingAttrs are the time spent in upstream attempts and in the tenant's
// Lua script. They are written while the request runs: only the request's
// own goroutine, in finish, may read them.
func (rs *reqState) timingAttrs() []slog.Attr {
	o := &rs.obs
	if !o.timed {
		return nil
	}
	return []slog.Attr{
		slog.Float64("upstream_ms", float64(o.upstream.Microseconds())/1000),
		slog.Float64("lua_ms", float64(o.lua.Microseconds())/1000),
	}
}

// beginRequest starts the request's trace: the incoming traceparent's
// trace continued with a new span, or a new trace when it is absent or
// malformed (W3C Trace Context section 3.2.2: an invalid traceparent is
// treated as absent). The upstream is sent the gateway's span as its
// parent; tracestate travels on untouched, and is dropped with a
// traceparent that could not be parsed, since it described that trace
// (section 3.3.1).
func (rs *reqState) beginRequest(ctx *fasthttp.RequestCtx, snap *snapshot) {
	o := &rs.obs
	o.shard = observe.Shard(ctx.ConnID())
	o.timed = snap.obs.timed
	if !snap.obs.tracing {
		return
	}
	h := &ctx.Request.Header
	if tr, ok := observe.ParseTraceparent(h.PeekCanonical(keyTraceparent)); ok {
		o.trace = tr
		o.trace.Continue()
	} else {
		o.trace.Start(snap.obs.sampleRatio)
		h.DelBytes(keyTracestate)
	}
	h.SetCanonical(keyTraceparent, o.trace.AppendTraceparent(o.traceparent[:0]))
}

// Trace Context header names in the canonical form fasthttp stores them in
// (the spec writes them lower case; header names are case-insensitive).
var (
	keyTraceparent = []byte("Traceparent")
	keyTracestate  = []byte("Tracestate")
)

// serveTenant serves a request matched to t after the access stage: its
// rate limits, if any (tenantLimits.serve), then runTenant.
func (rs *reqState) serveTenant(ctx *fasthttp.RequestCtx, t *tenant) {
	if t.limits != nil {
		t.limits.serve(ctx, rs, t)
		return
	}
	rs.runTenant(ctx, t)
}

// runTenant runs the tenant's handler and, for a script, measures the
// time spent in Lua (the handler's time less its upstream attempts).
func (rs *reqState) runTenant(ctx *fasthttp.RequestCtx, t *tenant) {
	if t.script == nil || !rs.obs.timed {
		t.serve(ctx, rs)
		return
	}
	o := &rs.obs
	o.script = true
	t.serve(ctx, rs)
	o.script = false
	o.elapsed = time.Since(rs.start)
	o.lua = o.elapsed - o.upstream
	t.stats.Script().Observe(o.shard, o.lua)
}

// beginUpstream marks where the first upstream attempt starts: the
// request's start on the plain proxy path (no clock read; the time to
// parse and match the request is counted against the upstream), now when
// a script calls the pool.
func (rs *reqState) beginUpstream() {
	if o := &rs.obs; o.timed && o.script {
		o.mark = time.Since(rs.start)
	}
}

// attemptDone records one upstream attempt that ended in f with status.
func (rs *reqState) attemptDone(up *upstream, f failure, status int) {
	o := &rs.obs
	if !o.timed {
		return
	}
	o.elapsed = time.Since(rs.start)
	d := o.elapsed - o.mark
	if !o.upSeen {
		o.upSeen, o.upFirst = true, o.mark
	}
	o.mark = o.elapsed
	o.upstream += d
	if up.stats == nil {
		return
	}
	switch f {
	case failNone, failStatus:
		up.stats.ObserveStatus(o.shard, status, d)
	case failConnect:
		up.stats.ObserveFailure(o.shard, observe.FailConnect, d)
	case failConnTimeout, failTimeout:
		up.stats.ObserveFailure(o.shard, observe.FailTimeout, d)
	case failNoConns:
		up.stats.ObserveFailure(o.shard, observe.FailNoConns, d)
	case failTooLarge:
		up.stats.ObserveFailure(o.shard, observe.FailTooLarge, d)
	default:
		up.stats.ObserveFailure(o.shard, observe.FailClosed, d)
	}
}

// retried counts a retry and restarts the attempt clock after a backoff.
func (rs *reqState) retried(p *pool) {
	p.stats.Retry()
	if p.retry.backoff > 0 && rs.obs.timed {
		rs.obs.mark = time.Since(rs.start)
	}
}

// endRequest records the finished request in the metrics. It runs in
// finish, before the access log.
func (rs *reqState) endRequest(ctx *fasthttp.RequestCtx, snap *snapshot) {
	o := &rs.obs
	if !snap.obs.timed {
		return
	}
	if o.elapsed == 0 {
		o.elapsed = time.Since(rs.start)
	}
	if e := snap.obs.exporter; e != nil && o.trace.Flags&observe.FlagSampled != 0 && rs.tenant != nil {
		rs.exportSpans(ctx, e)
	}
	if !snap.obs.metricsEnabled {
		return
	}
	route := snap.obs.noneRoute
	switch {
	case rs.tenant != nil:
		route = rs.tenant.route
	case rs.admin:
		route = snap.obs.adminRoute
	}
	var in int64
	if n := ctx.Request.Header.ContentLength(); n > 0 {
		in = int64(n)
	}
	route.Observe(observe.Shard(ctx.ConnID()), ctx.Method(), ctx.Response.StatusCode(), o.elapsed, in, responseSize(&ctx.Response))
}

// exportSpans hands the request's spans to the exporter. The record is
// built on the stack from config strings and copied into the exporter's
// ring: nothing allocates.
func (rs *reqState) exportSpans(ctx *fasthttp.RequestCtx, e *observe.Exporter) {
	o := &rs.obs
	r := observe.SpanRecord{
		Trace:    o.trace,
		Start:    rs.start,
		Duration: o.elapsed,
		Method:   observe.MethodLabel(ctx.Method()),
		Status:   ctx.Response.StatusCode(),
		Tenant:   rs.tenant.cfg.Name,
		Route:    routeOf(rs.tenant),
	}
	if o.upSeen && rs.upstream != nil {
		r.Attempts = rs.attempts
		r.UpstreamStart, r.UpstreamEnd = o.upFirst, o.upFirst+o.upstream
		r.Upstream = rs.upstream.URL
	}
	e.Record(&r)
}

// responseSize is the response body's size without reading a stream.
func responseSize(resp *fasthttp.Response) int64 {
	if resp.IsBodyStream() {
		return max(int64(resp.Header.ContentLength()), 0)
	}
	return int64(len(resp.Body()))
}

// logSampled reports whether the access line of this request is written:
// always for an error (the gateway's own, or a 5xx), else with the
// configured probability.
func (rs *reqState) logSampled(ctx *fasthttp.RequestCtx, snap *snapshot) bool {
	r := snap.obs.accessSample
	if r >= 1 || rs.errKind != "" || ctx.Response.StatusCode() >= 500 {
		return true
	}
	return r > 0 && rand.Float64() < r
}

// countScriptError counts a script failure the script host answers for.
func countScriptError(t *tenant, status int, msg string) {
	if status < 500 {
		return
	}
	switch msg {
	case "script error":
		t.stats.Script().Error(observe.LuaError)
	case "script timeout":
		t.stats.Script().Error(observe.LuaTimeout)
	case "script busy":
		t.stats.Script().Error(observe.LuaBusy)
	}
}

// isMetricsPath reports whether path is the metrics endpoint.
func (snap *snapshot) isMetricsPath(path []byte) bool {
	return snap.obs.metricsEnabled && string(path) == string(snap.obs.metricsPath)
}

// serveMetrics answers a scrape: admin.token is required as for the admin
// endpoints.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx, rs *reqState, snap *snapshot) {
	rs.admin = true
	if tok := snap.cfg.Admin.Token; tok != "" {
		got := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
		want := "Bearer " + tok
		if subtle.ConstantTimeCompare(got, []byte(want)) != 1 {
			rs.errKind = "unauthorized"
			writeError(ctx, rs.reqID, fasthttp.StatusUnauthorized, "unauthorized", "admin token required")
			// After writeError, which starts the response afresh.
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="keystone-admin"`)
			return
		}
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		rs.errKind = codeMethodNotAllowed
		writeError(ctx, rs.reqID, fasthttp.StatusMethodNotAllowed, codeMethodNotAllowed, "metrics are read-only")
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	s.obs.WritePrometheus(ctx)
}

// collectGauges writes the live state of the current snapshot at scrape
// time: upstream health, in-flight requests, breaker states, connection
// pools and the Lua VM pools.
func (s *Server) collectGauges(e *observe.Emitter) {
	snap := s.snap.Load()
	if snap == nil {
		return
	}
	type key struct{ tenant, url string }
	type row struct {
		key
		up *upstream
	}
	var rows []row
	seen := map[key]bool{}
	for _, p := range snap.pools {
		for _, up := range p.ups {
			k := key{p.name, up.URL}
			if !seen[k] {
				seen[k] = true
				rows = append(rows, row{k, up})
			}
		}
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, r := range rows {
		e.Gauge("keystone_upstream_healthy", b2f(r.up.Status().Healthy), "tenant", r.tenant, "upstream", r.url)
	}
	for _, r := range rows {
		e.Gauge("keystone_upstream_available", b2f(r.up.Available()), "tenant", r.tenant, "upstream", r.url)
	}
	for _, r := range rows {
		e.Gauge("keystone_upstream_inflight", float64(r.up.Status().Inflight), "tenant", r.tenant, "upstream", r.url)
	}
	for _, r := range rows {
		if r.up.Breaker == nil {
			continue
		}
		// 0 closed, 1 half-open, 2 open: the worse, the higher.
		v := 0.0
		switch r.up.Breaker.State() {
		case breaker.StateHalfOpen:
			v = 1
		case breaker.StateOpen:
			v = 2
		}
		e.Gauge("keystone_breaker_state", v, "tenant", r.tenant, "upstream", r.url)
	}
	for _, r := range rows {
		e.Gauge("keystone_upstream_connections", float64(r.up.client.ConnsCount()), "tenant", r.tenant, "upstream", r.url)
	}
	type scriptStats struct {
		t  *tenant
		st luavm.Stats
	}
	var scripted []scriptStats
	for _, t := range snap.tenants {
		if t.script != nil {
			scripted = append(scripted, scriptStats{t, t.script.Stats()})
		}
	}
	// One family at a time: the exposition format wants each metric's
	// samples together, under its # TYPE line.
	for _, state := range [...]string{"idle", "live"} {
		for _, sc := range scripted {
			v := sc.st.VMsIdle
			if state == "live" {
				v = sc.st.VMsLive
			}
			e.Gauge("keystone_lua_vms", float64(v), "tenant", sc.t.cfg.Name, "script", sc.t.cfg.Script, "state", state)
		}
	}
	gauges := [...]struct {
		name string
		v    func(luavm.Stats) float64
	}{
		{"keystone_lua_threads", func(st luavm.Stats) float64 { return float64(st.Threads) }},
		{"keystone_lua_inflight", func(st luavm.Stats) float64 { return float64(st.Inflight) }},
		{"keystone_lua_memory_bytes", func(st luavm.Stats) float64 { return float64(st.MemoryBytes) }},
	}
	for _, g := range gauges {
		for _, sc := range scripted {
			e.Gauge(g.name, g.v(sc.st), "tenant", sc.t.cfg.Name, "script", sc.t.cfg.Script)
		}
	}
	counters := [...]struct {
		name string
		v    func(luavm.Stats) uint64
	}{
		{"keystone_lua_vms_created_total", func(st luavm.Stats) uint64 { return st.VMsCreated }},
		{"keystone_lua_vms_discarded_total", func(st luavm.Stats) uint64 { return st.VMsDiscarded }},
		{"keystone_lua_vm_waits_total", func(st luavm.Stats) uint64 { return st.VMWaits }},
		{"keystone_lua_vm_wait_timeouts_total", func(st luavm.Stats) uint64 { return st.VMWaitTimeouts }},
	}
	for _, c := range counters {
		for _, sc := range scripted {
			e.Counter(c.name, c.v(sc.st), "tenant", sc.t.cfg.Name, "script", sc.t.cfg.Script)
		}
	}
	for _, sc := range scripted {
		e.CounterFloat("keystone_lua_vm_wait_seconds_total", sc.st.VMWaitTime.Seconds(), "tenant", sc.t.cfg.Name, "script", sc.t.cfg.Script)
	}
	s.collectLimits(snap, e)
	if s.exporter != nil {
		sent, dropped, failed := s.exporter.Stats()
		e.Counter("keystone_trace_spans_exported_total", sent)
		e.Counter("keystone_trace_records_dropped_total", dropped)
		e.Counter("keystone_trace_exports_failed_total", failed)
	}
}

// Stats reports the per-tenant request counters to /admin/stats and the
// dashboard (admin.StatsSource); false while metrics are disabled.
func (a adminSource) Stats() (admin.Stats, bool) {
	if !a.s.snap.Load().obs.metricsEnabled {
		return admin.Stats{}, false
	}
	st := admin.Stats{BoundsSeconds: observe.Bounds[:]}
	for _, ts := range a.s.obs.Summaries() {
		if ts.Tenant == "(admin)" || ts.Tenant == "(none)" {
			continue
		}
		st.Tenants = append(st.Tenants, admin.TenantStats{
			Name:               ts.Tenant,
			Requests:           ts.Requests,
			ClientErrors:       ts.ClientErrors,
			ServerErrors:       ts.ServerErrors,
			DurationBuckets:    ts.Duration.Buckets[:],
			DurationSumSeconds: ts.Duration.Sum.Seconds(),
		})
	}
	return st, true
}

// startObserve starts the span exporter and warns when the metrics, which
// name every tenant and upstream, are open to the network.
func (s *Server) startObserve(snap *snapshot, ln net.Listener) {
	if s.exporter != nil {
		s.exporter.Start()
	}
	if snap.obs.metricsEnabled && snap.cfg.Admin.Token == "" && !loopback(ln.Addr()) {
		s.log.Warn("metrics are reachable from the network without a token; set admin.token",
			"component", "server", "path", snap.cfg.Metrics.Path)
	}
}

// newExporter returns the span exporter of cfg, or nil when spans are not
// exported.
func newExporter(cfg *config.Config, log *slog.Logger) *observe.Exporter {
	t := cfg.Tracing
	if !t.Enabled || t.OTLPEndpoint == "" {
		return nil
	}
	return observe.NewExporter(observe.ExporterConfig{
		Endpoint: t.OTLPEndpoint,
		Interval: t.ExportInterval.D(),
		Logger:   log,
	})
}

// collectLimits writes the rate-limit state: the local stores' sizes, each
// limited tenant's requests decided by shared.redis.on_error, and the
// Redis client's errors and breaker.
func (s *Server) collectLimits(snap *snapshot, e *observe.Emitter) {
	s.limits.mu.Lock()
	local, conns := s.limits.local, s.limits.conns
	s.limits.mu.Unlock()
	if local != nil {
		e.Gauge("keystone_ratelimit_local_keys", float64(local.Len()))
	}
	if conns != nil {
		e.Gauge("keystone_ratelimit_inflight_keys", float64(conns.Len()))
	}
	var redis *ratelimit.Redis
	for _, t := range snap.tenants {
		if t.limits == nil {
			continue
		}
		e.Counter("keystone_ratelimit_on_error_total", t.limits.onError.Load(), "tenant", t.cfg.Name)
		if t.limits.redis != nil {
			redis = t.limits.redis // one client for the process
		}
	}
	if redis == nil {
		return
	}
	rs := redis.Stats()
	e.Counter("keystone_redis_errors_total", rs.Errors)
	e.Counter("keystone_redis_fast_fails_total", rs.FastFails)
	state := 0.0
	switch rs.Breaker {
	case "half-open", "half_open":
		state = 1
	case "open":
		state = 2
	}
	e.Gauge("keystone_redis_breaker_state", state)
}
