package config

import (
	"reflect"
	"runtime"
	"time"
)

// The defaults below are the ones the field docs in config.go promise. They
// are built fresh by functions, never kept in package variables, so that no
// caller can change a default for everyone by writing to a shared slice.
//
// Parse decodes each section, list item and optional block over a value
// that holds its defaults already. That is how a default of true (admin
// enabled, access_log, preserve_host) stays distinguishable from an
// explicit false: an absent key leaves the default, a written one replaces
// it, and a written 0 is validated rather than taken for "unset".

// defaultConfig returns a Config with the defaults of every section. The
// Lua pool sizes depend on each other; finishDefaults fills max_vms after
// decoding, from the pool size decoded.
func defaultConfig() Config {
	return Config{
		Server: Server{
			Listen:                ":8080",
			ReadTimeout:           Duration(30 * time.Second),
			WriteTimeout:          Duration(30 * time.Second),
			IdleTimeout:           Duration(60 * time.Second),
			HeaderTimeout:         Duration(10 * time.Second),
			MaxRequestBody:        10 * MiB,
			StreamRequestBodyOver: 1 * MiB,
			MaxHeaderBytes:        32 * KiB,
			MaxRequestLine:        8 * KiB,
			MaxHeaders:            100,
			MaxConns:              262144,
			ShutdownGrace:         Duration(15 * time.Second),
			RequestIDHeader:       DefaultRequestIDHeader,
			Compression:           defaultCompression(),
		},
		Admin: Admin{
			Enabled: true,
			Prefix:  "/admin",
		},
		Logging: Logging{
			Level:           "info",
			Format:          "json",
			AccessLog:       true,
			Output:          "stdout",
			AccessLogSample: 1,
		},
		Metrics: Metrics{
			Enabled: true,
			Path:    "/metrics",
		},
		Tracing: DefaultTracing(),
		Reload: Reload{
			Debounce: Duration(250 * time.Millisecond),
		},
		Shared: DefaultShared(),
		Lua:    DefaultLua(),
	}
}

// finishDefaults fills the defaults that depend on other values: the Lua
// MaxVMs from the pool size, and a tenant's outlier detection from its
// number of upstreams.
func finishDefaults(c *Config, set func(path string) bool) {
	if !set("lua.max_vms") {
		c.Lua.MaxVMs = DefaultLuaMaxVMs(c.Lua.PoolSize)
	}
	// Passive ejection is on by default where it can help: with two or
	// more upstreams, a dead one leaves rotation after a few failures
	// (nginx ejects after one, max_fails=1, for fail_timeout=10s). A
	// single upstream is left alone, as nginx ignores max_fails for a
	// group of one: ejecting it would only turn its errors into 503s.
	for i := range c.Tenants {
		if t := &c.Tenants[i]; t.OutlierDetection == nil && len(t.Upstreams) >= 2 {
			od := defaultOutlierDetection()
			t.OutlierDetection = &od
		}
	}
	inheritCompression(c, set)
}

// DefaultTracing returns the tracing: section's defaults. The observe
// package's exporter takes its zero Interval from here.
func DefaultTracing() Tracing {
	return Tracing{Enabled: true, SampleRatio: 1, ExportInterval: Duration(time.Second)}
}

// DefaultRequestIDHeader is server.request_id_header's default, and the
// header luavm reads the request id from when its Options leave it empty.
const DefaultRequestIDHeader = "X-Request-ID"

// DefaultLua returns the lua: section's defaults, the ones the field docs
// of Lua promise: PoolSize is GOMAXPROCS, MaxVMs DefaultLuaMaxVMs(PoolSize)
// and ScriptsDir empty (Load resolves it to the config file's directory).
// luavm.Config takes its zero fields from here, so a script loaded without
// a config file runs under the same limits as one loaded with an empty
// lua: section.
func DefaultLua() Lua {
	pool := runtime.GOMAXPROCS(0)
	return Lua{
		PoolSize:         pool,
		MaxVMs:           DefaultLuaMaxVMs(pool),
		MaxExecution:     Duration(50 * time.Millisecond),
		CallStackSize:    200,
		RegistryMaxSize:  262144,
		MaxStringSize:    16 * MiB,
		MaxScriptSize:    1 * MiB,
		MaxMemory:        512 * MiB,
		VMWait:           Duration(time.Second),
		IdleVMTTL:        Duration(30 * time.Second),
		MaxRuntimeRoutes: 1000,
	}
}

// DefaultLuaMaxVMs returns lua.max_vms's default for a pool of poolSize
// warm VMs: 4*poolSize, at least 64, so that a small pool still has room
// to grow under a burst of requests that all run Lua at once.
func DefaultLuaMaxVMs(poolSize int) int { return max(4*poolSize, 64) }

// defaultTenant returns a Tenant with every default set.
func defaultTenant() Tenant {
	return Tenant{
		PreserveHost: true,
		Balancer:     "round_robin",
		Timeouts: Timeouts{
			Connect: Duration(5 * time.Second),
			Request: Duration(30 * time.Second),
		},
		Pool: Pool{
			MaxConns:    1024,
			IdleTimeout: Duration(30 * time.Second),
			MaxConnWait: Duration(1 * time.Second),
		},
		MaxResponseBody: 64 * MiB,
		WebSocket:       defaultWebSocket(),
		Retries: Retries{
			Attempts:    1,
			On:          []string{"connect_error"},
			BudgetRatio: 0.2,
		},
	}
}

func defaultHealthCheck() HealthCheck {
	return HealthCheck{
		Path:               "/health",
		Interval:           Duration(15 * time.Second),
		Timeout:            Duration(2 * time.Second),
		HealthyThreshold:   2,
		UnhealthyThreshold: 3,
		ExpectedStatus:     []StatusRange{{Min: 200, Max: 399}},
	}
}

func defaultOutlierDetection() OutlierDetection {
	return OutlierDetection{
		ConsecutiveFailures: 3,
		Backoff:             Duration(10 * time.Second),
		MaxBackoff:          Duration(5 * time.Minute),
	}
}

func defaultCircuitBreaker() CircuitBreaker {
	return CircuitBreaker{
		FailureThreshold:    5,
		FailureRatio:        0.5,
		MinRequests:         20,
		Window:              Duration(10 * time.Second),
		OpenTimeout:         Duration(30 * time.Second),
		HalfOpenMaxRequests: 1,
	}
}

// newDefault returns a pointer to a new value of type t holding t's
// defaults: what a list item or an optional block starts from before its
// keys are decoded over it.
func newDefault(t reflect.Type) reflect.Value {
	p := reflect.New(t)
	var v any
	switch t {
	case reflect.TypeFor[Tenant]():
		v = defaultTenant()
	case reflect.TypeFor[Upstream]():
		v = Upstream{Weight: 1}
	case reflect.TypeFor[HealthCheck]():
		v = defaultHealthCheck()
	case reflect.TypeFor[OutlierDetection]():
		v = defaultOutlierDetection()
	case reflect.TypeFor[CircuitBreaker]():
		v = defaultCircuitBreaker()
	case reflect.TypeFor[Compression]():
		v = defaultCompression()
	case reflect.TypeFor[TLS]():
		v = defaultTLS()
	default:
		var ok bool
		if v, ok = authDefault(t); !ok {
			if v, ok = limitDefault(t); !ok {
				return p
			}
		}
	}
	p.Elem().Set(reflect.ValueOf(v))
	return p
}
