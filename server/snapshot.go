package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/auth"
	"github.com/keystone-gateway/keystone/balancer"
	"github.com/keystone-gateway/keystone/breaker"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
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

	checkers []*balancer.Checker
	// pools are every pool built for the snapshot, closed with it.
	pools []*pool
}

// tenant is one tenant of a snapshot.
type tenant struct {
	cfg    *config.Tenant
	pool   *pool
	script *luavm.Script
	// serve handles a request matched to the tenant: the script's router
	// (which falls back to the pool) or the pool itself.
	serve fasthttp.RequestHandler
	// access is the tenant's auth, ip, cors and headers policy; nil when
	// it has none (access.go).
	access *auth.Policy
	// limits are the tenant's rate_limits and max_conns_per_key, wrapped
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
	}
	snap.trusted = trustedProxies(cfg.Server.TrustedNets())
	snap.admin = s.newAdmin(cfg.Admin.Token)
	defer func() {
		if err != nil {
			snap.close()
		}
	}()

	routes := make([]route[*tenant], 0, len(cfg.Tenants))
	for i := range cfg.Tenants {
		tc := &cfg.Tenants[i]
		p, err := s.newPool(snap, tc)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.Name, err)
		}
		t := &tenant{cfg: tc, pool: p, serve: p.serve}
		if t.access, err = auth.New(tc, auth.Options{Logger: s.log.With("tenant", tc.Name)}); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tc.Name, err)
		}
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
	for _, t := range snap.tenants {
		if t.cfg.Script == "" {
			continue
		}
		fallback := t.pool.serve
		if len(t.pool.ups) == 0 {
			fallback = snap.notFound
		}
		sc, err := luavm.Load(s.luaConfig(cfg), cfg.Scripts, t.cfg.Script, luavm.Options{
			Tenant:          t.cfg.Name,
			PathPrefix:      t.cfg.PathPrefix,
			Host:            &scriptHost{snap: snap, tenant: t, srv: s},
			Store:           s.scriptStore(cfg, t.cfg.Name),
			Limiter:         s.newScriptLimiter(cfg, t.cfg.Name),
			Fallback:        fallback,
			RequestIDHeader: string(snap.reqIDHeader),
			Auth:            &luavm.AuthConfig{Base: t.cfg.Auth, Policy: t.access, Logger: s.log.With("tenant", t.cfg.Name)},
		})
		if err != nil {
			scriptErrs = append(scriptErrs, err)
			continue
		}
		t.script = sc
		t.serve = sc.Handler
	}
	if len(scriptErrs) > 0 {
		return nil, errors.Join(scriptErrs...)
	}
	for _, t := range snap.tenants {
		if tl := s.newTenantLimits(cfg, t.cfg); tl != nil {
			next := t.serve
			t.serve = func(ctx *fasthttp.RequestCtx) { tl.serve(ctx, next) }
			t.limits = tl
		}
	}
	return snap, nil
}

// newPool builds a tenant's upstream pool.
func (s *Server) newPool(snap *snapshot, tc *config.Tenant) (*pool, error) {
	p := &pool{
		name:         tc.Name,
		prefix:       []byte(tc.PathPrefix),
		strip:        tc.StripPrefix,
		preserveHost: tc.PreserveHost,
		timeout:      tc.Timeouts.Request.D(),
		retry:        newRetryPolicy(tc.Retries),
		budget:       newRetryBudget(tc.Retries.BudgetRatio),
		trusted:      snap.trusted,
		reqIDHeader:  snap.reqIDHeader,
		replayBody:   int(snap.cfg.Server.StreamRequestBodyOver),
	}
	snap.pools = append(snap.pools, p)
	if p.prefix != nil && string(p.prefix) == "/" {
		p.prefix = nil
	}
	bups := make([]*balancer.Upstream, 0, len(tc.Upstreams))
	for _, uc := range tc.Upstreams {
		up, err := s.newUpstream(tc, uc)
		if err != nil {
			return nil, err
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
		c := balancer.NewChecker(hcc, bups, s.log.With("tenant", tc.Name))
		snap.checkers = append(snap.checkers, c)
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
	ucfg := balancer.UpstreamConfig{URL: uc.URL, Weight: uc.Weight, Breaker: br}
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
	hc := &fasthttp.HostClient{
		Addr:                     bu.Addr,
		IsTLS:                    bu.TLS,
		DialTimeout:              dialer(tc.Timeouts.Connect.D()),
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
		hc.TLSConfig = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	}
	return &upstream{Upstream: bu, client: hc, host: u.Host}, nil
}

func (s *Server) luaConfig(cfg *config.Config) luavm.Config {
	return luavm.Config{
		PoolSize:        cfg.Lua.PoolSize,
		MaxVMs:          cfg.Lua.MaxVMs,
		MaxExecution:    cfg.Lua.MaxExecution.D(),
		CallStackSize:   cfg.Lua.CallStackSize,
		RegistryMaxSize: cfg.Lua.RegistryMaxSize,
		MaxStringSize:   int(cfg.Lua.MaxStringSize),
		Logger:          s.log,
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

// close stops the snapshot's background work and releases its scripts. The
// snapshot must no longer serve requests.
func (snap *snapshot) close() {
	for _, c := range snap.checkers {
		c.Stop()
	}
	for _, t := range snap.tenants {
		t.access.Stop()
		if t.script != nil {
			t.script.Close()
		}
	}
	// Tenant pools and those keystone.Proxy("http://…") made for scripts.
	for _, p := range snap.pools {
		for _, up := range p.ups {
			up.client.CloseIdleConnections()
		}
	}
}

func (snap *snapshot) notFound(ctx *fasthttp.RequestCtx) {
	rs := stateOf(ctx)
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

// ProxyHandler resolves keystone.Proxy(target) at script load: a tenant name
// (its pool and policies), or an absolute upstream URL proxied with the
// calling tenant's timeouts, pool sizes and policies.
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
	tc := *h.tenant.cfg
	tc.Upstreams = []config.Upstream{{URL: target, Weight: 1}}
	tc.Balancer = "round_robin"
	tc.HealthCheck = nil
	tc.StripPrefix = false
	p, err := h.srv.newPool(h.snap, &tc)
	if err != nil {
		return nil, fmt.Errorf("keystone.Proxy(%q): %w", target, err)
	}
	return p.serve, nil
}

// ClientIP is the client address the pipeline resolved (trusted proxies
// applied), for req.RemoteAddr.
func (h *scriptHost) ClientIP(ctx *fasthttp.RequestCtx) string {
	if rs := stateOf(ctx); rs != nil {
		return rs.clientIP.String()
	}
	return ctx.RemoteIP().String()
}

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
	if rs := stateOf(ctx); rs != nil {
		id = rs.reqID
		// A script's 404 or 405 is routing, not a failure of the script.
		rs.errKind = "script_error"
		if status < 500 {
			rs.errKind = code
		}
	}
	writeError(ctx, id, status, code, msg)
}
