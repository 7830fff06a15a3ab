package admin

import (
	_ "embed"

	"github.com/valyala/fasthttp"
)

// dashboardHTML is the admin dashboard: one page with its script and
// styles inline, no external resources, that polls the JSON endpoints.
//
//go:embed dashboard.html
var dashboardHTML []byte

// StatsSource is a Source that also counts requests; the server's does
// while metrics are enabled. The /stats endpoint answers 404 for a Source
// that does not.
type StatsSource interface {
	// Stats returns each tenant's request counters, cumulative since the
	// process started, or false when nothing is counted. The result is
	// owned by the caller.
	Stats() (Stats, bool)
}

// TenantStats is one tenant's requests in /admin/stats. The counts are
// cumulative: a client takes the difference of two polls for a rate.
type TenantStats struct {
	Name         string `json:"name"`
	Requests     uint64 `json:"requests"`
	ClientErrors uint64 `json:"client_errors"` // answered 4xx
	ServerErrors uint64 `json:"server_errors"` // answered 5xx
	// DurationBuckets counts requests by duration: one count per bound of
	// Stats.BoundsSeconds (at most that bound, more than the previous
	// one) and a last one beyond the last bound. Not cumulative.
	DurationBuckets []uint64 `json:"duration_buckets"`
	// DurationSumSeconds is the sum of the request durations.
	DurationSumSeconds float64 `json:"duration_sum_seconds"`
}

// Stats is the /admin/stats document.
type Stats struct {
	// BoundsSeconds are the upper bounds of the duration buckets.
	BoundsSeconds []float64     `json:"bounds_seconds"`
	Tenants       []TenantStats `json:"tenants"`
}

// stats is the /admin/stats document, or nil when the source counts
// nothing.
func (h *Handler) stats() (Stats, bool) {
	ss, ok := h.src.(StatsSource)
	if !ok {
		return Stats{}, false
	}
	st, ok := ss.Stats()
	if st.Tenants == nil {
		st.Tenants = []TenantStats{}
	}
	return st, ok
}

// serveDashboard answers GET <prefix>/ (and <prefix>) with the dashboard
// page and reports whether it did. The page holds no data, so it is served
// without the token: its requests to the JSON endpoints carry the token the
// operator types in, and those are guarded as always.
func (h *Handler) serveDashboard(ctx *fasthttp.RequestCtx, path []byte) bool {
	if len(path) > 1 || (len(path) == 1 && path[0] != '/') {
		return false
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	// Everything the page needs is inline; nothing else may load.
	ctx.Response.Header.Set("Content-Security-Policy",
		"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.SetBody(dashboardHTML)
	return true
}
