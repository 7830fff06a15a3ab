// Package admin serves Keystone's admin JSON endpoints on the main listener,
// under the configured prefix:
//
//	GET /admin/health   overall and per-tenant status, per-upstream state
//	GET /admin/tenants  the tenants with their domains, prefix, balancer and upstreams
//	GET /admin/stats    per-tenant request counts and duration buckets (dashboard.go)
//	GET /admin/         the dashboard: one HTML page polling the endpoints above
//
// and, with a Control, the reload, route and drain endpoints (control.go).
//
// It knows nothing of the server: it reports on a Source, which the server
// implements, so a multi-process worker mode can later aggregate several
// sources behind the same endpoints.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"time"

	"github.com/valyala/fasthttp"
)

// Source is what the admin endpoints report on.
type Source interface {
	// Tenants returns the current tenants and the live state of their
	// upstreams. The result is owned by the caller.
	Tenants() []Tenant
	// Version is the running build's version.
	Version() string
	// Started is when the process started serving.
	Started() time.Time
}

// Tenant is one tenant as the admin endpoints show it.
type Tenant struct {
	Name        string     `json:"name"`
	Domains     []string   `json:"domains"`
	PathPrefix  string     `json:"path_prefix"`
	StripPrefix bool       `json:"strip_prefix"`
	Balancer    string     `json:"balancer"`
	Script      string     `json:"script,omitempty"`
	Upstreams   []Upstream `json:"upstreams"`
	// Upgraded counts the tenant's upgraded (WebSocket) connections open
	// now.
	Upgraded int `json:"upgraded_connections"`
	// Lua is the script's VM pool, for a tenant with a script.
	Lua *Lua `json:"lua,omitempty"`
	// Limits is the state of the tenant's rate_limits, max_conns_per_key
	// and keystone.store; absent when it has no limits and no script.
	Limits *Limits `json:"limits,omitempty"`
}

// Lua is the live state of one tenant script's VMs and request threads.
type Lua struct {
	// VMsLive VMs exist, VMsIdle of them not running Lua now.
	VMsLive int `json:"vms_live"`
	VMsIdle int `json:"vms_idle"`
	// VMsCreated counts VMs ever created, warm-up included.
	VMsCreated uint64 `json:"vms_created"`
	// VMsDiscarded counts Lua states dropped after a timeout or a panic.
	VMsDiscarded uint64 `json:"vms_discarded"`
	// Threads is the request threads in existence (in flight or pooled).
	Threads int `json:"threads"`
	// Inflight is the requests being served by the script now.
	Inflight int `json:"inflight"`
	// MemoryBytes is the memory budget in use, of MaxMemoryBytes.
	MemoryBytes    int64 `json:"memory_bytes"`
	MaxMemoryBytes int64 `json:"max_memory_bytes"`
	// Requests and Errors count the script's requests and failures.
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// VMWaits counts requests that queued for a VM or budget room,
	// VMWaitSeconds their total time queued, VMWaitTimeouts those that
	// gave up after lua.vm_wait (answered 503).
	VMWaits        uint64  `json:"vm_waits"`
	VMWaitSeconds  float64 `json:"vm_wait_seconds"`
	VMWaitTimeouts uint64  `json:"vm_wait_timeouts"`
}

// Limits is the shared-state side of a tenant: rate limits and the script
// store.
type Limits struct {
	// Store is local or redis (shared.store).
	Store string `json:"store"`
	// LocalKeys is the number of rate-limit buckets in this instance's
	// memory, every tenant's together (bounded by shared.local_max_keys).
	LocalKeys int `json:"local_keys"`
	// InFlightKeys is the number of max_conns_per_key keys with requests
	// in flight, every tenant's together.
	InFlightKeys int `json:"in_flight_keys"`
	// OnError counts this tenant's requests decided by shared.redis.on_error
	// because Redis did not answer.
	OnError uint64 `json:"on_error"`
	// ScriptStoreKeys is the number of keys in the tenant's local
	// keystone.store (bounded by shared.local_max_keys); -1 when the store
	// is Redis.
	ScriptStoreKeys int `json:"script_store_keys"`
	// Redis is the Redis client's state with shared.store redis.
	Redis *RedisStatus `json:"redis,omitempty"`
}

// RedisStatus is the state of the gateway's Redis client.
type RedisStatus struct {
	// Breaker is closed, open or half_open: open while Redis keeps
	// failing, when requests are decided by on_error without asking it.
	Breaker string `json:"breaker"`
	// Errors counts failed Redis commands.
	Errors uint64 `json:"errors"`
	// FastFails counts commands not sent because the breaker was open.
	FastFails uint64 `json:"fast_fails"`
	// SyncIntervalMaxMS is the longest time between two local_first
	// reconciliations of one key, the interval of the overshoot bound.
	SyncIntervalMaxMS float64 `json:"sync_interval_max_ms,omitempty"`
}

// Upstream is one upstream's live state.
type Upstream struct {
	URL    string `json:"url"`
	Weight int    `json:"weight"`
	// Healthy is the active health check's verdict (true without checks).
	Healthy bool `json:"healthy"`
	// Available is whether the balancer would pick it now: healthy, not
	// ejected by passive checks, breaker not open.
	Available bool `json:"available"`
	// Ejected is set while passive outlier detection keeps it out.
	Ejected      bool       `json:"ejected"`
	EjectedUntil *time.Time `json:"ejected_until,omitempty"`
	// Breaker is closed, open or half_open; empty without a breaker.
	Breaker string `json:"breaker,omitempty"`
	// ConsecutiveFailures counts failed active checks in a row.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// PassiveFailures counts failed requests in a row.
	PassiveFailures int        `json:"passive_failures"`
	LastCheck       *time.Time `json:"last_check,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
	Inflight        int64      `json:"inflight"`
	// Draining is set while an operator's drain keeps it out of
	// rotation (POST /admin/upstreams/drain).
	Draining bool `json:"draining"`
}

// Status values of tenants and of the whole gateway.
const (
	StatusOK       = "ok"       // every upstream available
	StatusDegraded = "degraded" // some upstreams available
	StatusDown     = "down"     // no upstream available
)

// Config configures the admin endpoints.
type Config struct {
	// Token, when not empty, is required as "Authorization: Bearer <token>".
	Token string

	// WriteError answers with the gateway's JSON error body. Required by
	// Serve; ServeRequest uses its Request's instead. It may replace the
	// whole response, headers included (the server's does), so headers
	// that go with an error are set after it.
	WriteError func(ctx *fasthttp.RequestCtx, status int, code, msg string)

	// Control serves the reload, routes and drain endpoints. If nil,
	// they answer 404 and /admin/health has no last_reload.
	Control Control

	// ClientIP returns the client IP the audit log names, for Serve. If
	// nil, the TCP peer.
	ClientIP func(ctx *fasthttp.RequestCtx) string
}

// Request is the server's side of one admin request, passed to
// ServeRequest: what the server resolved about it and how it answers
// errors for it.
type Request interface {
	// ClientIP returns the client IP the audit log names (trusted
	// proxies applied).
	ClientIP() string
	// WriteError answers with the gateway's JSON error body, as
	// Config.WriteError.
	WriteError(ctx *fasthttp.RequestCtx, status int, code, msg string)
}

// configRequest is the Request of Serve: Config's callbacks.
type configRequest struct {
	h   *Handler
	ctx *fasthttp.RequestCtx
}

func (r configRequest) ClientIP() string {
	if r.h.clientIP != nil {
		return r.h.clientIP(r.ctx)
	}
	return r.ctx.RemoteIP().String()
}

func (r configRequest) WriteError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	r.h.writeError(ctx, status, code, msg)
}

// Handler serves the admin endpoints. It is safe for concurrent use.
type Handler struct {
	token      []byte
	src        Source
	writeError func(ctx *fasthttp.RequestCtx, status int, code, msg string)
	ctl        Control
	clientIP   func(ctx *fasthttp.RequestCtx) string
}

// New returns the admin handler for src.
func New(cfg Config, src Source) *Handler {
	h := &Handler{src: src, writeError: cfg.WriteError, ctl: cfg.Control, clientIP: cfg.ClientIP}
	if cfg.Token != "" {
		h.token = []byte("Bearer " + cfg.Token)
	}
	return h
}

// Serve answers an admin request with Config's WriteError and ClientIP.
// path is the request path after the admin prefix ("/health"), already
// normalized by the server.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx, path []byte) {
	h.ServeRequest(ctx, path, configRequest{h, ctx})
}

// ServeRequest answers an admin request as Serve does, with r's ClientIP
// and WriteError (r must not be nil): the server passes what it knows of
// the request explicitly rather than having callbacks find it through
// ctx.
func (h *Handler) ServeRequest(ctx *fasthttp.RequestCtx, path []byte, r Request) {
	if h.serveDashboard(ctx, path) {
		return
	}
	if h.token != nil && subtle.ConstantTimeCompare(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), h.token) != 1 {
		r.WriteError(ctx, fasthttp.StatusUnauthorized, "unauthorized", "admin token required")
		// RFC 9110 §11.6.1: a 401 carries a challenge; RFC 6750 §3
		// names the scheme for a bearer token.
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="keystone-admin"`)
		return
	}
	if h.serveControl(ctx, string(path), r) {
		return
	}
	var body any
	switch string(path) {
	case "/health":
		body = h.health()
	case "/tenants":
		body = h.tenants()
	case "/stats":
		st, ok := h.stats()
		if !ok {
			r.WriteError(ctx, fasthttp.StatusNotFound, "not_found", "metrics are disabled")
			return
		}
		body = st
	default:
		r.WriteError(ctx, fasthttp.StatusNotFound, "not_found", "no such admin endpoint")
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		r.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "admin endpoints are read-only")
		// RFC 9110 §15.5.6: a 405 lists the methods that are allowed.
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
		return
	}
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		r.WriteError(ctx, fasthttp.StatusInternalServerError, "internal_error", "cannot encode admin response")
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(append(b, '\n'))
}

// Health is the /admin/health document.
type Health struct {
	Status        string         `json:"status"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Version       string         `json:"version"`
	Tenants       []TenantHealth `json:"tenants"`
	// LastReload is the latest reload attempt; absent before any.
	LastReload *LastReload `json:"last_reload,omitempty"`
}

// LastReload is the last_reload field of /admin/health.
type LastReload struct {
	Time       time.Time `json:"time"`
	Trigger    string    `json:"trigger"`
	Status     string    `json:"status"`
	Error      string    `json:"error,omitempty"`
	DurationMS float64   `json:"duration_ms"`
}

// TenantHealth is one tenant in /admin/health.
type TenantHealth struct {
	Name      string     `json:"name"`
	Status    string     `json:"status"`
	Available int        `json:"available"`
	Total     int        `json:"total"`
	Upstreams []Upstream `json:"upstreams"`
}

func (h *Handler) health() Health {
	doc := Health{
		Version:       h.src.Version(),
		UptimeSeconds: time.Since(h.src.Started()).Round(time.Millisecond).Seconds(),
		Tenants:       []TenantHealth{},
	}
	if h.ctl != nil {
		if r := h.ctl.LastReload(); r != nil {
			doc.LastReload = &LastReload{Time: r.Time, Trigger: r.Trigger, Status: r.Status, Error: r.Error, DurationMS: r.DurationMS}
		}
	}
	withUpstreams, down, notOK := 0, 0, 0
	for _, t := range h.src.Tenants() {
		th := TenantHealth{Name: t.Name, Upstreams: t.Upstreams, Total: len(t.Upstreams)}
		if th.Upstreams == nil {
			th.Upstreams = []Upstream{}
		}
		for _, u := range t.Upstreams {
			if u.Available {
				th.Available++
			}
		}
		th.Status = TenantStatus(th.Available, th.Total)
		if th.Total > 0 {
			withUpstreams++
		}
		switch th.Status {
		case StatusDown:
			down++
			notOK++
		case StatusDegraded:
			notOK++
		}
		doc.Tenants = append(doc.Tenants, th)
	}
	switch {
	case withUpstreams > 0 && down == withUpstreams:
		doc.Status = StatusDown
	case notOK > 0:
		doc.Status = StatusDegraded
	default:
		doc.Status = StatusOK
	}
	return doc
}

// TenantStatus is a tenant's status from its available and total upstream
// counts. A tenant without upstreams (served by its script) is ok.
func TenantStatus(available, total int) string {
	switch {
	case total == 0 || available == total:
		return StatusOK
	case available == 0:
		return StatusDown
	default:
		return StatusDegraded
	}
}

// tenants is the /admin/tenants document: a JSON array of tenants.
func (h *Handler) tenants() []Tenant {
	ts := h.src.Tenants()
	if ts == nil {
		ts = []Tenant{}
	}
	for i := range ts {
		if ts[i].Domains == nil {
			ts[i].Domains = []string{}
		}
		if ts[i].Upstreams == nil {
			ts[i].Upstreams = []Upstream{}
		}
	}
	return ts
}
