package server

import (
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/auth"
	"github.com/keystone-gateway/keystone/balancer"
	"github.com/keystone-gateway/keystone/breaker"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
	"github.com/keystone-gateway/keystone/observe"
	"github.com/valyala/fasthttp"
)

// snapshot is everything a request needs, built from one config and
// immutable once published: the pipeline loads it once per request
// (Server.snap) so a request never sees half a reload.
type snapshot struct {
	cfg         *config.Config
	index       *index[*tenant]
	tenants     []*tenant
	byName      map[string]*tenant
	trusted     trustedProxies
	reqIDHeader []byte // canonical form

	adminEnabled bool
	adminPrefix  []byte
	admin        *admin.Handler

	maxBody        int64
	maxRequestLine int
	maxHeaderBytes int
	maxHeaders     int
	readTimeout    time.Duration // server.read_timeout, once the headers are in

	obs observeSnapshot // metrics, tracing, access log sampling
	// edge is the server.tls policy; nil without server.tls (tls.go).
	edge *edgePolicy

	// checkers are the health checkers of the snapshot's upstreams,
	// registry entries started by start (a checker an older snapshot
	// started already goes on).
	checkers []*balancer.Checker
	// pools are the tenants' pools. Their upstreams are registry
	// entries, closed when no snapshot holds them.
	pools []*pool
	// reg is the registry the snapshot's entries come from; held lists
	// the keys it holds one reference to each, released by close.
	reg  *registry
	held []string
	// life counts the requests running on the snapshot and tells a
	// reload when the last one finished (reload.go).
	life snapLife
	// scriptPools are the pools keystone.Proxy("http://…") made for
	// scripts, at load or at request time, closed with the snapshot.
	scriptPools scriptPools
}

// maxLateProxyPools bounds the pools a snapshot makes for keystone.Proxy
// URLs first seen at request time: each holds a connection pool, and a
// script building URLs from requests would otherwise leak one per
// distinct URL.
const maxLateProxyPools = 64

// scriptPools holds the pools of keystone.Proxy URL targets, one per
// calling tenant and URL. Scripts call keystone.Proxy from request
// goroutines too (a URL first seen inside a handler), so the map is behind
// a mutex, taken once per VM and target: luavm keeps the handler it gets.
type scriptPools struct {
	mu     sync.Mutex
	byKey  map[scriptPoolKey]*pool
	late   int  // pools made after sealing
	sealed bool // set when the snapshot's scripts are loaded
	closed bool // set by snapshot.close: no pool is made after it
}

type scriptPoolKey struct{ tenant, url string }

// get returns the pool for key, building it with build the first time.
func (sp *scriptPools) get(key scriptPoolKey, build func() (*pool, error)) (*pool, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if p, ok := sp.byKey[key]; ok {
		return p, nil
	}
	if sp.closed {
		return nil, errors.New("the gateway is shutting down")
	}
	if sp.sealed && sp.late >= maxLateProxyPools {
		return nil, fmt.Errorf("more than %d upstream URLs first seen at request time; call keystone.Proxy with each URL when the script loads", maxLateProxyPools)
	}
	p, err := build()
	if err != nil {
		return nil, err
	}
	if sp.byKey == nil {
		sp.byKey = make(map[scriptPoolKey]*pool)
	}
	sp.byKey[key] = p
	if sp.sealed {
		sp.late++
	}
	return p, nil
}

// seal marks the end of script loading: later pools count toward
// maxLateProxyPools.
func (sp *scriptPools) seal() {
	sp.mu.Lock()
	sp.sealed = true
	sp.mu.Unlock()
}

// count returns the number of pools made after sealing.
func (sp *scriptPools) count() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.late
}

// close closes the idle connections of every pool and refuses new ones.
func (sp *scriptPools) close() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.closed = true
	for _, p := range sp.byKey {
		p.closeIdle()
	}
}

// tenant is one tenant of a snapshot.
type tenant struct {
	cfg    *config.Tenant
	pool   *pool
	script *luavm.Script
	// scriptSum hashes the script's folder when it was loaded (reload
	// tells a changed script from an unchanged one); nil without one.
	scriptSum []byte
	// runtime holds the routes the script added at run time; carried
	// from the running snapshot when the script is unchanged.
	runtime *luavm.RuntimeRoutes
	// serve handles a request matched to the tenant: the script's router
	// (runScript, which falls back to the pool) or the pool itself
	// (pool.forward).
	serve func(ctx *fasthttp.RequestCtx, rs *reqState)
	// route and stats are the tenant's counters (nil: metrics off).
	route *observe.RouteStats
	stats *observe.TenantStats
	// access is the tenant's auth, ip, cors and headers policy; nil when
	// it has none (access.go).
	access *auth.Policy
	// compress is the compression stage run after serve; nil when off.
	compress *compressor
	// limits are the tenant's rate_limits and max_conns_per_key, run
	// around serve; nil when it has none (ratelimit.go).
	limits *tenantLimits
}

// build compiles cfg into a snapshot: tenant index, upstream pools, breakers,
// health checkers (not started) and scripts. It fails without side effects
// left running: the caller closes a snapshot only after it was built.
func (s *Server) build(cfg *config.Config) (_ *snapshot, err error) {
	snap := &snapshot{
		cfg:            cfg,
		byName:         make(map[string]*tenant, len(cfg.Tenants)),
		reqIDHeader:    []byte(textproto.CanonicalMIMEHeaderKey(cfg.Server.RequestIDHeader)),
		adminEnabled:   cfg.Admin.Enabled,
		adminPrefix:    []byte(cfg.Admin.Prefix),
		maxBody:        int64(cfg.Server.MaxRequestBody),
		maxRequestLine: int(cfg.Server.MaxRequestLine),
		maxHeaderBytes: int(cfg.Server.MaxHeaderBytes),
		maxHeaders:     cfg.Server.MaxHeaders,
		readTimeout:    cfg.Server.ReadTimeout.D(),
		reg:            s.reg,
	}
	snap.trusted = trustedProxies(cfg.Server.TrustedNets())
	snap.edge = newEdgePolicy(cfg)
	snap.admin = s.newAdmin(cfg.Admin.Token)
	snap.obs = s.observeSettings(cfg)
	defer func() {
		if err != nil {
			snap.close()
		}
	}()

	routes := make([]route[*tenant], 0, len(cfg.Tenants))
	for i := range cfg.Tenants {
		tc := &cfg.Tenants[i]
		p, err := s.newPool(snap, tc, s.reg)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.Name, err)
		}
		snap.pools = append(snap.pools, p)
		t := &tenant{cfg: tc, pool: p, serve: p.forward, compress: newCompressor(cfg.CompressionFor(tc))}
		if t.access, err = auth.New(tc, auth.Options{Logger: s.log.With("tenant", tc.Name)}); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.Name, err)
		}
		s.observeTenant(snap, t)
		snap.tenants = append(snap.tenants, t)
		snap.byName[tc.Name] = t
		prefix := tc.PathPrefix
		if prefix == "" && len(tc.Domains) == 0 {
			// path_prefix "/" (which config stores as "") with no
			// domains: the catch-all tenant.
			prefix = "/"
		}
		routes = append(routes, route[*tenant]{hosts: tc.Domains, prefix: prefix, value: t})
	}
	if snap.index, err = newIndex(routes); err != nil {
		return nil, err
	}
	// Scripts load after every pool exists: keystone.Proxy("other") in one
	// tenant's script resolves another tenant's pool. Every script is
	// loaded even after one fails, so `keystone check` reports them all.
	var scriptErrs []error
	sums := scriptSums(cfg)
	for _, t := range snap.tenants {
		if t.cfg.Script == "" {
			continue
		}
		fallback := t.pool.serve
		if len(t.pool.ups) == 0 {
			fallback = snap.notFound
		}
		t.scriptSum = sums[t.cfg.Script]
		t.runtime = s.runtimeRoutesFor(t)
		sc, err := luavm.Load(s.luaConfig(cfg), cfg.Scripts, t.cfg.Script, luavm.Options{
			Tenant:          t.cfg.Name,
			PathPrefix:      t.cfg.PathPrefix,
			Host:            &scriptHost{snap: snap, tenant: t, srv: s},
			Store:           s.scriptStore(cfg, t.cfg.Name),
			Limiter:         s.newScriptLimiter(cfg, t.cfg.Name),
			Fallback:        fallback,
			RequestIDHeader: string(snap.reqIDHeader),
			ScriptsDir:      cfg.ScriptsDir,
			RuntimeRoutes:   t.runtime,
			Auth:            &luavm.AuthConfig{Base: t.cfg.Auth, Policy: t.access, Logger: s.log.With("tenant", t.cfg.Name)},
		})
		if err != nil {
			scriptErrs = append(scriptErrs, err)
			continue
		}
		t.script = sc
		t.serve = t.runScript
	}
	if len(scriptErrs) > 0 {
		return nil, errors.Join(scriptErrs...)
	}
	for _, t := range snap.tenants {
		t.limits = s.newTenantLimits(cfg, t.cfg) // nil without limits
	}
	snap.scriptPools.seal()
	return snap, nil
}

// newPool builds a tenant's upstream pool. With a registry (the tenants'
// pools), its upstreams, their health checkers and the retry budget are
// registry entries the snapshot holds: unchanged ones carry over from the
// running snapshot. Without one (keystone.Proxy URL pools), everything is
// the snapshot's own, closed with it.
func (s *Server) newPool(snap *snapshot, tc *config.Tenant, reg *registry) (*pool, error) {
	budget := newRetryBudget(tc.Retries.BudgetRatio)
	if reg != nil {
		v, _ := reg.acquire(&snap.held, budgetKey(tc.Name, tc.Retries.BudgetRatio), func() (any, func(), error) {
			return budget, nil, nil
		})
		budget = v.(*retryBudget)
	}
	p := &pool{
		name:         tc.Name,
		prefix:       []byte(tc.PathPrefix),
		strip:        tc.StripPrefix,
		preserveHost: tc.PreserveHost,
		timeout:      tc.Timeouts.Request.D(),
		retry:        newRetryPolicy(tc.Retries),
		budget:       budget,
		trusted:      snap.trusted,
		reqIDHeader:  snap.reqIDHeader,
		replayBody:   int(snap.cfg.Server.StreamRequestBodyOver),
		upgrade:      newUpgradePolicy(tc, s.tunnels),
	}
	if snap.obs.metricsEnabled {
		p.stats = s.obs.Tenant(tc.Name, tc.Script)
	}
	if p.prefix != nil && string(p.prefix) == "/" {
		p.prefix = nil
	}
	bups := make([]*balancer.Upstream, 0, len(tc.Upstreams))
	upKeys := make([]string, 0, len(tc.Upstreams))
	for _, uc := range tc.Upstreams {
		var up *upstream
		if reg == nil {
			u, err := s.newUpstream(tc, uc)
			if err != nil {
				return nil, err
			}
			if snap.obs.metricsEnabled {
				u.stats = s.obs.Upstream(tc.Name, uc.URL)
			}
			up = u
		} else {
			// Whether metrics are on is part of the key: stats is
			// read by every attempt and set only here, before the
			// entry is shared.
			key := upstreamKey(tc, uc) + fmt.Sprintf("\x00metrics=%t", snap.obs.metricsEnabled)
			v, err := reg.acquire(&snap.held, key, func() (any, func(), error) {
				u, err := s.newUpstream(tc, uc)
				if err != nil {
					return nil, nil, err
				}
				if snap.obs.metricsEnabled {
					u.stats = s.obs.Upstream(tc.Name, uc.URL)
				}
				return u, u.close, nil
			})
			if err != nil {
				return nil, err
			}
			up = v.(*upstream)
			upKeys = append(upKeys, key)
		}
		if len(p.ups) == 0 {
			p.basePath = []byte(up.basePath)
		} else if up.basePath != string(p.basePath) {
			// config validates this; a config built by hand may not.
			return nil, fmt.Errorf("upstream %q: base path %q differs from the tenant's first upstream's (%q)",
				uc.URL, up.basePath, p.basePath)
		}
		p.ups = append(p.ups, up)
		bups = append(bups, up.Upstream)
	}
	if len(bups) == 0 {
		return p, nil
	}
	picker, err := balancer.New(tc.Balancer, bups)
	if err != nil {
		return nil, err
	}
	p.picker = picker
	if hc := tc.HealthCheck; hc != nil {
		hcc := balancer.HealthCheckConfig{
			Path:               hc.Path,
			Host:               hc.Host,
			Interval:           hc.Interval.D(),
			Timeout:            hc.Timeout.D(),
			HealthyThreshold:   hc.HealthyThreshold,
			UnhealthyThreshold: hc.UnhealthyThreshold,
			Expected:           expectedStatus(hc.ExpectedStatus),
		}
		if err := hcc.Validate(); err != nil {
			return nil, fmt.Errorf("health_check: %w", err)
		}
		log := s.log.With("tenant", tc.Name)
		if reg == nil {
			// keystone.Proxy URL pools are built without health
			// checks (ProxyHandler); nothing would stop a checker.
			return nil, errors.New("health_check: not available on a pool without a registry")
		}
		// One checker per upstream entry, so an upstream that stays keeps
		// its checker (and its goroutine) however the tenant's other
		// upstreams change.
		for i, bu := range bups {
			v, _ := reg.acquire(&snap.held, checkerKey(upKeys[i], hc), func() (any, func(), error) {
				c := balancer.NewChecker(hcc, []*balancer.Upstream{bu}, log)
				return c, c.Stop, nil
			})
			snap.checkers = append(snap.checkers, v.(*balancer.Checker))
		}
	}
	return p, nil
}

func expectedStatus(ranges []config.StatusRange) func(int) bool {
	if len(ranges) == 0 {
		return nil
	}
	return func(code int) bool {
		for _, r := range ranges {
			if r.Contains(code) {
				return true
			}
		}
		return false
	}
}

// newUpstream creates the state and connection pool of one upstream.
func (s *Server) newUpstream(tc *config.Tenant, uc config.Upstream) (*upstream, error) {
	u, err := url.Parse(uc.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", uc.URL, err)
	}
	var br *breaker.Breaker
	if cb := tc.CircuitBreaker; cb != nil {
		tenantName, upURL := tc.Name, uc.URL
		bs := breaker.Settings{
			FailureThreshold:    uint32(cb.FailureThreshold),
			FailureRatio:        cb.FailureRatio,
			MinRequests:         uint32(cb.MinRequests),
			Window:              cb.Window.D(),
			OpenTimeout:         cb.OpenTimeout.D(),
			HalfOpenMaxRequests: uint32(cb.HalfOpenMaxRequests),
			OnStateChange: func(from, to breaker.State) {
				s.log.Warn("circuit breaker state changed", "component", "breaker",
					"tenant", tenantName, "upstream", upURL, "from", from.String(), "to", to.String())
			},
		}
		// config validates the same ranges; this guards the panic in
		// breaker.New against a config built by hand.
		if err := bs.Validate(); err != nil {
			return nil, fmt.Errorf("upstream %q: circuit_breaker: %w", uc.URL, err)
		}
		br = breaker.New(bs)
	}
	// The balancer knows upstreams by scheme and authority; a base path
	// ("http://svc:8080/v2") is the proxy stage's (pool.basePath).
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	if base != "" && (strings.Contains(base, "%") || path.Clean(base) != base) {
		return nil, fmt.Errorf("upstream %q: expected a base path without percent-encoding, empty, \".\" or \"..\" segments", uc.URL)
	}
	ucfg := balancer.UpstreamConfig{URL: u.Scheme + "://" + u.Host, Weight: uc.Weight, Breaker: br}
	if od := tc.OutlierDetection; od != nil {
		ucfg.Outlier = balancer.OutlierConfig{
			ConsecutiveFailures: od.ConsecutiveFailures,
			Backoff:             od.Backoff.D(),
			MaxBackoff:          od.MaxBackoff.D(),
		}
	}
	bu, err := balancer.NewUpstream(ucfg)
	if err != nil {
		return nil, err
	}
	// Admin and the access log name the upstream as configured, base path
	// included. Set before the upstream is shared.
	bu.URL = uc.URL
	up := &upstream{Upstream: bu, tenant: tc.Name, host: strings.ToLower(u.Host), scheme: []byte(u.Scheme), basePath: base}
	hc := &fasthttp.HostClient{
		Addr:                     bu.Addr,
		IsTLS:                    bu.TLS,
		DialTimeout:              dialer(tc.Timeouts.Connect.D(), up),
		MaxConns:                 tc.Pool.MaxConns,
		MaxIdleConnDuration:      tc.Pool.IdleTimeout.D(),
		MaxConnWaitTimeout:       tc.Pool.MaxConnWait.D(),
		MaxResponseBodySize:      int(tc.MaxResponseBody),
		StreamResponseBody:       tc.StreamResponseBody,
		NoDefaultUserAgentHeader: true,
		// Keystone's retry policy is the only one: fasthttp would
		// otherwise silently repeat idempotent requests up to 5 times.
		MaxIdemponentCallAttempts: 1,
		// Response headers up to 16 KiB (large Set-Cookie sets); the
		// buffer is per request in flight, pooled, not per connection.
		ReadBufferSize:        16 << 10,
		SecureErrorLogMessage: true,
	}
	if bu.TLS {
		if hc.TLSConfig, err = upstreamTLSConfig(tc, uc, u.Hostname()); err != nil {
			return nil, err
		}
	}
	up.client = hc
	// The fresh client shares the settings; each request it sends asks
	// for the connection to close after it, so it never pools one.
	up.fresh = &fasthttp.HostClient{
		Addr:                      hc.Addr,
		IsTLS:                     hc.IsTLS,
		TLSConfig:                 hc.TLSConfig,
		DialTimeout:               hc.DialTimeout,
		MaxConns:                  hc.MaxConns,
		MaxIdleConnDuration:       hc.MaxIdleConnDuration,
		MaxConnWaitTimeout:        hc.MaxConnWaitTimeout,
		MaxResponseBodySize:       hc.MaxResponseBodySize,
		StreamResponseBody:        hc.StreamResponseBody,
		NoDefaultUserAgentHeader:  true,
		MaxIdemponentCallAttempts: 1,
		ReadBufferSize:            hc.ReadBufferSize,
		SecureErrorLogMessage:     true,
	}
	return up, nil
}

func (s *Server) luaConfig(cfg *config.Config) luavm.Config {
	return luavm.Config{
		PoolSize:         cfg.Lua.PoolSize,
		MaxVMs:           cfg.Lua.MaxVMs,
		MaxExecution:     cfg.Lua.MaxExecution.D(),
		CallStackSize:    cfg.Lua.CallStackSize,
		RegistryMaxSize:  cfg.Lua.RegistryMaxSize,
		MaxStringSize:    int(cfg.Lua.MaxStringSize),
		MaxScriptSize:    int(cfg.Lua.MaxScriptSize),
		MaxMemory:        int64(cfg.Lua.MaxMemory),
		VMWait:           cfg.Lua.VMWait.D(),
		IdleVMTTL:        cfg.Lua.IdleVMTTL.D(),
		MaxRuntimeRoutes: cfg.Lua.MaxRuntimeRoutes,
		Logger:           s.log,
	}
}

// start starts the snapshot's background work (health checks).
func (snap *snapshot) start() {
	for _, c := range snap.checkers {
		c.Start()
	}
	for _, t := range snap.tenants {
		t.access.Start()
	}
}

// close releases the snapshot's scripts, its keystone.Proxy URL pools and
// its registry references: upstreams, checkers and budgets no other
// snapshot holds are closed. The snapshot must no longer serve requests.
// close is idempotent.
func (snap *snapshot) close() {
	if !snap.life.markClosed() {
		return
	}
	for _, t := range snap.tenants {
		t.access.Stop()
		if t.script != nil {
			t.script.Close()
		}
	}
	snap.scriptPools.close()
	if snap.reg != nil {
		snap.reg.release(snap.held)
	}
}

// closeIdle closes the idle connections of the pool's upstreams and stops
// their checkers (pools made without a registry).
func (p *pool) closeIdle() {
	for _, up := range p.ups {
		up.close()
	}
}

// close closes the idle connections of both of the upstream's clients;
// connections in use close when their request ends.
func (u *upstream) close() {
	u.client.CloseIdleConnections()
	u.fresh.CloseIdleConnections()
}

// runScript serves a request with the tenant's script. The request's state
// is attached to ctx while the script runs, for luavm's calls back into
// the gateway (scriptKey); the next request on ctx starts without it
// (fasthttp's Request.Reset drops user values), so a script that panics
// leaves nothing behind.
func (t *tenant) runScript(ctx *fasthttp.RequestCtx, rs *reqState) {
	ctx.SetUserValue(scriptKey, rs)
	t.script.Handler(ctx)
	ctx.RemoveUserValue(scriptKey)
}

// notFound is a script router's fallback when its tenant has no upstreams.
func (snap *snapshot) notFound(ctx *fasthttp.RequestCtx) {
	rs := scriptState(ctx)
	var id []byte
	if rs != nil {
		id = rs.reqID
		rs.errKind = codeNotFound
	}
	writeError(ctx, id, fasthttp.StatusNotFound, codeNotFound, "no route for this request")
}

// scriptHost is what a tenant's script sees of the gateway (luavm.Host).
type scriptHost struct {
	srv    *Server
	snap   *snapshot
	tenant *tenant
}

// ProxyHandler resolves keystone.Proxy(target): a tenant name (its pool and
// policies), or an absolute upstream URL proxied with the calling tenant's
// timeouts, pool sizes and policies. luavm calls it at script load, and
// from request goroutines for a target first seen inside a handler: URL
// pools are made once per tenant and URL under the snapshot's lock, and at
// most maxLateProxyPools of them after load.
func (h *scriptHost) ProxyHandler(target string) (fasthttp.RequestHandler, error) {
	if target == "" {
		target = h.tenant.cfg.Name
	}
	if t, ok := h.snap.byName[target]; ok {
		if len(t.pool.ups) == 0 {
			return nil, fmt.Errorf("keystone.Proxy(%q): tenant has no upstreams", target)
		}
		return t.pool.serve, nil
	}
	if !strings.Contains(target, "://") {
		return nil, fmt.Errorf("keystone.Proxy(%q): no tenant of that name, and not an upstream URL", target)
	}
	p, err := h.snap.scriptPools.get(scriptPoolKey{h.tenant.cfg.Name, target}, func() (*pool, error) {
		tc := *h.tenant.cfg
		tc.Upstreams = []config.Upstream{{URL: target, Weight: 1}}
		tc.Balancer = "round_robin"
		tc.HealthCheck = nil
		// One upstream: nowhere to eject it to (see config's default).
		tc.OutlierDetection = nil
		tc.StripPrefix = false
		return h.srv.newPool(h.snap, &tc, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("keystone.Proxy(%q): %w", target, err)
	}
	return p.serve, nil
}

// ClientIP is the client address the pipeline resolved (trusted proxies
// applied), for req.RemoteAddr.
func (h *scriptHost) ClientIP(ctx *fasthttp.RequestCtx) string {
	if rs := scriptState(ctx); rs != nil {
		return rs.clientIP.String()
	}
	return ctx.RemoteIP().String()
}

// TLS describes the request's TLS connection, for req.TLS.
func (h *scriptHost) TLS(ctx *fasthttp.RequestCtx) (luavm.TLSInfo, bool) { return tlsInfo(ctx) }

// WriteError answers with the gateway's JSON error body.
func (h *scriptHost) WriteError(ctx *fasthttp.RequestCtx, status int, msg string) {
	code := codeInternal
	switch {
	case status == fasthttp.StatusNotFound:
		code = codeNotFound
	case status == fasthttp.StatusUnauthorized:
		code = codeUnauthorized
	case status == fasthttp.StatusMethodNotAllowed:
		code = codeMethodNotAllowed
	case status == fasthttp.StatusServiceUnavailable:
		code = codeBusy
	case status == fasthttp.StatusGatewayTimeout:
		code = codeUpstreamTimeout
	case status < 500:
		code = codeBadRequest
	}
	var id []byte
	if rs := scriptState(ctx); rs != nil {
		id = rs.reqID
		// A script's 404 or 405 is routing, not a failure of the script.
		rs.errKind = "script_error"
		if status < 500 {
			rs.errKind = code
		}
	}
	countScriptError(h.tenant, status, msg)
	writeError(ctx, id, status, code, msg)
}
