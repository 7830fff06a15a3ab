package config

import (
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// errorAt records a validation error about path, positioned where path (or
// its closest written parent) is in the file. It stays silent when path, a
// parent or a child of it failed to decode: that value holds a default, and
// a second error about it would only confuse.
func (d *decoder) errorAt(path, format string, args ...any) {
	if d.errs.full || d.derived(path) {
		return
	}
	p := lookupPos(d.pos, path)
	d.errs.add(p.line, p.col, path, format, args...)
}

// derived reports whether path is, contains or is inside a path that failed
// to decode.
func (d *decoder) derived(path string) bool {
	if d.badUnder[path] {
		return true
	}
	for p := path; p != ""; p = parentPath(p) {
		if d.bad[p] {
			return true
		}
	}
	return false
}

// pick returns the first of paths that was written in the file, or the
// first path: a cross-field error belongs on the field the user wrote.
func (d *decoder) pick(paths ...string) string {
	for _, p := range paths {
		if d.isSet(p) {
			return p
		}
	}
	return paths[0]
}

// validate checks the decoded config, normalizes the values it documents
// as normalized (lowercase domains, canonical upstream URLs) and parses
// Retries.On.
func validate(c *Config, d *decoder) {
	validateServer(&c.Server, d)
	validateAdmin(&c.Admin, d)
	validateLogging(&c.Logging, d)
	validateObserve(c, d)
	validateLua(&c.Lua, d)
	positive(d, "reload.debounce", c.Reload.Debounce)
	validateShared(&c.Shared, d)
	validateTenants(c, d)
}

func validateServer(s *Server, d *decoder) {
	if msg := checkListen(s.Listen); msg != "" {
		d.errorAt("server.listen", "%s", msg)
	}
	positive(d, "server.read_timeout", s.ReadTimeout)
	positive(d, "server.write_timeout", s.WriteTimeout)
	positive(d, "server.idle_timeout", s.IdleTimeout)
	positive(d, "server.header_timeout", s.HeaderTimeout)
	positive(d, "server.shutdown_grace", s.ShutdownGrace)
	if s.HeaderTimeout > 0 && s.HeaderTimeout > s.ReadTimeout && s.ReadTimeout > 0 {
		if d.pick("server.header_timeout", "server.read_timeout") == "server.header_timeout" {
			d.errorAt("server.header_timeout", "expected at most read_timeout (%s), got %s", s.ReadTimeout, s.HeaderTimeout)
		} else {
			d.errorAt("server.read_timeout", "expected at least header_timeout (%s), got %s", s.HeaderTimeout, s.ReadTimeout)
		}
	}
	positiveSize(d, "server.max_request_body", s.MaxRequestBody)
	positiveSize(d, "server.stream_request_body_over", s.StreamRequestBodyOver)
	positiveSize(d, "server.max_header_bytes", s.MaxHeaderBytes)
	positiveSize(d, "server.max_request_line", s.MaxRequestLine)
	if s.MaxRequestLine > 0 && s.MaxHeaderBytes > 0 && s.MaxRequestLine > s.MaxHeaderBytes {
		if d.pick("server.max_request_line", "server.max_header_bytes") == "server.max_request_line" {
			d.errorAt("server.max_request_line", "expected at most max_header_bytes (%s), got %s", s.MaxHeaderBytes, s.MaxRequestLine)
		} else {
			d.errorAt("server.max_header_bytes", "expected at least max_request_line (%s), got %s", s.MaxRequestLine, s.MaxHeaderBytes)
		}
	}
	if s.StreamRequestBodyOver > 0 && s.MaxRequestBody > 0 && s.StreamRequestBodyOver > s.MaxRequestBody {
		if d.pick("server.stream_request_body_over", "server.max_request_body") == "server.stream_request_body_over" {
			d.errorAt("server.stream_request_body_over", "expected at most max_request_body (%s), got %s", s.MaxRequestBody, s.StreamRequestBodyOver)
		} else {
			d.errorAt("server.max_request_body", "expected at least stream_request_body_over (%s), got %s", s.StreamRequestBodyOver, s.MaxRequestBody)
		}
	}
	between(d, "server.max_headers", s.MaxHeaders, 1, math.MaxInt32)
	between(d, "server.max_conns", s.MaxConns, 1, math.MaxInt32)
	between(d, "server.max_conns_per_ip", s.MaxConnsPerIP, 0, math.MaxInt32)
	for i, p := range s.TrustedProxies {
		if _, err := parseTrusted(p); err != nil {
			d.errorAt(fmt.Sprintf("server.trusted_proxies[%d]", i), "%s", err.Error())
		}
	}
	if !httpguts.ValidHeaderFieldName(s.RequestIDHeader) {
		d.errorAt("server.request_id_header", "expected a header name such as \"X-Request-ID\", got %q", clip(s.RequestIDHeader))
	}
	validateCompression(d, &s.Compression, "server.compression")
}

// TrustedNets returns TrustedProxies as prefixes, single addresses as /32
// or /128, host bits masked. Load has validated every entry.
func (s Server) TrustedNets() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s.TrustedProxies))
	for _, p := range s.TrustedProxies {
		if pfx, err := parseTrusted(p); err == nil {
			out = append(out, pfx)
		}
	}
	return out
}

// parseTrusted parses a CIDR or a single IP address into a masked prefix.
func parseTrusted(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("expected an IP address or a CIDR such as \"10.0.0.0/8\", got %q", clip(s))
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, bad
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, bad
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// checkListen validates a listen address: host:port, the host empty (all
// interfaces), an IP or a host name, the port 0..65535 (0 picks a free
// port, for tests).
func checkListen(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if allDigits(s) {
			return fmt.Sprintf("expected host:port such as \":8080\", got %q (did you mean \":%s\"?)", clip(s), s)
		}
		return fmt.Sprintf("expected host:port such as \":8080\", got %q", clip(s))
	}
	if n, err := strconv.Atoi(port); err != nil || !allDigits(port) || n > 65535 {
		return fmt.Sprintf("expected a port between 0 and 65535, got %q", clip(port))
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !validHostName(host, true) {
			return fmt.Sprintf("expected an IP address or host name to listen on, got %q", clip(host))
		}
	}
	return ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func validateAdmin(a *Admin, d *decoder) {
	if a.Prefix == "/" {
		d.errorAt("admin.prefix", "expected a path other than \"/\" such as \"/admin\", got \"/\"")
		return
	}
	if msg := checkPathPrefix(a.Prefix); msg != "" {
		d.errorAt("admin.prefix", "%s", msg)
	}
}

func validateLogging(l *Logging, d *decoder) {
	oneOf(d, "logging.level", l.Level, "debug", "info", "warn", "error")
	oneOf(d, "logging.format", l.Format, "json", "text")
	oneOf(d, "logging.output", l.Output, "stdout", "stderr")
	if f := l.AccessLogFile; f != "" {
		// Checked, not created: keystone check must not write files.
		if st, err := os.Stat(filepath.Dir(f)); err != nil || !st.IsDir() {
			d.errorAt("logging.access_log_file", "expected a file in an existing directory, got %q", clip(f))
		}
	}
}

func validateObserve(c *Config, d *decoder) {
	ratio(d, "logging.access_log_sample", c.Logging.AccessLogSample)
	ratio(d, "tracing.sample_ratio", c.Tracing.SampleRatio)
	positive(d, "tracing.export_interval", c.Tracing.ExportInterval)
	if ep := c.Tracing.OTLPEndpoint; ep != "" {
		if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorAt("tracing.otlp_endpoint", "expected an absolute http(s) URL such as \"http://collector:4318/v1/traces\", got %q", clip(ep))
		}
	}
	if p := c.Metrics.Path; p == "/" {
		d.errorAt("metrics.path", "expected a path other than \"/\" such as \"/metrics\", got \"/\"")
	} else if msg := checkPathPrefix(p); msg != "" {
		d.errorAt("metrics.path", "%s", msg)
	}
}

// ratio reports a share outside 0..1.
func ratio(d *decoder, p string, v float64) {
	if !(v >= 0 && v <= 1) {
		d.errorAt(p, "expected a ratio between 0 and 1, got %v", v)
	}
}

// Ranges of the lua: settings beyond "greater than zero". Validate
// enforces them on the file; luavm.Load checks the same ones on a
// luavm.Config built without a config file, so the two cannot disagree.
const (
	// MaxLuaPoolSize is the largest lua.pool_size.
	MaxLuaPoolSize = 1 << 16

	// MaxLuaRuntimeRoutes is the largest lua.max_runtime_routes.
	MaxLuaRuntimeRoutes = 1_000_000

	// LuaVMCost and LuaThreadCost are what lua.max_memory charges for
	// each VM and each request thread (one per in-flight request, plus
	// idle pooled ones). luavm's TestMemoryEstimates fails if either is
	// below the heap cost it measures.
	LuaVMCost     = 128 * KiB
	LuaThreadCost = 16 * KiB
)

// MinLuaMemory returns the smallest lua.max_memory that holds poolSize
// VMs and one request thread: with less, no script can load, since Load
// warms poolSize VMs and a request needs a thread.
func MinLuaMemory(poolSize int) Size {
	return Size(poolSize)*LuaVMCost + LuaThreadCost
}

func validateLua(l *Lua, d *decoder) {
	between(d, "lua.pool_size", l.PoolSize, 1, MaxLuaPoolSize)
	if l.MaxVMs < l.PoolSize && l.PoolSize >= 1 {
		if d.pick("lua.max_vms", "lua.pool_size") == "lua.max_vms" {
			d.errorAt("lua.max_vms", "expected at least pool_size (%d), got %d", l.PoolSize, l.MaxVMs)
		} else {
			d.errorAt("lua.pool_size", "expected at most max_vms (%d), got %d", l.MaxVMs, l.PoolSize)
		}
	}
	positive(d, "lua.max_execution", l.MaxExecution)
	between(d, "lua.call_stack_size", l.CallStackSize, 1, math.MaxInt32)
	between(d, "lua.registry_max_size", l.RegistryMaxSize, 1, math.MaxInt32)
	positiveSize(d, "lua.max_string_size", l.MaxStringSize)
	positiveSize(d, "lua.max_script_size", l.MaxScriptSize)
	between(d, "lua.max_runtime_routes", l.MaxRuntimeRoutes, 1, MaxLuaRuntimeRoutes)
	// 1MiB guards against a unit left out ("max_memory: 512" for 512MiB);
	// MinLuaMemory is what the pool needs, which luavm.Load checks too.
	if l.MaxMemory < MiB {
		d.errorAt("lua.max_memory", "expected at least 1MiB, got %s", l.MaxMemory)
	} else if l.PoolSize >= 1 && l.PoolSize <= MaxLuaPoolSize && l.MaxMemory < MinLuaMemory(l.PoolSize) {
		d.errorAt("lua.max_memory", "expected at least %s to hold pool_size (%d) VMs and one request thread, got %s",
			MinLuaMemory(l.PoolSize), l.PoolSize, l.MaxMemory)
	}
	positive(d, "lua.vm_wait", l.VMWait)
	positive(d, "lua.idle_vm_ttl", l.IdleVMTTL)
}

// tenantNameRE is the syntax of a tenant name: it appears in logs, metrics
// labels, admin URLs and keystone.Proxy(name), so it is kept plain.
var tenantNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// balancers are the accepted Tenant.Balancer values.
var balancers = []string{"round_robin", "weighted_round_robin", "least_conn", "random_two_choices"}

// claim is a (host, path prefix) pair a tenant answers for; "" host is any
// host, "" prefix any path.
type claim struct{ host, prefix string }

func validateTenants(c *Config, d *decoder) {
	if len(c.Tenants) == 0 {
		d.errorAt("tenants", "expected at least one tenant")
		return
	}
	names := make(map[string]int) // name -> index of the first tenant
	owners := make(map[claim]int) // claim -> index of the first tenant
	for i := range c.Tenants {
		t := &c.Tenants[i]
		tp := fmt.Sprintf("tenants[%d]", i)
		hosts, prefixOK := validateTenant(c, d, t, tp)

		if t.Name != "" && tenantNameRE.MatchString(t.Name) {
			if j, dup := names[t.Name]; dup {
				first := lookupPos(d.pos, fmt.Sprintf("tenants[%d].name", j))
				d.errorAt(tp+".name", "duplicate tenant name %q (first defined at line %d)", t.Name, first.line)
			} else {
				names[t.Name] = i
			}
		}

		// Two tenants answering the same host and prefix would make
		// routing depend on their order in the file. Invalid domains
		// and prefixes are reported already and left out.
		if !prefixOK {
			continue
		}
		if len(t.Domains) == 0 {
			hosts = []string{""}
		}
		reported := make(map[int]bool)
		for _, h := range hosts {
			k := claim{h, t.PathPrefix}
			j, taken := owners[k]
			if !taken {
				owners[k] = i
				continue
			}
			if j == i || reported[j] {
				continue // a duplicate domain, reported as such
			}
			reported[j] = true
			other := c.Tenants[j].Name
			prefix := t.PathPrefix
			if prefix == "" {
				prefix = "/"
			}
			switch {
			case h != "" && t.PathPrefix != "":
				d.errorAt(tp, "claims the same host %q and path_prefix %q as tenant %q (tenants[%d])", h, prefix, other, j)
			case h != "":
				d.errorAt(tp, "claims the same host %q (with no path_prefix) as tenant %q (tenants[%d])", h, other, j)
			default:
				d.errorAt(tp, "claims the same path_prefix %q (with no domains) as tenant %q (tenants[%d])", prefix, other, j)
			}
		}
	}
}

// validateTenant checks one tenant and normalizes its domains, path prefix,
// upstream URLs and script path. It returns the tenant's valid domains and
// whether its path prefix is valid, for the conflict check.
func validateTenant(c *Config, d *decoder, t *Tenant, tp string) (hosts []string, prefixOK bool) {
	switch {
	case !d.isSet(tp+".name") && t.Name == "":
		d.errorAt(tp, "missing required field \"name\"")
	case !tenantNameRE.MatchString(t.Name):
		d.errorAt(tp+".name", "expected a name of letters, digits, \"_\", \".\" and \"-\", starting with a letter or digit, at most 64 long, got %q", clip(t.Name))
	}

	seen := make(map[string]int)
	for j, dom := range t.Domains {
		dp := fmt.Sprintf("%s.domains[%d]", tp, j)
		norm, msg := checkDomain(dom)
		if msg != "" {
			d.errorAt(dp, "%s", msg)
			continue
		}
		t.Domains[j] = norm
		if k, dup := seen[norm]; dup {
			d.errorAt(dp, "duplicate domain %q (first at domains[%d])", norm, k)
			continue
		}
		seen[norm] = j
		hosts = append(hosts, norm)
	}

	hasPrefix := t.PathPrefix != ""
	prefixOK = true
	if hasPrefix {
		// A disabled admin API claims no path, so a tenant may use it.
		if msg := checkPathPrefix(t.PathPrefix); msg != "" {
			d.errorAt(tp+".path_prefix", "%s", msg)
			prefixOK = false
		} else if a := c.Admin; a.Enabled && a.Prefix != "" &&
			(t.PathPrefix == a.Prefix || strings.HasPrefix(t.PathPrefix, a.Prefix+"/")) {
			d.errorAt(tp+".path_prefix", "tenant cannot shadow the admin prefix %q", a.Prefix)
		} else if m := c.Metrics; m.Enabled && m.Path != "" && m.Path != "/" &&
			(t.PathPrefix == m.Path || strings.HasPrefix(t.PathPrefix, m.Path+"/")) {
			d.errorAt(tp+".path_prefix", "tenant cannot shadow the metrics path %q", m.Path)
		}
		// "/" matches every path, the same as no prefix; one spelling
		// keeps the router and the conflict check simple.
		if t.PathPrefix == "/" {
			t.PathPrefix = ""
		}
	}
	if len(t.Domains) == 0 && !hasPrefix {
		d.errorAt(tp, "expected domains or path_prefix (or both), got neither")
	}
	if t.StripPrefix && t.PathPrefix == "" && hasPrefix {
		d.errorAt(tp+".strip_prefix", "expected a path_prefix other than \"/\" to strip")
	} else if t.StripPrefix && !hasPrefix {
		d.errorAt(tp+".strip_prefix", "expected a path_prefix to strip, got none")
	}

	oneOf(d, tp+".balancer", t.Balancer, balancers...)

	urls := make(map[string]int)
	basePath, baseOf := "", -1 // the tenant's upstream base path, and whose it is
	for j := range t.Upstreams {
		u := &t.Upstreams[j]
		up := fmt.Sprintf("%s.upstreams[%d]", tp, j)
		canon, key, msg := checkUpstreamURL(u.URL)
		if msg != "" {
			if !d.isSet(up+".url") && u.URL == "" {
				d.errorAt(up, "missing required field \"url\"")
			} else {
				d.errorAt(up+".url", "%s", msg)
			}
		} else {
			u.URL = canon
			if k, dup := urls[key]; dup {
				d.errorAt(up+".url", "duplicate upstream %q (first at upstreams[%d])", canon, k)
			} else {
				urls[key] = j
			}
			// One base path per tenant, as nginx's proxy_pass has one
			// URI for its whole upstream group: a retry or the next
			// pick must not send the same request to another path.
			if bp := UpstreamBasePath(canon); baseOf < 0 {
				basePath, baseOf = bp, j
			} else if bp != basePath {
				d.errorAt(up+".url", "expected the base path of upstreams[%d] (%q), got %q", baseOf, basePath, bp)
			}
		}
		between(d, up+".weight", u.Weight, 1, 1000)
	}
	if len(t.Upstreams) == 0 && t.Script == "" && !d.derived(tp+".upstreams") {
		d.errorAt(tp, "tenant %q has neither upstreams nor a script", t.Name)
	}
	if t.Script != "" {
		checkScript(c, d, t, tp+".script")
	}

	positive(d, tp+".timeouts.connect", t.Timeouts.Connect)
	positive(d, tp+".timeouts.request", t.Timeouts.Request)
	between(d, tp+".pool.max_conns", t.Pool.MaxConns, 1, 100000)
	positive(d, tp+".pool.idle_timeout", t.Pool.IdleTimeout)
	positive(d, tp+".pool.max_conn_wait", t.Pool.MaxConnWait)
	positiveSize(d, tp+".max_response_body", t.MaxResponseBody)

	if h := t.HealthCheck; h != nil {
		validateHealthCheck(d, h, tp+".health_check")
	}
	if o := t.OutlierDetection; o != nil {
		p := tp + ".outlier_detection"
		between(d, p+".consecutive_failures", o.ConsecutiveFailures, 0, math.MaxInt32)
		positive(d, p+".backoff", o.Backoff)
		positive(d, p+".max_backoff", o.MaxBackoff)
		if o.Backoff > 0 && o.MaxBackoff > 0 && o.MaxBackoff < o.Backoff {
			if d.pick(p+".max_backoff", p+".backoff") == p+".max_backoff" {
				d.errorAt(p+".max_backoff", "expected at least backoff (%s), got %s", o.Backoff, o.MaxBackoff)
			} else {
				d.errorAt(p+".backoff", "expected at most max_backoff (%s), got %s", o.MaxBackoff, o.Backoff)
			}
		}
	}
	if b := t.CircuitBreaker; b != nil {
		p := tp + ".circuit_breaker"
		between(d, p+".failure_threshold", b.FailureThreshold, 1, math.MaxInt32)
		if !(b.FailureRatio > 0 && b.FailureRatio <= 1) {
			d.errorAt(p+".failure_ratio", "expected a ratio greater than 0 and at most 1, got %v", b.FailureRatio)
		}
		between(d, p+".min_requests", b.MinRequests, 1, math.MaxInt32)
		if b.Window < Duration(time.Second) {
			d.errorAt(p+".window", "expected a window of at least 1s, got %s", b.Window)
		}
		positive(d, p+".open_timeout", b.OpenTimeout)
		between(d, p+".half_open_max_requests", b.HalfOpenMaxRequests, 1, 100000)
	}
	validateRetries(d, &t.Retries, tp+".retries")
	validateAccess(d, t, tp)
	if t.Compression != nil {
		validateCompression(d, t.Compression, tp+".compression")
	}
	validateWebSocket(d, &t.WebSocket, t.UpgradeProtocols, tp)
	validateLimits(d, t, tp)
	return hosts, prefixOK
}

func validateHealthCheck(d *decoder, h *HealthCheck, p string) {
	if !validRequestPath(h.Path) {
		d.errorAt(p+".path", "expected a path such as \"/health\", got %q", clip(h.Path))
	}
	if h.Host != "" && !validHostPort(h.Host) {
		d.errorAt(p+".host", "expected a host name such as \"app.internal\" (with an optional port), got %q", clip(h.Host))
	}
	if h.Interval < Duration(time.Second) || h.Interval > Duration(120*time.Second) {
		d.errorAt(p+".interval", "expected an interval between 1s and 120s, got %s", h.Interval)
	}
	switch {
	case h.Timeout <= 0:
		d.errorAt(p+".timeout", "expected a duration greater than 0, got %s", h.Timeout)
	case h.Timeout >= h.Interval && h.Interval > 0:
		if d.pick(p+".timeout", p+".interval") == p+".timeout" {
			d.errorAt(p+".timeout", "expected less than interval (%s), got %s", h.Interval, h.Timeout)
		} else {
			d.errorAt(p+".interval", "expected more than timeout (%s), got %s", h.Timeout, h.Interval)
		}
	}
	between(d, p+".healthy_threshold", h.HealthyThreshold, 1, 100)
	between(d, p+".unhealthy_threshold", h.UnhealthyThreshold, 1, 100)
	if len(h.ExpectedStatus) == 0 {
		d.errorAt(p+".expected_status", "expected at least one status code or range, got none")
	}
}

// validateRetries checks a retry policy and parses On into Conditions.
func validateRetries(d *decoder, r *Retries, p string) {
	between(d, p+".attempts", r.Attempts, 0, 10)
	if !(r.BudgetRatio >= 0 && r.BudgetRatio <= 1) {
		d.errorAt(p+".budget_ratio", "expected a ratio between 0 and 1, got %v", r.BudgetRatio)
	}
	if r.Backoff < 0 {
		d.errorAt(p+".backoff", "expected a duration of at least 0, got %s", r.Backoff)
	}
	var on RetryOn
	seen := make(map[string]bool)
	for i, s := range r.On {
		ip := fmt.Sprintf("%s.on[%d]", p, i)
		if seen[s] {
			d.errorAt(ip, "duplicate retry condition %q", clip(s))
			continue
		}
		seen[s] = true
		switch {
		case s == "connect_error":
			on.ConnectError = true
		case s == "timeout":
			on.Timeout = true
		case allDigits(s) && len(s) == 3:
			code, _ := strconv.Atoi(s)
			if code < 500 || code > 599 {
				d.errorAt(ip, "expected a status code within 500..599, got %s", s)
				continue
			}
			on.Statuses = append(on.Statuses, code)
		default:
			msg := fmt.Sprintf("expected connect_error, timeout or a status code within 500..599, got %q", clip(s))
			if sug := Suggest(s, []string{"connect_error", "timeout"}); sug != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sug)
			}
			d.errorAt(ip, "%s", msg)
		}
	}
	r.Conditions = on
}

// checkScript validates a tenant's script path and that the script exists.
func checkScript(c *Config, d *decoder, t *Tenant, p string) {
	s := t.Script
	if !strings.HasPrefix(s, "/") && !strings.Contains(s, "\\") {
		// "./auth.lua" names the same file as "auth.lua"; fs.ValidPath
		// wants the second spelling.
		s = path.Clean(s)
	}
	if !fs.ValidPath(s) || s == "." || strings.Contains(s, "\\") {
		d.errorAt(p, "expected a path inside the scripts directory such as \"auth.lua\", got %q", clip(t.Script))
		return
	}
	if !strings.HasSuffix(s, ".lua") {
		d.errorAt(p, "expected a file name ending in \".lua\", got %q", clip(t.Script))
		return
	}
	t.Script = s
	if d.derived("lua.scripts_dir") || c.Scripts == nil {
		return
	}
	st, err := fs.Stat(c.Scripts, s)
	switch {
	case err != nil:
		d.errorAt(p, "script %q not found in %q", s, c.ScriptsDir)
	case st.IsDir():
		d.errorAt(p, "expected a script file, got directory %q in %q", s, c.ScriptsDir)
	}
}

// checkDomain validates a tenant domain and returns it normalized: host
// names lowercased, IP addresses in canonical form (IPv6 without brackets,
// as net.SplitHostPort returns a Host header's host).
func checkDomain(s string) (string, string) {
	lower := strings.ToLower(s)
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(lower, "["), "]")); err == nil && a.Zone() == "" {
		return a.String(), ""
	}
	switch {
	case lower == "":
		return "", "expected a host name such as \"api.example.com\", got \"\""
	case strings.Contains(lower, ":"):
		return "", fmt.Sprintf("expected a host name without a port, got %q", clip(s))
	case strings.HasSuffix(lower, "."):
		return "", fmt.Sprintf("expected a host name without a trailing \".\", got %q", clip(s))
	case lower == "*":
		return "", "expected a wildcard with a domain such as \"*.example.com\", got \"*\""
	}
	name := lower
	if strings.HasPrefix(lower, "*.") {
		name = lower[2:]
	}
	if strings.Contains(name, "*") {
		return "", fmt.Sprintf("expected \"*\" only as the whole first label, such as \"*.example.com\", got %q", clip(s))
	}
	if !validHostName(name, false) {
		return "", fmt.Sprintf("expected a host name of letters, digits, \"-\" and \".\" such as \"api.example.com\", got %q", clip(s))
	}
	return lower, ""
}

// validHostName reports whether s is a host name: dot-separated labels of
// 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen
// (RFC 1123), at most 253 long, the last label not all digits (that would
// be a mistyped IPv4 address). underscore admits "_" as well, which
// upstream names in Docker networks use.
func validHostName(s string, underscore bool) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' ||
				underscore && c == '_'
			if !ok {
				return false
			}
		}
	}
	return !allDigits(labels[len(labels)-1])
}

// validHostPort reports whether s is a host name or IP with an optional
// port, the syntax of a Host header.
func validHostPort(s string) bool {
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || !allDigits(p) || n < 1 || n > 65535 {
			return false
		}
		host = h
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return validHostName(host, true)
}

// validRequestPath reports whether s can be sent as the path (and query)
// of a request: it starts with "/", has no fragment, space or control
// character.
func validRequestPath(s string) bool {
	if !strings.HasPrefix(s, "/") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f || s[i] == '#' {
			return false
		}
	}
	return true
}

// checkPathPrefix validates a tenant's path_prefix or the admin prefix; it
// returns "" when s is valid. A prefix is compared to the cleaned request
// path segment by segment, so anything cleaning would change ("//", "..",
// a trailing "/", percent-escapes) could never match and is refused.
func checkPathPrefix(s string) string {
	if !strings.HasPrefix(s, "/") {
		return fmt.Sprintf("expected a path starting with \"/\", got %q", clip(s))
	}
	if s == "/" {
		return ""
	}
	if strings.ContainsAny(s, "?#") {
		return fmt.Sprintf("expected a path without a query or fragment, got %q", clip(s))
	}
	if strings.Contains(s, "%") {
		return fmt.Sprintf("expected a path without percent-encoding, got %q", clip(s))
	}
	for i := 0; i < len(s); i++ {
		if !isPathChar(s[i]) {
			return fmt.Sprintf("expected only RFC 3986 path characters, got %q in %q", string(rune(s[i])), clip(s))
		}
	}
	if strings.Contains(s, "//") {
		return fmt.Sprintf("expected a path without empty segments, got %q", clip(s))
	}
	for _, seg := range strings.Split(s[1:], "/") {
		if seg == "." || seg == ".." {
			return fmt.Sprintf("expected a path without \".\" or \"..\" segments, got %q", clip(s))
		}
	}
	if strings.HasSuffix(s, "/") {
		return fmt.Sprintf("expected a path without a trailing \"/\", got %q (did you mean %q?)", clip(s), strings.TrimSuffix(s, "/"))
	}
	return ""
}

// isPathChar reports whether c may appear in a path: "/" or an RFC 3986
// pchar other than a percent-escape (unreserved, sub-delims, ":" and "@").
func isPathChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("/-._~!$&'()*+,;=:@", c) >= 0
}

// checkUpstreamURL validates an upstream URL. It returns the URL in
// canonical form (lowercase scheme and host, base path without a trailing
// "/") and a key
// that also spells out the default port, so that "http://a" and
// "http://a:80" count as duplicates.
func checkUpstreamURL(s string) (canon, key, msg string) {
	bad := fmt.Sprintf("expected absolute http(s) URL, got %q", clip(s))
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", bad
	}
	if u.User != nil {
		return "", "", fmt.Sprintf("expected a URL without user info, got %q", clip(u.Redacted()))
	}
	// An optional base path, as nginx's proxy_pass with a URI: request
	// paths are joined under it. The same rules as path_prefix (no
	// percent-encoding, empty, "." or ".." segments), so the join never
	// needs to normalize; a trailing "/" is dropped.
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	if base != "" {
		if msg := checkPathPrefix(base); msg != "" {
			return "", "", "base path: " + msg
		}
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return "", "", fmt.Sprintf("expected a URL without a query or fragment, got %q", clip(s))
	}
	host, port := u.Hostname(), u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return "", "", fmt.Sprintf("expected a port after \":\", got %q", clip(s))
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Sprintf("expected a port between 1 and 65535, got %q", clip(s))
		}
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostName(host, true) {
		return "", "", fmt.Sprintf("expected a host name or IP address, got %q", clip(s))
	}
	canon = u.Scheme + "://" + strings.ToLower(u.Host)
	key = canon
	if port == "" {
		if u.Scheme == "https" {
			key += ":443"
		} else {
			key += ":80"
		}
	}
	return canon + base, key + base, ""
}

// oneOf reports an error unless v is one of allowed, suggesting the
// closest allowed value.
func oneOf(d *decoder, p, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	if d.errs.full {
		return
	}
	msg := fmt.Sprintf("expected %s, got %q", orList(allowed), clip(v))
	if s := Suggest(v, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.errorAt(p, "%s", msg)
}

// orList renders "a, b or c".
func orList(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// positive reports a duration that is not greater than zero.
func positive(d *decoder, p string, v Duration) {
	if v <= 0 {
		d.errorAt(p, "expected a duration greater than 0, got %s", v)
	}
}

// positiveSize reports a size that is not greater than zero.
func positiveSize(d *decoder, p string, v Size) {
	if v <= 0 {
		d.errorAt(p, "expected a size greater than 0, got %s", v)
	}
}

// between reports an integer outside lo..hi.
func between(d *decoder, p string, v, lo, hi int) {
	switch {
	case v >= lo && v <= hi:
	case hi == math.MaxInt32 && v < lo:
		d.errorAt(p, "expected at least %d, got %d", lo, v)
	default:
		d.errorAt(p, "expected a value between %d and %d, got %d", lo, hi, v)
	}
}

// UpstreamBasePath returns the base path of a canonical upstream URL ("/v2"
// of "http://svc:8080/v2"), or "" when it has none.
func UpstreamBasePath(canon string) string {
	rest := canon[strings.Index(canon, "://")+3:]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return ""
}
