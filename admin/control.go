package admin

import (
	"encoding/json"
	"io"
	"time"

	"github.com/valyala/fasthttp"
)

// Control is what the admin endpoints that change or list the running
// gateway act on, beyond the read-only Source:
//
//	POST /admin/reload             reload the config and scripts from disk
//	GET  /admin/reloads            the last reloads, newest first
//	GET  /admin/routes             every tenant's routes
//	POST /admin/upstreams/drain    take an upstream out of rotation ({"tenant","url"})
//	POST /admin/upstreams/enable   put it back
//
// Without a Control (Config.Control nil) those paths answer 404.
type Control interface {
	// Reload reloads the config and scripts; by names who asked (client
	// IP, token id). It returns the record of the attempt, which says
	// whether it was applied.
	Reload(trigger string, by Caller) Reload
	// Reloads returns up to the last 50 reload records, newest first.
	Reloads() []Reload
	// LastReload returns the latest reload record, nil before any.
	LastReload() *Reload
	// Routes returns every tenant's routes.
	Routes() []Route
	// SetDraining drains (true) or enables (false) a tenant's upstream.
	SetDraining(tenant, url string, drain bool, by Caller) error
}

// Caller identifies who called an admin endpoint, for the audit log.
type Caller struct {
	// IP is the client IP (trusted proxies applied).
	IP string
	// Token names the admin token used ("admin" when one is configured
	// and matched), "" when admin has no token.
	Token string
}

// Reload is the record of one reload attempt (GET /admin/reloads, and
// last_reload in /admin/health).
type Reload struct {
	Time    time.Time `json:"time"`
	Trigger string    `json:"trigger"` // signal, admin, watch, api
	// Status is "ok" (the new config serves) or "error" (refused whole;
	// the previous one keeps serving).
	Status     string  `json:"status"`
	Error      string  `json:"error,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	// Tenants added, removed and changed (config or script) by the reload.
	TenantsAdded   []string `json:"tenants_added"`
	TenantsRemoved []string `json:"tenants_removed"`
	TenantsChanged []string `json:"tenants_changed"`
	// NeedsRestart lists the config keys whose new values differ but
	// cannot be applied to a running server (server.listen, …); the old
	// values stay in force until a restart.
	NeedsRestart []string `json:"needs_restart"`
	// RuntimeRoutesDropped counts the routes scripts added at run time
	// (keystone.AddRoute) that the reload dropped: those of tenants whose
	// script changed.
	RuntimeRoutesDropped int `json:"runtime_routes_dropped"`
}

// Route is one route of a tenant (GET /admin/routes).
type Route struct {
	Tenant  string `json:"tenant"`
	Method  string `json:"method"`
	Pattern string `json:"pattern"`
	// Source is FILE:LINE of the script line that defined it; empty for a
	// tenant without a script (its catch-all proxy route).
	Source string `json:"source,omitempty"`
	// Kind is "static" (defined when the script loaded) or "runtime"
	// (keystone.AddRoute).
	Kind string `json:"kind"`
}

// upstreamRef is the body of the drain and enable endpoints.
type upstreamRef struct {
	Tenant string `json:"tenant"`
	URL    string `json:"url"`
}

// serveControl answers the Control endpoints and reports whether path is
// one of them.
func (h *Handler) serveControl(ctx *fasthttp.RequestCtx, path string, req Request) bool {
	if h.ctl == nil {
		return false
	}
	switch path {
	case "/reload":
		if !h.method(ctx, req, "POST") {
			return true
		}
		r := h.ctl.Reload("admin", h.caller(req))
		status := fasthttp.StatusOK
		if r.Status != "ok" {
			// The request was fine; the config on disk was not.
			status = fasthttp.StatusUnprocessableEntity
		}
		h.writeJSON(ctx, req, status, r)
	case "/reloads":
		if !h.method(ctx, req, "GET") {
			return true
		}
		rs := h.ctl.Reloads()
		if rs == nil {
			rs = []Reload{}
		}
		h.writeJSON(ctx, req, fasthttp.StatusOK, rs)
	case "/routes":
		if !h.method(ctx, req, "GET") {
			return true
		}
		rs := h.ctl.Routes()
		if rs == nil {
			rs = []Route{}
		}
		h.writeJSON(ctx, req, fasthttp.StatusOK, rs)
	case "/upstreams/drain", "/upstreams/enable":
		if !h.method(ctx, req, "POST") {
			return true
		}
		var ref upstreamRef
		if err := json.Unmarshal(requestBody(ctx), &ref); err != nil || ref.Tenant == "" || ref.URL == "" {
			req.WriteError(ctx, fasthttp.StatusBadRequest, "bad_request", `expected a JSON body {"tenant": "...", "url": "..."}`)
			return true
		}
		drain := path == "/upstreams/drain"
		if err := h.ctl.SetDraining(ref.Tenant, ref.URL, drain, h.caller(req)); err != nil {
			req.WriteError(ctx, fasthttp.StatusNotFound, "not_found", err.Error())
			return true
		}
		h.writeJSON(ctx, req, fasthttp.StatusOK, map[string]any{"tenant": ref.Tenant, "url": ref.URL, "draining": drain})
	default:
		return false
	}
	return true
}

// maxControlBody bounds the JSON body of a control endpoint.
const maxControlBody = 64 << 10

// requestBody returns the request body, up to maxControlBody bytes (the
// server may hand it over as a stream).
func requestBody(ctx *fasthttp.RequestCtx) []byte {
	if s := ctx.RequestBodyStream(); s != nil {
		b, _ := io.ReadAll(io.LimitReader(s, maxControlBody))
		return b
	}
	return ctx.PostBody()
}

// method answers 405 unless the request uses want (GET also allows HEAD)
// and reports whether it does.
func (h *Handler) method(ctx *fasthttp.RequestCtx, req Request, want string) bool {
	m := string(ctx.Method())
	if m == want || (want == "GET" && m == "HEAD") {
		return true
	}
	req.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "use "+want)
	allow := want
	if want == "GET" {
		allow = "GET, HEAD"
	}
	ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	return false
}

// caller names who sent the request.
func (h *Handler) caller(req Request) Caller {
	c := Caller{IP: req.ClientIP()}
	if h.token != nil {
		c.Token = "admin"
	}
	return c
}

func (h *Handler) writeJSON(ctx *fasthttp.RequestCtx, req Request, status int, body any) {
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		req.WriteError(ctx, fasthttp.StatusInternalServerError, "internal_error", "cannot encode admin response")
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(append(b, '\n'))
}
