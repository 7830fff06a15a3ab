// Package observe owns Keystone's metrics: the counters and histograms the
// request path writes, kept in a Registry that outlives config snapshots,
// and their Prometheus text exposition. It also parses and formats W3C
// Trace Context headers (trace.go).
//
// The request path never looks a metric up by its labels: a snapshot
// resolves each tenant's *RouteStats, each upstream's *UpstreamStats and
// each tenant's *TenantStats once, when it is built, and a request adds to
// them with atomics only. Every counter set is sharded (see Shard), so
// requests on different cores do not all write one cache line.
//
//	reg := observe.New(observe.Config{Version: "1.0"})
//	route := reg.Route("api", "/api")             // at snapshot build
//	route.Observe(shard, method, 200, d, in, out) // per request
//	reg.WritePrometheus(w)                        // per scrape
package observe

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// Config configures a Registry.
type Config struct {
	// Version is exposed as keystone_build_info's version label. If
	// empty, "dev".
	Version string

	// ProcessMetrics adds the Go runtime and process metrics (go_*,
	// process_*) to the exposition.
	ProcessMetrics bool
}

// Registry holds every counter set by key (tenant and route, tenant and
// upstream URL, tenant), so a snapshot built after a config change finds
// the counters of the previous one. Its methods are safe for concurrent
// use; the lookups take a mutex and are meant for snapshot builds and
// scrapes, never for the request path.
type Registry struct {
	cfg Config
	set *vm.Set // build info, config load state

	mu         sync.Mutex
	routes     map[[2]string]*RouteStats
	upstreams  map[[2]string]*UpstreamStats
	tenants    map[string]*TenantStats
	scripts    map[string]string // tenant → script name
	collectors []func(*Emitter)

	loadOK, loadTime float64 // guarded by mu
}

// New returns an empty Registry.
func New(cfg Config) *Registry {
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	r := &Registry{
		cfg:       cfg,
		set:       vm.NewSet(),
		routes:    make(map[[2]string]*RouteStats),
		upstreams: make(map[[2]string]*UpstreamStats),
		tenants:   make(map[string]*TenantStats),
		scripts:   make(map[string]string),
	}
	r.set.NewGauge(fmt.Sprintf(`keystone_build_info{version=%s,goversion=%s}`,
		quote(cfg.Version), quote(runtime.Version())), func() float64 { return 1 })
	r.set.NewGauge(`keystone_config_last_reload_success`, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.loadOK
	})
	r.set.NewGauge(`keystone_config_last_reload_timestamp_seconds`, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.loadTime
	})
	return r
}

// ConfigFailed records a config that was refused: the success gauge drops
// to 0 and the timestamp keeps the last successful load, as Prometheus'
// own prometheus_config_last_reload_* gauges do.
func (r *Registry) ConfigFailed() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loadOK = 0
}

// ConfigLoaded records the outcome of loading the config at t.
func (r *Registry) ConfigLoaded(ok bool, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loadOK = 0
	if ok {
		r.loadOK = 1
	}
	r.loadTime = float64(t.UnixNano()) / 1e9
}

// Route returns the counters of one tenant route, creating them once. A
// nil Registry returns nil, which counts nothing; so do Upstream and Tenant.
func (r *Registry) Route(tenant, route string) *RouteStats {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := [2]string{tenant, route}
	rs, ok := r.routes[k]
	if !ok {
		rs = &RouteStats{tenant: tenant, route: route, shards: make([]requestShard, numShards)}
		r.routes[k] = rs
	}
	return rs
}

// Upstream returns the counters of a tenant's attempts to the upstream at
// url, creating them once.
func (r *Registry) Upstream(tenant, url string) *UpstreamStats {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := [2]string{tenant, url}
	us, ok := r.upstreams[k]
	if !ok {
		us = &UpstreamStats{tenant: tenant, url: url, shards: make([]upstreamShard, numShards)}
		r.upstreams[k] = us
	}
	return us
}

// Tenant returns the per-tenant counters, creating them once. script names
// the tenant's Lua script ("" for none); it labels the Lua metrics.
func (r *Registry) Tenant(name, script string) *TenantStats {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tenants[name]
	if !ok {
		t = &TenantStats{name: name, script: &ScriptStats{shards: make([]scriptShard, numShards)}}
		r.tenants[name] = t
	}
	r.scripts[name] = script
	return t
}

// Collect adds f to what every scrape writes: gauges that read live state
// (upstream health, breaker state, pool sizes) at scrape time.
func (r *Registry) Collect(f func(*Emitter)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, f)
}

// WritePrometheus writes every metric in the Prometheus text exposition
// format, families together, series sorted by labels.
func (r *Registry) WritePrometheus(w io.Writer) {
	r.set.WritePrometheus(w)
	r.mu.Lock()
	routes := slices.SortedFunc(maps.Values(r.routes), func(a, b *RouteStats) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(a.route, b.route))
	})
	ups := slices.SortedFunc(maps.Values(r.upstreams), func(a, b *UpstreamStats) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(a.url, b.url))
	})
	tenants := slices.SortedFunc(maps.Values(r.tenants), func(a, b *TenantStats) int { return cmp.Compare(a.name, b.name) })
	scripts := maps.Clone(r.scripts)
	collectors := slices.Clone(r.collectors)
	r.mu.Unlock()

	e := &Emitter{w: w}
	// Requests by tenant, route, method and code: only the series seen.
	for _, rs := range routes {
		var counts [numMethods][codeSlots]uint64
		for i := range rs.shards {
			for m := range counts {
				for c := range counts[m] {
					counts[m][c] += rs.shards[i].counts[m][c].Load()
				}
			}
		}
		for m := range counts {
			for c, n := range counts[m] {
				if n > 0 {
					e.Counter("keystone_http_requests_total", n,
						"tenant", rs.tenant, "route", rs.route, "method", methodNames[m], "code", codeNames[c])
				}
			}
		}
	}
	for _, rs := range routes {
		var h HistSnapshot
		for i := range rs.shards {
			h.add(&rs.shards[i].dur)
		}
		e.Histogram("keystone_http_request_duration_seconds", &h, "tenant", rs.tenant, "route", rs.route)
	}
	for _, name := range [...]string{"keystone_http_request_bytes_total", "keystone_http_response_bytes_total"} {
		for _, rs := range routes {
			var n uint64
			for i := range rs.shards {
				if name == "keystone_http_request_bytes_total" {
					n += rs.shards[i].bytesIn.Load()
				} else {
					n += rs.shards[i].bytesOut.Load()
				}
			}
			e.Counter(name, n, "tenant", rs.tenant, "route", rs.route)
		}
	}
	for _, us := range ups {
		var counts [upstreamSlots]uint64
		for i := range us.shards {
			for c := range counts {
				counts[c] += us.shards[i].counts[c].Load()
			}
		}
		for c, n := range counts {
			if n > 0 {
				e.Counter("keystone_upstream_requests_total", n, "tenant", us.tenant, "upstream", us.url, "code", codeNames[c])
			}
		}
	}
	for _, us := range ups {
		var h HistSnapshot
		for i := range us.shards {
			h.add(&us.shards[i].dur)
		}
		e.Histogram("keystone_upstream_duration_seconds", &h, "tenant", us.tenant, "upstream", us.url)
	}
	for _, t := range tenants {
		e.Counter("keystone_retries_total", t.retries.Load(), "tenant", t.name)
	}
	for _, t := range tenants {
		if s := scripts[t.name]; s != "" {
			var h HistSnapshot
			for i := range t.script.shards {
				h.add(&t.script.shards[i].dur)
			}
			e.Histogram("keystone_lua_duration_seconds", &h, "tenant", t.name, "script", s)
		}
	}
	for _, t := range tenants {
		if s := scripts[t.name]; s != "" {
			for k, name := range luaErrorNames {
				e.Counter("keystone_lua_errors_total", t.script.errors[k].Load(), "tenant", t.name, "script", s, "kind", name)
			}
		}
	}
	for _, f := range collectors {
		f(e)
	}
	if r.cfg.ProcessMetrics {
		vm.WriteProcessMetrics(w)
	}
}

// TenantSummary is one tenant's requests summed over its routes, for the
// admin dashboard. Every field is cumulative since the process started.
type TenantSummary struct {
	Tenant string
	// Requests counts every request; ClientErrors those answered 4xx,
	// ServerErrors those answered 5xx.
	Requests, ClientErrors, ServerErrors uint64
	// Duration is the request duration histogram (buckets of Bounds).
	Duration HistSnapshot
}

// Summaries returns every tenant's summary, sorted by tenant name.
func (r *Registry) Summaries() []TenantSummary {
	r.mu.Lock()
	routes := slices.Collect(maps.Values(r.routes))
	r.mu.Unlock()
	by := map[string]*TenantSummary{}
	for _, rs := range routes {
		s := by[rs.tenant]
		if s == nil {
			s = &TenantSummary{Tenant: rs.tenant}
			by[rs.tenant] = s
		}
		for i := range rs.shards {
			sh := &rs.shards[i]
			for m := range sh.counts {
				for c := range sh.counts[m] {
					n := sh.counts[m][c].Load()
					s.Requests += n
					switch name := codeNames[c]; {
					case strings.HasPrefix(name, "4"):
						s.ClientErrors += n
					case strings.HasPrefix(name, "5"):
						s.ServerErrors += n
					}
				}
			}
			s.Duration.add(&sh.dur)
		}
	}
	out := make([]TenantSummary, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b TenantSummary) int { return cmp.Compare(a.Tenant, b.Tenant) })
	return out
}

// Emitter writes series in the Prometheus text format. Label arguments
// come in name, value pairs; values are escaped. A family's series must be
// written one after another: its "# TYPE" line goes before the first.
type Emitter struct {
	w      io.Writer
	buf    strings.Builder
	family string // the family written last
}

// typeLine writes the family's "# TYPE" line when it starts.
func (e *Emitter) typeLine(metric, typ string) {
	if metric != e.family {
		e.family = metric
		fmt.Fprintf(e.w, "# TYPE %s %s\n", metric, typ)
	}
}

func (e *Emitter) name(metric string, labels []string, extra ...string) string {
	e.buf.Reset()
	e.buf.WriteString(metric)
	all := append(slices.Clip(labels), extra...)
	if len(all) >= 2 {
		e.buf.WriteByte('{')
		for i := 0; i+1 < len(all); i += 2 {
			if i > 0 {
				e.buf.WriteByte(',')
			}
			e.buf.WriteString(all[i])
			e.buf.WriteByte('=')
			e.buf.WriteString(quote(all[i+1]))
		}
		e.buf.WriteByte('}')
	}
	return e.buf.String()
}

// Counter writes one counter sample.
func (e *Emitter) Counter(metric string, v uint64, labels ...string) {
	e.typeLine(metric, "counter")
	vm.WriteCounterUint64(e.w, e.name(metric, labels), v)
}

// CounterFloat writes one counter sample whose value is not whole
// (seconds spent, say).
func (e *Emitter) CounterFloat(metric string, v float64, labels ...string) {
	e.typeLine(metric, "counter")
	vm.WriteCounterFloat64(e.w, e.name(metric, labels), v)
}

// Gauge writes one gauge sample.
func (e *Emitter) Gauge(metric string, v float64, labels ...string) {
	e.typeLine(metric, "gauge")
	vm.WriteGaugeFloat64(e.w, e.name(metric, labels), v)
}

// Histogram writes a histogram's cumulative le buckets, sum and count.
func (e *Emitter) Histogram(metric string, h *HistSnapshot, labels ...string) {
	e.typeLine(metric, "histogram")
	var cum uint64
	for i, n := range h.Buckets {
		cum += n
		le := "+Inf"
		if i < len(Bounds) {
			le = formatFloat(Bounds[i])
		}
		fmt.Fprintf(e.w, "%s %d\n", e.name(metric+"_bucket", labels, "le", le), cum)
	}
	fmt.Fprintf(e.w, "%s %s\n", e.name(metric+"_sum", labels), formatFloat(h.Sum.Seconds()))
	fmt.Fprintf(e.w, "%s %d\n", e.name(metric+"_count", labels), h.Count)
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return fmt.Sprint(f)
}

// quote renders a label value: double-quoted with backslash, quote and
// newline escaped, as the text format requires.
func quote(v string) string {
	var b strings.Builder
	b.Grow(len(v) + 2)
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Quantile estimates the q-quantile (0..1) of h by linear interpolation
// inside the bucket it falls in, as Prometheus' histogram_quantile does. It
// returns 0 for an empty histogram and the last finite bound when the
// quantile lies in the +Inf bucket.
func (h *HistSnapshot) Quantile(q float64) float64 {
	if h.Count == 0 {
		return 0
	}
	rank := q * float64(h.Count)
	var cum float64
	for i, n := range h.Buckets {
		prev := cum
		cum += float64(n)
		if cum >= rank && n > 0 {
			if i == len(Bounds) {
				return Bounds[len(Bounds)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = Bounds[i-1]
			}
			return lo + (Bounds[i]-lo)*(rank-prev)/float64(n)
		}
	}
	return Bounds[len(Bounds)-1]
}
