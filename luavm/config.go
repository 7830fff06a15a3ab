package luavm

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/valyala/fasthttp"
)

// Config bounds the VMs and the run time of one script. The zero value is
// usable: every zero field takes the default its comment names. The
// config package fills these from the lua: section of the YAML file.
type Config struct {
	// PoolSize is the number of warm VMs kept per script, all created by
	// Load. If zero, GOMAXPROCS.
	PoolSize int

	// MaxVMs caps the VMs of one script. When every VM is busy (for
	// example blocked inside keystone.Proxy waiting on an upstream),
	// another is created up to MaxVMs and then stays pooled; a request
	// beyond it waits up to MaxExecution for a VM, then gets 503.
	// If zero, max(4*PoolSize, 64).
	MaxVMs int

	// MaxExecution bounds the Lua run time of one request. Time spent in
	// Go calls that wait on the network (keystone.Proxy handlers,
	// keystone.http.*, the Fallback) is not counted: those calls have
	// their own timeouts. If zero, 50ms.
	MaxExecution time.Duration

	// CallStackSize caps the Lua call depth. If zero, 200.
	CallStackSize int

	// RegistryMaxSize caps the Lua value stack (registry) slots; it grows
	// on demand up to this size. If zero, 262144.
	RegistryMaxSize int

	// MaxStringSize caps one string built by string.rep, string.format,
	// string.gsub, table.concat, json.encode, accumulated by w:Write, or
	// read by req:Body() and w:Body(). If zero, 16 MiB.
	MaxStringSize int

	// Logger receives script errors and keystone.Log lines, with
	// component=lua. If nil, slog.Default().
	Logger *slog.Logger
}

// Defaults, as documented on Config.
const (
	defaultMaxExecution    = 50 * time.Millisecond
	defaultCallStackSize   = 200
	defaultRegistryMaxSize = 262144
	defaultMaxStringSize   = 16 << 20
	minDefaultMaxVMs       = 64

	// initialRegistrySize is where each VM's registry starts; it grows
	// in registryGrowStep slots up to RegistryMaxSize. Small, because
	// MaxVMs VMs per script may exist and most handlers need far less.
	initialRegistrySize = 1024
	registryGrowStep    = 256

	// buildBudget bounds running a script's main chunk and composing its
	// middleware when a VM is created: far above any sane script, far
	// below a hung load.
	buildBudget = time.Second

	// defaultRequestIDHeader is read for the request id in logs.
	defaultRequestIDHeader = "X-Request-ID"
)

func (c Config) withDefaults() (Config, error) {
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"PoolSize", int64(c.PoolSize)}, {"MaxVMs", int64(c.MaxVMs)}, {"MaxExecution", int64(c.MaxExecution)},
		{"CallStackSize", int64(c.CallStackSize)}, {"RegistryMaxSize", int64(c.RegistryMaxSize)},
		{"MaxStringSize", int64(c.MaxStringSize)},
	} {
		if f.value < 0 {
			return c, fmt.Errorf("luavm: Config.%s is negative (%d)", f.name, f.value)
		}
	}
	if c.PoolSize == 0 {
		c.PoolSize = runtime.GOMAXPROCS(0)
	}
	if c.MaxVMs == 0 {
		c.MaxVMs = max(4*c.PoolSize, minDefaultMaxVMs)
	}
	if c.MaxVMs < c.PoolSize {
		return c, fmt.Errorf("luavm: MaxVMs (%d) is less than PoolSize (%d)", c.MaxVMs, c.PoolSize)
	}
	if c.MaxExecution == 0 {
		c.MaxExecution = defaultMaxExecution
	}
	if c.CallStackSize == 0 {
		c.CallStackSize = defaultCallStackSize
	}
	if c.RegistryMaxSize == 0 {
		c.RegistryMaxSize = defaultRegistryMaxSize
	}
	if c.MaxStringSize == 0 {
		c.MaxStringSize = defaultMaxStringSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Host is what the server provides to scripts. Its methods are called
// concurrently from every request of every VM.
type Host interface {
	// ProxyHandler returns the handler that proxies a request to target:
	// a tenant name, or an absolute upstream URL. The handler fills
	// ctx.Response with the upstream answer (or a JSON error). An error
	// for an unknown target is reported as a load error of the script at
	// the line of the keystone.Proxy call.
	ProxyHandler(target string) (fasthttp.RequestHandler, error)

	// WriteError answers with the gateway's JSON error body, which
	// includes the request id.
	WriteError(ctx *fasthttp.RequestCtx, status int, msg string)

	// ClientIP is the address the gateway treats as the client of ctx
	// (trusted proxies applied): what req.RemoteAddr reads.
	ClientIP(ctx *fasthttp.RequestCtx) string
}

// Options ties one script to its tenant and the server.
type Options struct {
	// Tenant names the tenant, for logs and keystone.Proxy().
	Tenant string

	// PathPrefix is the tenant's path prefix ("" or "/api"). The script's
	// root router is mounted there, as chi's Mount would: with "/api",
	// r:Get("/hello") matches "/api/hello" and r:Get("/") matches "/api".
	PathPrefix string

	// Host provides proxying and error responses. Required.
	Host Host

	// Store backs keystone.store. Pass one that outlives reloads to keep
	// counters across them. If nil, a new memory store.
	Store Store

	// Limiter backs keystone.limit.Allow, on the same store as the
	// tenant's rate_limits. If nil, keystone.limit.Allow raises an error.
	Limiter Limiter

	// Fallback is called when no script route matches and the script set
	// no NotFound handler: the server passes the tenant's upstream proxy,
	// or a JSON 404. If nil, Host.WriteError with 404. It runs inside the
	// root router's middleware, as chi's NotFound does.
	Fallback fasthttp.RequestHandler

	// HTTPClient serves keystone.http. If nil, a package-level pooled
	// client with bounded connections and response bodies.
	HTTPClient *fasthttp.Client

	// RequestIDHeader names the request id header read for logs.
	// If empty, "X-Request-ID".
	RequestIDHeader string

	// Auth is the tenant's access control, for keystone.auth middleware
	// (builtins_auth.go). If nil, the middleware takes every setting from
	// its options.
	Auth *AuthConfig
}
