package luavm

import (
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// Config bounds the VMs and the run time of one script. The zero value is
// usable: every zero field takes the default its comment names, which is
// config's (config.DefaultLua), and a field outside the range config
// validates for the same setting fails Load. The server fills these from
// the lua: section of the YAML file.
type Config struct {
	// PoolSize is the number of warm VMs kept per script, all created by
	// Load. If zero, GOMAXPROCS.
	PoolSize int

	// MaxVMs caps the VMs of one script. A VM is held only while Lua
	// runs: a request waiting on the network (keystone.Proxy,
	// keystone.http, the Fallback) lends it to others. When every VM is
	// running Lua another is created, up to MaxVMs and the memory budget;
	// past them a request queues for up to VMWait. If zero,
	// max(4*PoolSize, 64).
	MaxVMs int

	// MaxMemory is the memory budget of one script's VMs and request
	// threads, which bounds its in-flight requests: each VM is charged
	// 128 KiB and each in-flight (or idle pooled) request thread 16 KiB,
	// the figures TestMemoryEstimates measures. PoolSize VMs always fit.
	// A request finding the budget spent queues for up to VMWait. If
	// zero, 512 MiB: 32,000 in-flight requests.
	MaxMemory int64

	// VMWait bounds how long a request queues for a thread and a VM when
	// the budget or MaxVMs is reached; past it the request gets 503 with
	// Retry-After. The wait is not charged to MaxExecution. If zero, 1s.
	VMWait time.Duration

	// IdleVMTTL is how long a VM or thread above PoolSize, created under
	// a burst, stays idle before it is closed, so memory returns after
	// the burst. If zero, 30s.
	IdleVMTTL time.Duration

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

	// MaxScriptSize caps the size of a script and of each module it
	// requires; a larger file is refused at load. If zero, 1 MiB.
	MaxScriptSize int

	// MaxRuntimeRoutes caps the routes keystone.AddRoute may add to the
	// script at run time. If zero, 1000.
	MaxRuntimeRoutes int

	// Logger receives script errors and keystone.Log lines, with
	// component=lua. If nil, slog.Default().
	Logger *slog.Logger
}

// Internal sizes and budgets, not settings. The settings' defaults and
// ranges are config's (config.DefaultLua, config.MaxLuaPoolSize ...).
const (
	// initialRegistrySize is where the value stack (registry) of each
	// VM and thread starts; it grows in registryGrowStep slots up to
	// RegistryMaxSize. Small, because every in-flight request holds a
	// thread and most handlers need far less: 1,024 slots were 16 KiB.
	initialRegistrySize = 128
	registryGrowStep    = 256

	// buildBudget bounds running a script's main chunk and composing its
	// middleware when a VM is created: far above any sane script, far
	// below a hung load.
	buildBudget = time.Second
)

// withDefaults returns c with every zero field set to config's default
// for it (config.DefaultLua), or an error if a field is outside the range
// config.Validate enforces on the same setting.
func (c Config) withDefaults() (Config, error) {
	for _, f := range []struct {
		name       string
		value, max int64
	}{
		{"PoolSize", int64(c.PoolSize), config.MaxLuaPoolSize}, {"MaxVMs", int64(c.MaxVMs), math.MaxInt64},
		{"MaxExecution", int64(c.MaxExecution), math.MaxInt64},
		{"CallStackSize", int64(c.CallStackSize), math.MaxInt32}, {"RegistryMaxSize", int64(c.RegistryMaxSize), math.MaxInt32},
		{"MaxStringSize", int64(c.MaxStringSize), math.MaxInt64}, {"MaxScriptSize", int64(c.MaxScriptSize), math.MaxInt64},
		{"MaxRuntimeRoutes", int64(c.MaxRuntimeRoutes), config.MaxLuaRuntimeRoutes},
		{"MaxMemory", c.MaxMemory, math.MaxInt64},
		{"VMWait", int64(c.VMWait), math.MaxInt64}, {"IdleVMTTL", int64(c.IdleVMTTL), math.MaxInt64},
	} {
		if f.value < 0 {
			return c, fmt.Errorf("luavm: Config.%s is negative (%d)", f.name, f.value)
		}
		if f.value > f.max {
			return c, fmt.Errorf("luavm: Config.%s (%d) is above %d", f.name, f.value, f.max)
		}
	}
	d := config.DefaultLua()
	if c.PoolSize == 0 {
		c.PoolSize = d.PoolSize
	}
	if c.MaxVMs == 0 {
		c.MaxVMs = config.DefaultLuaMaxVMs(c.PoolSize)
	}
	if c.MaxVMs < c.PoolSize {
		return c, fmt.Errorf("luavm: MaxVMs (%d) is less than PoolSize (%d)", c.MaxVMs, c.PoolSize)
	}
	if c.MaxExecution == 0 {
		c.MaxExecution = d.MaxExecution.D()
	}
	if c.CallStackSize == 0 {
		c.CallStackSize = d.CallStackSize
	}
	if c.RegistryMaxSize == 0 {
		c.RegistryMaxSize = d.RegistryMaxSize
	}
	if c.MaxStringSize == 0 {
		c.MaxStringSize = int(d.MaxStringSize)
	}
	if c.MaxScriptSize == 0 {
		c.MaxScriptSize = int(d.MaxScriptSize)
	}
	if c.MaxRuntimeRoutes == 0 {
		c.MaxRuntimeRoutes = d.MaxRuntimeRoutes
	}
	if c.MaxMemory == 0 {
		c.MaxMemory = int64(d.MaxMemory)
	}
	if need := int64(config.MinLuaMemory(c.PoolSize)); c.MaxMemory < need {
		return c, fmt.Errorf("luavm: MaxMemory (%d) is below PoolSize VMs and one request thread (%d bytes)", c.MaxMemory, need)
	}
	if c.VMWait == 0 {
		c.VMWait = d.VMWait.D()
	}
	if c.IdleVMTTL == 0 {
		c.IdleVMTTL = d.IdleVMTTL.D()
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
	// r:Get("/hello") matches "/api/hello" and r:Get("/") matches "/api"
	// and "/api/".
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

	// HTTPClient serves keystone.http; the caller owns it and closes it.
	// If nil, the Script makes its own pooled client, with bounded
	// connections and response bodies, on its first keystone.http call,
	// and closes its idle connections in Close.
	HTTPClient *fasthttp.Client

	// ScriptsDir is the directory the script's fs.FS was opened from, as
	// the user names it (relative to the working directory, or absolute).
	// Script paths in load errors, runtime error logs and Lua error
	// positions are joined to it, so an editor can open them. If empty,
	// they are paths inside the fs.FS.
	ScriptsDir string

	// RequestIDHeader names the request id header read for logs.
	// If empty, config.DefaultRequestIDHeader ("X-Request-ID").
	RequestIDHeader string

	// RuntimeRoutes holds the routes keystone.AddRoute adds. Pass the
	// previous load's to keep them across a reload of an unchanged
	// script. If nil, a new, empty set.
	RuntimeRoutes *RuntimeRoutes

	// Auth is the tenant's access control, for keystone.auth middleware
	// (builtins_auth.go). If nil, the middleware takes every setting from
	// its options.
	Auth *AuthConfig
}
