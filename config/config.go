// Package config defines Keystone's YAML schema, loads and validates it, and
// reports every problem at its position in the file.
//
// The YAML key names are a contract: scripts, docs and operators rely on them.
// Extend the schema; never rename a key.
//
// Load applies defaults before returning, so every other package receives a
// complete Config and never guesses a default of its own:
//
//	cfg, err := config.Load("keystone.yaml")
//	if err != nil {
//		// err is an ErrorList: one "FILE:LINE:COL: field.path: message" per line.
//	}
//
// Any value may reference the environment as ${NAME} or ${NAME:-default}
// ($$ is a literal $). References are expanded after parsing, so positions
// stay true, and an unquoted reference is typed by what it expands to:
// "max_conns: ${MAXC:-512}" is the integer 512. Anchors, aliases and merge
// keys ("<<: *defaults") work; top-level keys starting with "x-" are ignored,
// to give shared anchors a home.
package config

import (
	"io/fs"
	"time"
)

// Config is a loaded, defaulted and validated Keystone configuration.
// It is immutable once Load returns; a reload builds a new one.
type Config struct {
	// Server is the client-facing listener.
	Server Server `yaml:"server"`
	// Admin is the admin JSON API.
	Admin Admin `yaml:"admin"`
	// Logging is the structured and access logs.
	Logging Logging `yaml:"logging"`
	// Metrics is the Prometheus endpoint.
	Metrics Metrics `yaml:"metrics"`
	// Tracing is W3C Trace Context propagation.
	Tracing Tracing `yaml:"tracing"`
	// Lua is the script engine.
	Lua Lua `yaml:"lua"`
	// Reload configures reloading on file changes.
	Reload Reload `yaml:"reload"`

	// Shared is the state shared between instances: rate limits and
	// keystone.store.
	Shared Shared `yaml:"shared"`
	// Tenants are the routed applications, at least one.
	Tenants []Tenant `yaml:"tenants"`

	// File is the path the config was read from, or "(default)" for the
	// embedded default config. Errors name it.
	File string `yaml:"-"`

	// Files are the other files Load read because the config names them:
	// TLS certificates, keys and CA bundles, htpasswd and public key
	// files, as the paths Load opened (relative ones joined to the
	// config file's directory). A reload reads them again, so watching
	// them (reload.watch) picks up a renewed certificate.
	Files []string `yaml:"-"`

	// Scripts is the file system tenant scripts are read from: the
	// directory lua.scripts_dir names (relative to the config file's
	// directory), or the embedded scripts of the default config.
	// Script paths are fs.ValidPath names inside it, so a script can
	// never reach a file outside the scripts folder.
	Scripts fs.FS `yaml:"-"`

	// ScriptsDir is the directory Scripts was opened from, for messages;
	// "(default)" for the embedded scripts.
	ScriptsDir string `yaml:"-"`

	// pos maps field paths to where they were written, for Errorf.
	pos map[string]fieldPos
}

// Server configures the client-facing listener and its hardening limits.
type Server struct {
	// Listen is the TCP address to serve on. Default ":8080".
	Listen string `yaml:"listen"`

	// ReadTimeout bounds reading one whole request, body included.
	// Default 30s.
	ReadTimeout Duration `yaml:"read_timeout"`

	// WriteTimeout bounds writing one response. Default 30s.
	WriteTimeout Duration `yaml:"write_timeout"`

	// IdleTimeout closes a keep-alive connection that sends no new request
	// for this long. Default 60s.
	IdleTimeout Duration `yaml:"idle_timeout"`

	// HeaderTimeout bounds receiving the request line and headers after the
	// first byte; a client that is slower gets 408 (slowloris). Default 10s.
	HeaderTimeout Duration `yaml:"header_timeout"`

	// MaxRequestBody is the largest request body accepted; larger gets 413.
	// Default 10MiB.
	MaxRequestBody Size `yaml:"max_request_body"`

	// StreamRequestBodyOver is the body size above which a request body is
	// streamed to the upstream instead of held for retries. Equal to
	// MaxRequestBody, nothing streams: bodies are buffered whole and idle
	// keep-alive connections keep no read buffer. Default 1MiB.
	StreamRequestBodyOver Size `yaml:"stream_request_body_over"`

	// MaxHeaderBytes caps the request header block; larger gets 431.
	// Default 32KiB.
	MaxHeaderBytes Size `yaml:"max_header_bytes"`

	// MaxRequestLine caps the request line; longer gets 414. Default 8KiB.
	MaxRequestLine Size `yaml:"max_request_line"`

	// MaxHeaders caps the number of request header fields; more gets 431.
	// Default 100.
	MaxHeaders int `yaml:"max_headers"`

	// MaxConns caps concurrent client connections. Default 262144.
	MaxConns int `yaml:"max_conns"`

	// MaxConnsPerIP caps concurrent connections from one client IP.
	// Default 0: no per-IP cap.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`

	// ShutdownGrace is how long in-flight requests may run after SIGTERM
	// before connections are closed. Default 15s.
	ShutdownGrace Duration `yaml:"shutdown_grace"`

	// TrustedProxies lists the CIDRs (or single IPs) whose X-Forwarded-For
	// is believed. The client IP is the rightmost address in the chain
	// (peer address last) that is not trusted. Default: none, so the
	// client IP is always the TCP peer.
	TrustedProxies []string `yaml:"trusted_proxies"`

	// RequestIDHeader names the request id header, propagated when the
	// client sends a valid one and generated otherwise. Default
	// "X-Request-ID".
	RequestIDHeader string `yaml:"request_id_header"`

	// PIDFile, when set, is where the running gateway writes its process
	// id (removed on exit), for `keystone reload` to signal it. Relative
	// paths are relative to the working directory. Default: none.
	PIDFile string `yaml:"pid_file"`

	// Compression compresses responses for clients that accept it; a
	// tenant's compression block overrides it.
	Compression Compression `yaml:"compression"`

	// TLS, when set, adds a TLS listener serving the same tenants over
	// HTTPS (HTTP/1.1 and HTTP/2). Nil: plain HTTP only.
	TLS *TLS `yaml:"tls"`
}

// Reload configures reloading the config and scripts when their files
// change. SIGHUP and POST /admin/reload reload whatever this says.
type Reload struct {
	// Watch reloads when the config file, or any file in the scripts
	// folder, changes. Default false.
	Watch bool `yaml:"watch"`

	// Debounce is how long the files must stay unchanged before a watch
	// reload starts, so that an editor's save (write, rename, chmod) or a
	// ConfigMap update is one reload. Default 250ms.
	Debounce Duration `yaml:"debounce"`
}

// Admin configures the admin JSON endpoints served on the main listener.
type Admin struct {
	// Enabled serves the admin endpoints. Default true.
	Enabled bool `yaml:"enabled"`

	// Prefix is the path the admin endpoints live under; no tenant may
	// claim it. Default "/admin".
	Prefix string `yaml:"prefix"`

	// Token, when not empty, is required as "Authorization: Bearer <token>".
	Token string `yaml:"token"`
}

// Logging configures the structured logs.
type Logging struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`

	// Format is json or text. Default json.
	Format string `yaml:"format"`

	// AccessLog writes one line per request. Default true.
	AccessLog bool `yaml:"access_log"`

	// Output is stdout or stderr. Default stdout.
	Output string `yaml:"output"`

	// AccessLogSample is the share of access lines written, 0..1: 0.1
	// writes about one request in ten. Lines of requests the gateway
	// answered with an error of its own, or with a 5xx, are always
	// written. Default 1.
	AccessLogSample float64 `yaml:"access_log_sample"`

	// AccessLogFile, if set, is the file access lines are appended to
	// instead of Output (the other logs stay on Output). It is created if
	// missing and reopened at the same path on SIGUSR1, logrotate's
	// convention. Default "" (access lines go to Output).
	AccessLogFile string `yaml:"access_log_file"`
}

// Metrics configures the Prometheus text endpoint, served on the main
// listener and guarded by admin.token like the admin endpoints.
type Metrics struct {
	// Enabled serves the metrics. Default true.
	Enabled bool `yaml:"enabled"`

	// Path is where the metrics are served; no tenant may claim it.
	// Default "/metrics".
	Path string `yaml:"path"`
}

// Tracing configures the gateway's part in W3C Trace Context.
type Tracing struct {
	// Enabled propagates traceparent: a request's trace id is kept (or a
	// trace started) and the upstream is sent the gateway's span id as
	// its parent. Default true.
	Enabled bool `yaml:"enabled"`

	// SampleRatio is the share of traces the gateway starts (requests
	// without a valid traceparent) that it flags as sampled, 0..1. An
	// incoming trace keeps its caller's flag. Default 1.
	SampleRatio float64 `yaml:"sample_ratio"`

	// OTLPEndpoint, when set, is an OTLP/HTTP collector's traces URL
	// ("http://collector:4318/v1/traces") that the spans of sampled
	// requests are sent to, as protobuf-JSON. Default "": no export.
	OTLPEndpoint string `yaml:"otlp_endpoint"`

	// ExportInterval is how often buffered spans are sent to
	// OTLPEndpoint. Default 1s.
	ExportInterval Duration `yaml:"export_interval"`
}

// Lua configures the script engine shared by every tenant's script.
type Lua struct {
	// ScriptsDir is where tenant scripts live, relative to the config
	// file's directory. Default: the config file's directory.
	ScriptsDir string `yaml:"scripts_dir"`

	// PoolSize is the number of warm VMs kept per script.
	// Default GOMAXPROCS.
	PoolSize int `yaml:"pool_size"`

	// MaxVMs caps the VMs of one script. A request holds a VM only
	// while its Lua runs, not while it waits on an upstream, so a few
	// VMs serve many in-flight requests; more are created when every VM
	// is running Lua at once. Default 4*PoolSize, at least 64.
	MaxVMs int `yaml:"max_vms"`

	// MaxMemory is the memory budget of one script's VMs and request
	// threads (estimated at 128KiB per VM and 16KiB per in-flight
	// request), which bounds its in-flight requests. Default 512MiB:
	// about 32,000 in-flight requests.
	MaxMemory Size `yaml:"max_memory"`

	// VMWait bounds how long a request queues for a VM or for room in
	// the memory budget; past it the client gets 503 with Retry-After.
	// Not counted against MaxExecution. Default 1s.
	VMWait Duration `yaml:"vm_wait"`

	// IdleVMTTL is how long a VM or request thread above PoolSize,
	// created under a burst, stays idle before it is released.
	// Default 30s.
	IdleVMTTL Duration `yaml:"idle_vm_ttl"`

	// MaxExecution bounds the Lua run time of one request (time spent
	// waiting on upstreams and sub-requests is not counted against it
	// beyond the request timeout). Default 50ms.
	MaxExecution Duration `yaml:"max_execution"`

	// CallStackSize caps the Lua call stack depth. Default 200.
	CallStackSize int `yaml:"call_stack_size"`

	// RegistryMaxSize caps the Lua registry (value stack) slots.
	// Default 262144.
	RegistryMaxSize int `yaml:"registry_max_size"`

	// MaxStringSize caps one string built by the string library or
	// json.encode inside a script. Default 16MiB.
	MaxStringSize Size `yaml:"max_string_size"`

	// MaxScriptSize caps the size of one script file or required module;
	// a larger one is refused at load. Default 1MiB.
	MaxScriptSize Size `yaml:"max_script_size"`

	// MaxRuntimeRoutes caps the routes one tenant's script may add at run
	// time with keystone.AddRoute. Default 1000.
	MaxRuntimeRoutes int `yaml:"max_runtime_routes"`
}

// Tenant is one routed application: how requests are matched to it and where
// they go.
type Tenant struct {
	// Name identifies the tenant in logs, admin and keystone.Proxy(name).
	// Required, unique.
	Name string `yaml:"name"`

	// Domains are exact host names or one leading wildcard label
	// ("*.api.example.com"), compared case-insensitively without the port.
	// Load stores them lowercased, and IP addresses in canonical form
	// (IPv6 without brackets, as net.SplitHostPort returns them).
	Domains []string `yaml:"domains"`

	// PathPrefix matches the request path on a segment boundary: "/api"
	// matches "/api" and "/api/x", not "/apix". Either Domains or PathPrefix
	// (or both) must be set. "/" matches every path; Load stores it as "",
	// so after Load an empty PathPrefix always means "any path".
	PathPrefix string `yaml:"path_prefix"`

	// StripPrefix removes PathPrefix from the path sent upstream.
	StripPrefix bool `yaml:"strip_prefix"`

	// PreserveHost sends the client's Host header upstream; false sends the
	// upstream's host. Default true.
	PreserveHost bool `yaml:"preserve_host"`

	// AllowTrace lets TRACE requests through to the tenant's script and
	// upstreams. False answers them 405: TRACE echoes the request back,
	// cookies and credentials included (cross-site tracing).
	AllowTrace bool `yaml:"allow_trace"`

	// Balancer is round_robin, weighted_round_robin, least_conn or
	// random_two_choices. Default round_robin.
	Balancer string `yaml:"balancer"`

	// Upstreams are the servers requests are proxied to. A tenant with a
	// script may have none.
	Upstreams []Upstream `yaml:"upstreams"`

	// Timeouts bounds connecting to and waiting on upstreams.
	Timeouts Timeouts `yaml:"timeouts"`

	// Pool sizes the keep-alive connection pool to each upstream.
	Pool Pool `yaml:"pool"`

	// MaxResponseBody caps a buffered upstream response body; a larger one
	// answers 502. Ignored when StreamResponseBody is set. Default 64MiB.
	MaxResponseBody Size `yaml:"max_response_body"`

	// StreamResponseBody streams upstream response bodies to the client
	// instead of buffering them (large downloads, server-sent events).
	StreamResponseBody bool `yaml:"stream_response_body"`

	// Script is the tenant's Lua script, relative to lua.scripts_dir: an
	// fs.ValidPath name in Config.Scripts once loaded ("./a.lua" is stored
	// as "a.lua").
	Script string `yaml:"script"`

	// HealthCheck enables active health checks. Nil: none; every upstream
	// is considered healthy unless passive checks eject it.
	HealthCheck *HealthCheck `yaml:"health_check"`

	// OutlierDetection configures passive health checks from real
	// traffic. Nil: none. Default: on with its defaults for a tenant with
	// two or more upstreams (Load sets it), none for a single upstream;
	// consecutive_failures 0 turns it off.
	OutlierDetection *OutlierDetection `yaml:"outlier_detection"`

	// CircuitBreaker enables a breaker per upstream. Nil: none.
	CircuitBreaker *CircuitBreaker `yaml:"circuit_breaker"`

	// Retries is the retry policy. Default: 1 retry on connect_error (a
	// request that never reached an upstream), budget_ratio 0.2,
	// backoff 0.
	Retries Retries `yaml:"retries"`

	// Auth requires credentials (JWT, API key, basic). Nil: none.
	Auth *Auth `yaml:"auth"`

	// IP allows or denies client addresses. Nil: all allowed.
	IP *IPRules `yaml:"ip"`

	// CORS answers preflights and adds CORS headers. Nil: none.
	CORS *CORS `yaml:"cors"`

	// Headers changes request and response headers. Nil: none.
	Headers *HeaderRules `yaml:"headers"`

	// Compression overrides server.compression for this tenant, key by
	// key. Nil: the server's.
	Compression *Compression `yaml:"compression"`

	// WebSocket configures upgraded connections (WebSocket and
	// UpgradeProtocols).
	WebSocket WebSocket `yaml:"websocket"`

	// UpgradeProtocols lists the other protocols ("Upgrade: name" or
	// "name/version") the tenant lets clients upgrade to; they are
	// relayed like WebSocket connections, with websocket's timeouts.
	// Default: none.
	UpgradeProtocols []string `yaml:"upgrade_protocols"`

	// TLS is the tenant's own certificate, served on the TLS listener to
	// clients whose SNI names one of Domains. Nil: server.tls's default
	// certificate.
	TLS *CertPair `yaml:"tls"`

	// UpstreamTLS configures the TLS client of the tenant's https://
	// upstreams (and its keystone.Proxy URLs). Nil: the system roots,
	// the URL's host as server name, no client certificate.
	UpstreamTLS *UpstreamTLS `yaml:"upstream_tls"`

	// RateLimits are GCRA limits checked after auth, before the script
	// and upstreams; a request is charged only if all of them allow it.
	RateLimits []RateLimit `yaml:"rate_limits"`

	// MaxConnsPerKey caps requests in flight per key. Nil: none.
	MaxConnsPerKey *MaxConnsPerKey `yaml:"max_conns_per_key"`
}

// Upstream is one server a tenant proxies to.
type Upstream struct {
	// URL is an absolute http:// or https:// URL with a host, an optional
	// base path ("http://svc:8080/v2", under which request paths are
	// joined; the same for every upstream of a tenant) and no query or
	// fragment. Load stores it canonical: scheme and host lowercased, no
	// trailing "/", so it can key state kept across reloads.
	URL string `yaml:"url"`

	// Weight is the share for weighted_round_robin, 1..1000. Default 1.
	Weight int `yaml:"weight"`

	// TLS, for an https:// upstream, replaces the tenant's upstream_tls
	// for this upstream. Nil: the tenant's.
	TLS *UpstreamTLS `yaml:"tls"`
}

// Timeouts bounds the upstream side of a request.
type Timeouts struct {
	// Connect bounds establishing a new upstream connection. Default 5s.
	Connect Duration `yaml:"connect"`

	// Request bounds one upstream attempt from sending the request to
	// receiving the whole response; past it the client gets 504.
	// Default 30s.
	Request Duration `yaml:"request"`
}

// Pool sizes one tenant's keep-alive connection pool to each upstream.
type Pool struct {
	// MaxConns caps connections to one upstream. Default 1024.
	MaxConns int `yaml:"max_conns"`

	// IdleTimeout closes pooled connections idle this long. Keep it below
	// the upstream's own keep-alive timeout. Default 30s.
	IdleTimeout Duration `yaml:"idle_timeout"`

	// MaxConnWait is how long a request waits for a free connection when
	// MaxConns are busy before failing with 503. Default 1s.
	MaxConnWait Duration `yaml:"max_conn_wait"`
}

// HealthCheck configures active health checks of each upstream.
type HealthCheck struct {
	// Path is requested with GET. Default "/health".
	Path string `yaml:"path"`

	// Host is the Host header sent; empty sends the upstream's host.
	Host string `yaml:"host"`

	// Interval between checks, 1s..120s. Default 15s.
	Interval Duration `yaml:"interval"`

	// Timeout of one check; less than Interval. Default 2s.
	Timeout Duration `yaml:"timeout"`

	// HealthyThreshold consecutive successes mark a down upstream up.
	// Default 2.
	HealthyThreshold int `yaml:"healthy_threshold"`

	// UnhealthyThreshold consecutive failures mark an up upstream down.
	// Default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`

	// ExpectedStatus lists the status codes or ranges that count as
	// healthy: 200, "200-399", "2xx". Default [200-399].
	ExpectedStatus []StatusRange `yaml:"expected_status"`
}

// OutlierDetection configures passive health checks: ejecting an upstream
// that fails real traffic.
type OutlierDetection struct {
	// ConsecutiveFailures connect errors, timeouts, broken connections or
	// 5xx answers of a status listed in retries.on, in a row, eject the
	// upstream. 0 turns passive ejection off. Default 3.
	ConsecutiveFailures int `yaml:"consecutive_failures"`

	// Backoff is how long the first ejection lasts; each further
	// consecutive ejection doubles it. Default 10s.
	Backoff Duration `yaml:"backoff"`

	// MaxBackoff caps the doubled ejection time. Default 5m.
	MaxBackoff Duration `yaml:"max_backoff"`
}

// CircuitBreaker configures the breaker kept for each upstream.
type CircuitBreaker struct {
	// FailureThreshold consecutive failures trip the breaker. Default 5.
	FailureThreshold int `yaml:"failure_threshold"`

	// FailureRatio of failures over Window trips it, once MinRequests
	// requests were seen in the window. 0 < ratio <= 1. Default 0.5.
	FailureRatio float64 `yaml:"failure_ratio"`

	// MinRequests in Window before FailureRatio applies. Default 20.
	MinRequests int `yaml:"min_requests"`

	// Window is the rolling window of FailureRatio. Default 10s.
	Window Duration `yaml:"window"`

	// OpenTimeout is how long the breaker stays open before letting
	// probes through. Default 30s.
	OpenTimeout Duration `yaml:"open_timeout"`

	// HalfOpenMaxRequests probes may run at once while half-open.
	// Default 1.
	HalfOpenMaxRequests int `yaml:"half_open_max_requests"`
}

// Retries configures retrying a failed upstream attempt, on another upstream
// when there is one.
type Retries struct {
	// Attempts is the number of retries after the first try; 0 disables
	// retries.
	Attempts int `yaml:"attempts"`

	// On lists what is retried: connect_error, timeout, and status codes
	// (502, 503, 504, ...). Parsed into Conditions.
	On []string `yaml:"on"`

	// BudgetRatio caps retries to this share of requests over a rolling
	// 10s window, so a failing upstream cannot cause a retry storm.
	// Default 0.2.
	BudgetRatio float64 `yaml:"budget_ratio"`

	// Backoff is the pause before each retry. Default 0.
	Backoff Duration `yaml:"backoff"`

	// Conditions is On, parsed. Set by Load.
	Conditions RetryOn `yaml:"-"`
}

// RetryOn is the parsed form of Retries.On.
type RetryOn struct {
	// ConnectError retries a request that could not connect to an
	// upstream (it never reached one, so any method is safe to retry).
	ConnectError bool
	// Timeout retries an attempt that timed out.
	Timeout bool
	// Statuses are upstream status codes that are retried.
	Statuses []int
}

// RetriesStatus reports whether an upstream status code is retried.
func (r RetryOn) RetriesStatus(code int) bool {
	for _, s := range r.Statuses {
		if s == code {
			return true
		}
	}
	return false
}

// StatusRange is an inclusive range of HTTP status codes. In YAML it is a
// code (200), a range ("200-399") or a class ("2xx").
type StatusRange struct {
	// Min and Max are the lowest and highest codes of the range; equal
	// for a single code.
	Min, Max int
}

// Contains reports whether code lies in the range.
func (r StatusRange) Contains(code int) bool { return code >= r.Min && code <= r.Max }

// Duration is a time.Duration written in YAML as a Go duration string
// ("250ms", "15s", "1m30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Size is a byte count written in YAML as an integer or with a binary or
// decimal unit: "512KiB", "10MiB", "1GiB", "64KB", "1MB".
type Size int64
