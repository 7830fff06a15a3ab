package config_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// testEnv is the environment ${VAR} references see in these tests.
var testEnv = map[string]string{
	"PORT":  "9090",
	"MAXC":  "512",
	"EMPTY": "",
	"HOST":  "API.Example.com",
	"NO":    "false",
	"RATIO": "0.25",
	"DUR":   "250ms",
	"UP":    "127.0.0.1:9001",
	"WORDS": "a: b # c",
}

func lookup(k string) (string, bool) {
	v, ok := testEnv[k]
	return v, ok
}

// testScripts is the scripts file system of parse; messages name it
// /etc/keystone/scripts.
var testScripts = fstest.MapFS{
	"auth.lua":       {Data: []byte("return chi.NewRouter()\n")},
	"lib/util.lua":   {Data: []byte("return {}\n")},
	"folder.lua/x":   {Data: []byte("")},
	"not-a-script.x": {Data: []byte("")},
}

// parse parses yaml as x.yaml with the test environment and scripts.
func parse(t *testing.T, yaml string) (*config.Config, error) {
	t.Helper()
	return config.Parse("x.yaml", []byte(yaml), config.WithEnv(lookup),
		config.WithScripts(testScripts, "/etc/keystone/scripts"))
}

// mustParse parses yaml and fails the test on any error.
func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := parse(t, yaml)
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return c
}

// errorLines returns the lines of err, failing the test unless err is a
// non-empty ErrorList.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	var list config.ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("got error %T %v, want a non-empty config.ErrorList", err, err)
	}
	return strings.Split(err.Error(), "\n")
}

// okTenant is a valid tenants section, appended to fixtures that test
// other sections. It comes last, so it moves no position before it.
const okTenant = "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://127.0.0.1:1\"}]}\n"

func TestDefaults(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://127.0.0.1:1"}]
    health_check: {}
    outlier_detection: {}
    circuit_breaker: {}
`)
	tn := c.Tenants[0]
	status200to399 := []config.StatusRange{{Min: 200, Max: 399}}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"server.listen is :8080", c.Server.Listen, ":8080"},
		{"server.read_timeout is 30s", c.Server.ReadTimeout.D(), 30 * time.Second},
		{"server.write_timeout is 30s", c.Server.WriteTimeout.D(), 30 * time.Second},
		{"server.idle_timeout is 60s", c.Server.IdleTimeout.D(), 60 * time.Second},
		{"server.header_timeout is 10s", c.Server.HeaderTimeout.D(), 10 * time.Second},
		{"server.max_request_body is 10MiB", c.Server.MaxRequestBody, 10 * config.MiB},
		{"server.stream_request_body_over is 1MiB", c.Server.StreamRequestBodyOver, 1 * config.MiB},
		{"server.max_header_bytes is 32KiB", c.Server.MaxHeaderBytes, 32 * config.KiB},
		{"server.max_request_line is 8KiB", c.Server.MaxRequestLine, 8 * config.KiB},
		{"server.max_headers is 100", c.Server.MaxHeaders, 100},
		{"server.max_conns is 262144", c.Server.MaxConns, 262144},
		{"server.max_conns_per_ip is 0", c.Server.MaxConnsPerIP, 0},
		{"server.shutdown_grace is 15s", c.Server.ShutdownGrace.D(), 15 * time.Second},
		{"server.trusted_proxies is empty", len(c.Server.TrustedProxies), 0},
		{"server.request_id_header is X-Request-ID", c.Server.RequestIDHeader, "X-Request-ID"},
		{"admin.enabled is true", c.Admin.Enabled, true},
		{"admin.prefix is /admin", c.Admin.Prefix, "/admin"},
		{"admin.token is empty", c.Admin.Token, ""},
		{"logging.level is info", c.Logging.Level, "info"},
		{"logging.format is json", c.Logging.Format, "json"},
		{"logging.access_log is true", c.Logging.AccessLog, true},
		{"logging.output is stdout", c.Logging.Output, "stdout"},
		{"lua.scripts_dir is empty", c.Lua.ScriptsDir, ""},
		{"lua.pool_size is GOMAXPROCS", c.Lua.PoolSize, runtime.GOMAXPROCS(0)},
		{"lua.max_vms is 4*pool_size, at least 64", c.Lua.MaxVMs, max(4*runtime.GOMAXPROCS(0), 64)},
		{"lua.max_execution is 50ms", c.Lua.MaxExecution.D(), 50 * time.Millisecond},
		{"lua.call_stack_size is 200", c.Lua.CallStackSize, 200},
		{"lua.registry_max_size is 262144", c.Lua.RegistryMaxSize, 262144},
		{"lua.max_string_size is 16MiB", c.Lua.MaxStringSize, 16 * config.MiB},
		{"lua.max_memory is 512MiB", c.Lua.MaxMemory, 512 * config.MiB},
		{"lua.vm_wait is 1s", c.Lua.VMWait.D(), time.Second},
		{"lua.idle_vm_ttl is 30s", c.Lua.IdleVMTTL.D(), 30 * time.Second},
		{"tenant strip_prefix is false", tn.StripPrefix, false},
		{"tenant preserve_host is true", tn.PreserveHost, true},
		{"tenant balancer is round_robin", tn.Balancer, "round_robin"},
		{"upstream weight is 1", tn.Upstreams[0].Weight, 1},
		{"timeouts.connect is 5s", tn.Timeouts.Connect.D(), 5 * time.Second},
		{"timeouts.request is 30s", tn.Timeouts.Request.D(), 30 * time.Second},
		{"pool.max_conns is 1024", tn.Pool.MaxConns, 1024},
		{"pool.idle_timeout is 30s", tn.Pool.IdleTimeout.D(), 30 * time.Second},
		{"pool.max_conn_wait is 1s", tn.Pool.MaxConnWait.D(), time.Second},
		{"max_response_body is 64MiB", tn.MaxResponseBody, 64 * config.MiB},
		{"stream_response_body is false", tn.StreamResponseBody, false},
		{"script is empty", tn.Script, ""},
		{"health_check.path is /health", tn.HealthCheck.Path, "/health"},
		{"health_check.host is empty", tn.HealthCheck.Host, ""},
		{"health_check.interval is 15s", tn.HealthCheck.Interval.D(), 15 * time.Second},
		{"health_check.timeout is 2s", tn.HealthCheck.Timeout.D(), 2 * time.Second},
		{"health_check.healthy_threshold is 2", tn.HealthCheck.HealthyThreshold, 2},
		{"health_check.unhealthy_threshold is 3", tn.HealthCheck.UnhealthyThreshold, 3},
		{"health_check.expected_status is 200-399", tn.HealthCheck.ExpectedStatus, status200to399},
		{"outlier_detection.consecutive_failures is 3", tn.OutlierDetection.ConsecutiveFailures, 3},
		{"outlier_detection.backoff is 10s", tn.OutlierDetection.Backoff.D(), 10 * time.Second},
		{"outlier_detection.max_backoff is 5m", tn.OutlierDetection.MaxBackoff.D(), 5 * time.Minute},
		{"circuit_breaker.failure_threshold is 5", tn.CircuitBreaker.FailureThreshold, 5},
		{"circuit_breaker.failure_ratio is 0.5", tn.CircuitBreaker.FailureRatio, 0.5},
		{"circuit_breaker.min_requests is 20", tn.CircuitBreaker.MinRequests, 20},
		{"circuit_breaker.window is 10s", tn.CircuitBreaker.Window.D(), 10 * time.Second},
		{"circuit_breaker.open_timeout is 30s", tn.CircuitBreaker.OpenTimeout.D(), 30 * time.Second},
		{"circuit_breaker.half_open_max_requests is 1", tn.CircuitBreaker.HalfOpenMaxRequests, 1},
		{"retries.attempts is 1", tn.Retries.Attempts, 1},
		{"retries.on is [connect_error]", tn.Retries.On, []string{"connect_error"}},
		{"retries.budget_ratio is 0.2", tn.Retries.BudgetRatio, 0.2},
		{"retries.backoff is 0", tn.Retries.Backoff.D(), time.Duration(0)},
		{"retries conditions are connect errors only", tn.Retries.Conditions, config.RetryOn{ConnectError: true}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestOptionalBlocksAreNilWhenAbsent(t *testing.T) {
	t.Parallel()
	c := mustParse(t, okTenant)
	tn := c.Tenants[0]
	if tn.HealthCheck != nil || tn.OutlierDetection != nil || tn.CircuitBreaker != nil {
		t.Errorf("got health_check %v, outlier_detection %v, circuit_breaker %v; want all nil",
			tn.HealthCheck, tn.OutlierDetection, tn.CircuitBreaker)
	}
}

// TestOutlierDetectionIsOnByDefaultWithTwoUpstreams: a tenant with two or
// more upstreams that does not write outlier_detection gets it with its
// defaults, a tenant with one does not, and consecutive_failures: 0 turns
// it off.
func TestOutlierDetectionIsOnByDefaultWithTwoUpstreams(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
tenants:
  - {name: two, path_prefix: /two, upstreams: [{url: "http://a:1"}, {url: "http://b:1"}]}
  - {name: one, path_prefix: /one, upstreams: [{url: "http://a:1"}]}
  - name: off
    path_prefix: /off
    upstreams: [{url: "http://a:1"}, {url: "http://b:1"}]
    outlier_detection: {consecutive_failures: 0}
  - name: written
    path_prefix: /written
    upstreams: [{url: "http://a:1"}]
    outlier_detection: {backoff: 1m}
`)
	want := config.OutlierDetection{ConsecutiveFailures: 3, Backoff: config.Duration(10 * time.Second), MaxBackoff: config.Duration(5 * time.Minute)}
	if od := c.TenantByName("two").OutlierDetection; od == nil || *od != want {
		t.Errorf("two upstreams, nothing written: got %+v, want %+v", od, want)
	}
	if od := c.TenantByName("one").OutlierDetection; od != nil {
		t.Errorf("one upstream, nothing written: got %+v, want none", od)
	}
	if od := c.TenantByName("off").OutlierDetection; od == nil || od.ConsecutiveFailures != 0 {
		t.Errorf("consecutive_failures: 0: got %+v, want it kept as written (off)", od)
	}
	want.Backoff = config.Duration(time.Minute)
	if od := c.TenantByName("written").OutlierDetection; od == nil || *od != want {
		t.Errorf("one upstream, written: got %+v, want %+v", od, want)
	}
}

func TestExplicitValuesOverrideDefaults(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
admin:
  enabled: false
logging:
  access_log: false
lua:
  pool_size: 32
tenants:
  - name: t
    path_prefix: /t
    preserve_host: false
    upstreams: [{url: "http://127.0.0.1:1", weight: 7}]
    retries: {attempts: 0, on: [timeout, 502, "503"], budget_ratio: 0}
    health_check: {expected_status: [204, "3xx"], interval: 1m}
`)
	tn := c.Tenants[0]
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"admin.enabled false is kept", c.Admin.Enabled, false},
		{"logging.access_log false is kept", c.Logging.AccessLog, false},
		{"preserve_host false is kept", tn.PreserveHost, false},
		{"lua.pool_size is set", c.Lua.PoolSize, 32},
		{"lua.max_vms follows the pool size", c.Lua.MaxVMs, 128},
		{"weight is set", tn.Upstreams[0].Weight, 7},
		{"retries.attempts 0 is kept", tn.Retries.Attempts, 0},
		{"retries.budget_ratio 0 is kept", tn.Retries.BudgetRatio, 0.0},
		{"retries.on replaces the default list", tn.Retries.On, []string{"timeout", "502", "503"}},
		{"retry conditions are parsed", tn.Retries.Conditions, config.RetryOn{Timeout: true, Statuses: []int{502, 503}}},
		{"expected_status replaces the default list", tn.HealthCheck.ExpectedStatus, []config.StatusRange{{204, 204}, {300, 399}}},
		{"unset health check fields keep their defaults", tn.HealthCheck.Path, "/health"},
		{"set health check fields are kept", tn.HealthCheck.Interval.D(), time.Minute},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if !tn.Retries.Conditions.RetriesStatus(503) || tn.Retries.Conditions.RetriesStatus(504) {
		t.Errorf("RetriesStatus: got 503 %v, 504 %v; want true, false",
			tn.Retries.Conditions.RetriesStatus(503), tn.Retries.Conditions.RetriesStatus(504))
	}
}

func TestSmallPoolKeepsSixtyFourVMs(t *testing.T) {
	t.Parallel()
	c := mustParse(t, "lua: {pool_size: 2}\n"+okTenant)
	if c.Lua.MaxVMs != 64 {
		t.Errorf("max_vms: got %d, want 64", c.Lua.MaxVMs)
	}
	c = mustParse(t, "lua: {pool_size: 2, max_vms: 2}\n"+okTenant)
	if c.Lua.MaxVMs != 2 {
		t.Errorf("explicit max_vms: got %d, want 2", c.Lua.MaxVMs)
	}
}

func TestNormalization(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
tenants:
  - name: a
    domains: [API.Example.COM, "*.Wild.example.com", "[::1]", 10.0.0.1]
    upstreams: [{url: "HTTP://Backend.Internal:8080/"}, {url: "https://[::1]"}]
  - name: b
    path_prefix: /
    script: ./auth.lua
  - name: c
    domains: [other.example.com]
    path_prefix: /x
    upstreams: [{url: "http://a_b.svc:1"}]
`)
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"domains are lowercased and IPv6 unbracketed", c.Tenants[0].Domains,
			[]string{"api.example.com", "*.wild.example.com", "::1", "10.0.0.1"}},
		{"upstream URLs are canonical", c.Tenants[0].Upstreams[0].URL, "http://backend.internal:8080"},
		{"IPv6 upstreams keep their brackets", c.Tenants[0].Upstreams[1].URL, "https://[::1]"},
		{`path_prefix "/" is stored as ""`, c.Tenants[1].PathPrefix, ""},
		{"script paths are cleaned", c.Tenants[1].Script, "auth.lua"},
		{"upstream hosts may hold underscores", c.Tenants[2].Upstreams[0].URL, "http://a_b.svc:1"},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
server:
  listen: :${PORT}
  max_conns: ${MAXC:-100}
  max_headers: ${UNSET:-64}
  max_conns_per_ip: ${UNSET}
  write_timeout: ${DUR}
  request_id_header: "${UNSET:-X-Trace-ID}"
admin:
  enabled: ${NO}
  token: pa$word-$HOST
logging:
  level: ${EMPTY:-debug}
  output: ${UNSET}
tenants:
  - name: t
    domains: ["${HOST}"]
    upstreams:
      - url: http://${UP}
      - url: http://${UNSET:-${ALSO_UNSET:-127.0.0.1:9002}}
    circuit_breaker: {failure_ratio: "${RATIO}"}
    health_check: {path: "/health?token=$$secret&x=a$b"}
`)
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"a reference inside a plain string", c.Server.Listen, ":9090"},
		{"a reference becomes an integer", c.Server.MaxConns, 512},
		{"a default becomes an integer", c.Server.MaxHeaders, 64},
		{"an unset reference leaves the default", c.Server.MaxConnsPerIP, 0},
		{"a reference becomes a duration", c.Server.WriteTimeout.D(), 250 * time.Millisecond},
		{"a quoted reference stays a string", c.Server.RequestIDHeader, "X-Trace-ID"},
		{"a reference becomes a bool", c.Admin.Enabled, false},
		{"an unset reference in a string leaves the default", c.Logging.Output, "stdout"},
		{"an empty variable takes the default", c.Logging.Level, "debug"},
		{"a lone $ and an unbraced $NAME are literal", c.Admin.Token, "pa$word-$HOST"},
		{"a reference is expanded before it is validated and normalized", c.Tenants[0].Domains[0], "api.example.com"},
		{"a quoted reference in a flow mapping becomes a float", c.Tenants[0].CircuitBreaker.FailureRatio, 0.25},
		{"an env value is used as is", c.Tenants[0].Upstreams[0].URL, "http://127.0.0.1:9001"},
		{"defaults nest", c.Tenants[0].Upstreams[1].URL, "http://127.0.0.1:9002"},
		{"$$ is a literal $ and a lone $ stays", c.Tenants[0].HealthCheck.Path, "/health?token=$secret&x=a$b"},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestEnvValuesAreNotYAML(t *testing.T) {
	t.Parallel()
	// WORDS is "a: b # c": inserted as text, it must not become a
	// mapping or lose its "comment".
	c := mustParse(t, "admin:\n  token: ${WORDS}\n"+okTenant)
	if c.Admin.Token != "a: b # c" {
		t.Errorf("token: got %q, want %q", c.Admin.Token, "a: b # c")
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		// The document.
		{"an empty file", "", []string{"x.yaml: empty config"}},
		{"a file of comments", "# nothing\n  # here\n", []string{"x.yaml: empty config"}},
		{"two documents", "server: {}\n---\ntenants: []\n", []string{
			"x.yaml:2:1: expected one YAML document, found a second one"}},
		{"a list at the top", "- a\n", []string{
			"x.yaml:1:1: expected a mapping of settings (server, tenants, ...), got a list"}},
		{"a syntax error", "server:\n  listen: [1, 2\n", []string{
			"x.yaml:2:11: syntax error: sequence end token ']' not found"}},
		{"invalid UTF-8", "server:\n  listen: \"a\xffb\"\n", []string{
			"x.yaml:2:13: expected UTF-8 text, got an invalid byte sequence"}},
		{"a duplicate key", "server:\n  listen: :1\n  listen: :2\n" + okTenant, []string{
			`x.yaml:3:3: server: duplicate key "listen" (first defined at line 2)`}},
		{"an unknown alias", "server: *nowhere\n", []string{
			`x.yaml:1:9: unknown alias "nowhere" (an alias must follow its anchor &nowhere)`}},
		{"an unsupported tag", "server:\n  listen: !port 80\n" + okTenant, []string{
			`x.yaml:2:11: server.listen: unsupported tag "!port" (only !!str is supported)`}},

		// Unknown fields.
		{"a misspelt key", "server:\n  listn: :1\n" + okTenant, []string{
			`x.yaml:2:3: server: unknown field "listn" (did you mean "listen"?)`}},
		{"a misspelt top-level key", "sever: {}\n" + okTenant, []string{
			`x.yaml:1:1: unknown field "sever" (did you mean "server"?)`}},
		{"an unknown key far from any", "server:\n  colour: red\n" + okTenant, []string{
			`x.yaml:2:3: server: unknown field "colour"`}},
		{"a misspelt key in a list item", "tenants:\n  - name: t\n    path_prefx: /t\n    upstreams: [{url: \"http://a:1\", wieght: 2}]\n", []string{
			`x.yaml:2:5: tenants[0]: expected domains or path_prefix (or both), got neither`,
			`x.yaml:3:5: tenants[0]: unknown field "path_prefx" (did you mean "path_prefix"?)`,
			`x.yaml:4:37: tenants[0].upstreams[0]: unknown field "wieght" (did you mean "weight"?)`}},

		// Types.
		{"a list for a string", "server:\n  listen: [1]\n" + okTenant, []string{
			"x.yaml:2:11: server.listen: expected a string, got a list"}},
		{"a word for an integer", "server:\n  max_conns: abc\n" + okTenant, []string{
			`x.yaml:2:14: server.max_conns: expected an integer, got "abc"`}},
		{"a fraction for an integer", "server:\n  max_conns: 1.5\n" + okTenant, []string{
			"x.yaml:2:14: server.max_conns: expected an integer, got 1.5"}},
		{"an integer too large", "server:\n  max_conns: 99999999999999999999\n" + okTenant, []string{
			"x.yaml:2:14: server.max_conns: integer 99999999999999999999 is out of range"}},
		{"yes for a bool", "admin:\n  enabled: yes\n" + okTenant, []string{
			`x.yaml:2:12: admin.enabled: expected true or false, got "yes"`}},
		{"a number for a duration", "server:\n  read_timeout: 15\n" + okTenant, []string{
			`x.yaml:2:17: server.read_timeout: expected a duration such as "15s", got 15`}},
		{"a bad duration", "server:\n  read_timeout: 15 parsecs\n" + okTenant, []string{
			`x.yaml:2:17: server.read_timeout: expected a duration such as "15s", got "15 parsecs"`}},
		{"a negative size", "server:\n  max_request_body: -1\n" + okTenant, []string{
			"x.yaml:2:21: server.max_request_body: expected a size of at least 0, got -1"}},
		{"a size with a bad unit", "server:\n  max_request_body: 10XB\n" + okTenant, []string{
			`x.yaml:2:21: server.max_request_body: expected a size such as "10MiB" or a byte count, got "10XB"`}},
		{"a size that overflows", "server:\n  max_request_body: 99999999999GiB\n" + okTenant, []string{
			`x.yaml:2:21: server.max_request_body: size "99999999999GiB" is too large`}},
		{"a size that overflows as an integer", "server:\n  max_request_body: 99999999999999999999\n" + okTenant, []string{
			`x.yaml:2:21: server.max_request_body: size 99999999999999999999 is too large`}},
		{"a word for a ratio", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], circuit_breaker: {failure_ratio: half}}\n", []string{
			`x.yaml:2:99: tenants[0].circuit_breaker.failure_ratio: expected a number, got "half"`}},
		{"infinity for a ratio", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], circuit_breaker: {failure_ratio: .inf}}\n", []string{
			`x.yaml:2:99: tenants[0].circuit_breaker.failure_ratio: expected a finite number, got .inf`}},
		{"a status out of range", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], health_check: {expected_status: [600]}}\n", []string{
			`x.yaml:2:99: tenants[0].health_check.expected_status[0]: expected status codes within 100..599, got "600"`}},
		{"a status range upside down", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], health_check: {expected_status: [\"399-200\"]}}\n", []string{
			`x.yaml:2:99: tenants[0].health_check.expected_status[0]: expected a range with its lower bound first, got "399-200"`}},
		{"a bad status class", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], health_check: {expected_status: [6xx]}}\n", []string{
			`x.yaml:2:99: tenants[0].health_check.expected_status[0]: expected a status class from "1xx" to "5xx", got "6xx"`}},
		{"an empty optional block", "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams: [{url: \"http://a:1\"}]\n    circuit_breaker:\n", []string{
			`x.yaml:5:5: tenants[0].circuit_breaker: expected a mapping (write {} to enable with the defaults), got nothing`}},
		{"a null optional block", "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams: [{url: \"http://a:1\"}]\n    health_check: null\n", []string{
			`x.yaml:5:19: tenants[0].health_check: expected a mapping (write {} to enable with the defaults), got null`}},
		{"a mapping for a list", "tenants: {name: t}\n", []string{
			`x.yaml:1:10: tenants: expected a list, got a mapping`}},
		{"a number for a section", "server: 5\n" + okTenant, []string{
			`x.yaml:1:9: server: expected a mapping, got 5`}},

		// ${VAR} references.
		{"a malformed reference", "server:\n  listen: ${1X}:80\n" + okTenant, []string{
			`x.yaml:2:11: server.listen: expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${1X}"`}},
		{"an unterminated reference", "admin:\n  token: \"${TOKEN\"\n" + okTenant, []string{
			`x.yaml:2:10: admin.token: expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${TOKEN"`}},
		{"an expanded value of the wrong type", "server:\n  max_conns: ${PORT}x\n" + okTenant, []string{
			`x.yaml:2:14: server.max_conns: expected an integer, got "9090x"`}},

		// server.
		{"a listen port without a colon", "server:\n  listen: \"8080\"\n" + okTenant, []string{
			`x.yaml:2:11: server.listen: expected host:port such as ":8080", got "8080" (did you mean ":8080"?)`}},
		{"a listen port out of range", "server:\n  listen: :99999\n" + okTenant, []string{
			`x.yaml:2:11: server.listen: expected a port between 0 and 65535, got "99999"`}},
		{"a listen host that is not a host", "server:\n  listen: \"bad host:80\"\n" + okTenant, []string{
			`x.yaml:2:11: server.listen: expected an IP address or host name to listen on, got "bad host"`}},
		{"a zero timeout", "server:\n  write_timeout: 0s\n" + okTenant, []string{
			`x.yaml:2:18: server.write_timeout: expected a duration greater than 0, got 0s`}},
		{"a header timeout above the read timeout", "server:\n  header_timeout: 40s\n" + okTenant, []string{
			`x.yaml:2:19: server.header_timeout: expected at most read_timeout (30s), got 40s`}},
		{"a read timeout below the default header timeout", "server:\n  read_timeout: 5s\n" + okTenant, []string{
			`x.yaml:2:17: server.read_timeout: expected at least header_timeout (10s), got 5s`}},
		{"a zero size", "server:\n  max_header_bytes: 0\n" + okTenant, []string{
			`x.yaml:2:21: server.max_header_bytes: expected a size greater than 0, got 0B`}},
		{"a request line longer than the headers", "server:\n  max_request_line: 64KiB\n" + okTenant, []string{
			`x.yaml:2:21: server.max_request_line: expected at most max_header_bytes (32KiB), got 64KiB`}},
		{"a stream threshold above the body limit", "server:\n  max_request_body: 512KiB\n" + okTenant, []string{
			`x.yaml:2:21: server.max_request_body: expected at least stream_request_body_over (1MiB), got 512KiB`}},
		{"zero max headers", "server:\n  max_headers: 0\n" + okTenant, []string{
			`x.yaml:2:16: server.max_headers: expected at least 1, got 0`}},
		{"negative per-IP connections", "server:\n  max_conns_per_ip: -1\n" + okTenant, []string{
			`x.yaml:2:21: server.max_conns_per_ip: expected at least 0, got -1`}},
		{"a bad trusted proxy", "server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.300, \"::1/129\"]\n" + okTenant, []string{
			`x.yaml:2:33: server.trusted_proxies[1]: expected an IP address or a CIDR such as "10.0.0.0/8", got "10.0.0.300"`,
			`x.yaml:2:45: server.trusted_proxies[2]: expected an IP address or a CIDR such as "10.0.0.0/8", got "::1/129"`}},
		{"a request id header with a space", "server:\n  request_id_header: X Request\n" + okTenant, []string{
			`x.yaml:2:22: server.request_id_header: expected a header name such as "X-Request-ID", got "X Request"`}},

		// admin.
		{"an admin prefix of /", "admin:\n  prefix: /\n" + okTenant, []string{
			`x.yaml:2:11: admin.prefix: expected a path other than "/" such as "/admin", got "/"`}},
		{"an admin prefix without a slash", "admin:\n  prefix: admin\n" + okTenant, []string{
			`x.yaml:2:11: admin.prefix: expected a path starting with "/", got "admin"`}},
		{"an admin prefix with a trailing slash", "admin:\n  prefix: /ops/\n" + okTenant, []string{
			`x.yaml:2:11: admin.prefix: expected a path without a trailing "/", got "/ops/" (did you mean "/ops"?)`}},

		// logging.
		{"a misspelt level", "logging:\n  level: inf\n" + okTenant, []string{
			`x.yaml:2:10: logging.level: expected debug, info, warn or error, got "inf" (did you mean "info"?)`}},
		{"an unknown level", "logging:\n  level: verbose\n" + okTenant, []string{
			`x.yaml:2:10: logging.level: expected debug, info, warn or error, got "verbose"`}},
		{"an unknown format", "logging:\n  format: xml\n" + okTenant, []string{
			`x.yaml:2:11: logging.format: expected json or text, got "xml"`}},
		{"an unknown output", "logging:\n  output: /var/log/k.log\n" + okTenant, []string{
			`x.yaml:2:11: logging.output: expected stdout or stderr, got "/var/log/k.log"`}},

		// lua.
		{"a zero pool", "lua:\n  pool_size: 0\n" + okTenant, []string{
			`x.yaml:2:14: lua.pool_size: expected a value between 1 and 65536, got 0`}},
		{"fewer VMs than the pool", "lua:\n  pool_size: 8\n  max_vms: 4\n" + okTenant, []string{
			`x.yaml:3:12: lua.max_vms: expected at least pool_size (8), got 4`}},
		{"bad Lua limits", "lua:\n  max_execution: 0s\n  call_stack_size: 0\n  registry_max_size: 0\n  max_string_size: 0\n" + okTenant, []string{
			`x.yaml:2:18: lua.max_execution: expected a duration greater than 0, got 0s`,
			`x.yaml:3:20: lua.call_stack_size: expected at least 1, got 0`,
			`x.yaml:4:22: lua.registry_max_size: expected at least 1, got 0`,
			`x.yaml:5:20: lua.max_string_size: expected a size greater than 0, got 0B`}},
		{"bad Lua concurrency limits", "lua:\n  max_memory: 512KiB\n  vm_wait: 0s\n  idle_vm_ttl: -1s\n" + okTenant, []string{
			`x.yaml:2:15: lua.max_memory: expected at least 1MiB, got 512KiB`,
			`x.yaml:3:12: lua.vm_wait: expected a duration greater than 0, got 0s`,
			`x.yaml:4:16: lua.idle_vm_ttl: expected a duration greater than 0, got -1s`}},
		{"a memory budget without room for the pool", "lua:\n  pool_size: 16\n  max_memory: 2MiB\n" + okTenant, []string{
			`x.yaml:3:15: lua.max_memory: expected at least 2064KiB to hold pool_size (16) VMs and one request thread, got 2MiB`}},

		// tenants.
		{"no tenants", "server: {}\n", []string{
			`x.yaml: tenants: expected at least one tenant`}},
		{"an empty tenant list", "tenants: []\n", []string{
			`x.yaml:1:10: tenants: expected at least one tenant`}},
		{"a tenant without a name", "tenants:\n  - path_prefix: /t\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:2:5: tenants[0]: missing required field "name"`}},
		{"a tenant name with a space", "tenants:\n  - name: my api\n    path_prefix: /t\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:2:11: tenants[0].name: expected a name of letters, digits, "_", "." and "-", starting with a letter or digit, at most 64 long, got "my api"`}},
		{"a duplicate tenant name", "tenants:\n  - name: api\n    path_prefix: /a\n    upstreams: [{url: \"http://a:1\"}]\n  - name: api\n    path_prefix: /b\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:5:11: tenants[1].name: duplicate tenant name "api" (first defined at line 2)`}},
		{"a tenant with neither domains nor a prefix", "tenants:\n  - name: t\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:2:5: tenants[0]: expected domains or path_prefix (or both), got neither`}},
		{"a tenant with neither upstreams nor a script", "tenants:\n  - name: t\n    path_prefix: /t\n", []string{
			`x.yaml:2:5: tenants[0]: tenant "t" has neither upstreams nor a script`}},
		{"strip_prefix without a prefix", "tenants:\n  - name: t\n    domains: [a.com]\n    strip_prefix: true\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:4:19: tenants[0].strip_prefix: expected a path_prefix to strip, got none`}},
		{"strip_prefix with the root prefix", "tenants:\n  - name: t\n    path_prefix: /\n    strip_prefix: true\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:4:19: tenants[0].strip_prefix: expected a path_prefix other than "/" to strip`}},
		{"a misspelt balancer", "tenants:\n  - name: t\n    path_prefix: /t\n    balancer: roundrobin\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:4:15: tenants[0].balancer: expected round_robin, weighted_round_robin, least_conn or random_two_choices, got "roundrobin" (did you mean "round_robin"?)`}},

		// domains.
		{"bad domains", `tenants:
  - name: t
    upstreams: [{url: "http://a:1"}]
    domains:
      - "*"
      - a*.example.com
      - x.*.example.com
      - api.example.com:8080
      - a..example.com
      - -a.example.com
      - example.com.
      - 1.2.3.400
      - "bad_name.com"
      - ""
`, []string{
			`x.yaml:5:9: tenants[0].domains[0]: expected a wildcard with a domain such as "*.example.com", got "*"`,
			`x.yaml:6:9: tenants[0].domains[1]: expected "*" only as the whole first label, such as "*.example.com", got "a*.example.com"`,
			`x.yaml:7:9: tenants[0].domains[2]: expected "*" only as the whole first label, such as "*.example.com", got "x.*.example.com"`,
			`x.yaml:8:9: tenants[0].domains[3]: expected a host name without a port, got "api.example.com:8080"`,
			`x.yaml:9:9: tenants[0].domains[4]: expected a host name of letters, digits, "-" and "." such as "api.example.com", got "a..example.com"`,
			`x.yaml:10:9: tenants[0].domains[5]: expected a host name of letters, digits, "-" and "." such as "api.example.com", got "-a.example.com"`,
			`x.yaml:11:9: tenants[0].domains[6]: expected a host name without a trailing ".", got "example.com."`,
			`x.yaml:12:9: tenants[0].domains[7]: expected a host name of letters, digits, "-" and "." such as "api.example.com", got "1.2.3.400"`,
			`x.yaml:13:9: tenants[0].domains[8]: expected a host name of letters, digits, "-" and "." such as "api.example.com", got "bad_name.com"`,
			`x.yaml:14:9: tenants[0].domains[9]: expected a host name such as "api.example.com", got ""`}},
		{"a duplicate domain", "tenants:\n  - name: t\n    domains: [a.example.com, A.Example.com]\n    upstreams: [{url: \"http://a:1\"}]\n", []string{
			`x.yaml:3:30: tenants[0].domains[1]: duplicate domain "a.example.com" (first at domains[0])`}},

		// path_prefix.
		{"bad path prefixes", `tenants:
  - {name: a, upstreams: [{url: "http://a:1"}], path_prefix: api}
  - {name: b, upstreams: [{url: "http://a:1"}], path_prefix: /api/}
  - {name: c, upstreams: [{url: "http://a:1"}], path_prefix: /a//b}
  - {name: d, upstreams: [{url: "http://a:1"}], path_prefix: /a/../b}
  - {name: e, upstreams: [{url: "http://a:1"}], path_prefix: /a%20b}
  - {name: f, upstreams: [{url: "http://a:1"}], path_prefix: "/a?b"}
  - {name: g, upstreams: [{url: "http://a:1"}], path_prefix: "/a b"}
  - {name: h, upstreams: [{url: "http://a:1"}], path_prefix: /a/.}
  - {name: i, upstreams: [{url: "http://a:1"}], path_prefix: "/a#b"}
  - {name: j, upstreams: [{url: "http://a:1"}], path_prefix: "/a\"b"}
`, []string{
			`x.yaml:2:62: tenants[0].path_prefix: expected a path starting with "/", got "api"`,
			`x.yaml:3:62: tenants[1].path_prefix: expected a path without a trailing "/", got "/api/" (did you mean "/api"?)`,
			`x.yaml:4:62: tenants[2].path_prefix: expected a path without empty segments, got "/a//b"`,
			`x.yaml:5:62: tenants[3].path_prefix: expected a path without "." or ".." segments, got "/a/../b"`,
			`x.yaml:6:62: tenants[4].path_prefix: expected a path without percent-encoding, got "/a%20b"`,
			`x.yaml:7:62: tenants[5].path_prefix: expected a path without a query or fragment, got "/a?b"`,
			`x.yaml:8:62: tenants[6].path_prefix: expected only RFC 3986 path characters, got " " in "/a b"`,
			`x.yaml:9:62: tenants[7].path_prefix: expected a path without "." or ".." segments, got "/a/."`,
			`x.yaml:10:62: tenants[8].path_prefix: expected a path without a query or fragment, got "/a#b"`,
			`x.yaml:11:62: tenants[9].path_prefix: expected only RFC 3986 path characters, got "\"" in "/a\"b"`}},
		{"prefixes that shadow the admin API", `tenants:
  - {name: a, upstreams: [{url: "http://a:1"}], path_prefix: /admin}
  - {name: b, upstreams: [{url: "http://a:1"}], path_prefix: /admin/x}
  - {name: c, upstreams: [{url: "http://a:1"}], path_prefix: /administrator}
`, []string{
			`x.yaml:2:62: tenants[0].path_prefix: tenant cannot shadow the admin prefix "/admin"`,
			`x.yaml:3:62: tenants[1].path_prefix: tenant cannot shadow the admin prefix "/admin"`}},
		{"prefixes that shadow the metrics path", `tenants:
  - {name: a, upstreams: [{url: "http://a:1"}], path_prefix: /metrics}
  - {name: b, upstreams: [{url: "http://a:1"}], path_prefix: /metrics/x}
  - {name: c, upstreams: [{url: "http://a:1"}], path_prefix: /metricsx}
`, []string{
			`x.yaml:2:62: tenants[0].path_prefix: tenant cannot shadow the metrics path "/metrics"`,
			`x.yaml:3:62: tenants[1].path_prefix: tenant cannot shadow the metrics path "/metrics"`}},
		{"observability settings out of range", `logging: {access_log_sample: 1.5}
metrics: {path: /}
tracing: {sample_ratio: -0.1, otlp_endpoint: "collector:4318", export_interval: 0s}
tenants:
  - {name: a, upstreams: [{url: "http://a:1"}], path_prefix: /}
`, []string{
			`x.yaml:1:30: logging.access_log_sample: expected a ratio between 0 and 1, got 1.5`,
			`x.yaml:2:17: metrics.path: expected a path other than "/" such as "/metrics", got "/"`,
			`x.yaml:3:25: tracing.sample_ratio: expected a ratio between 0 and 1, got -0.1`,
			`x.yaml:3:46: tracing.otlp_endpoint: expected an absolute http(s) URL such as "http://collector:4318/v1/traces", got "collector:4318"`,
			`x.yaml:3:81: tracing.export_interval: expected a duration greater than 0, got 0s`}},

		// upstreams.
		{"bad upstream URLs", `tenants:
  - name: t
    path_prefix: /t
    upstreams:
      - url: 127.0.0.1:9001
      - url: ftp://a:1
      - url: http://a:1/api/../x
      - url: http://a:1?x=1
      - url: http://a:1#frag
      - url: http://user:pw@a:1
      - url: http://a:0
      - url: http://a:70000
      - url: "http://a:"
      - url: http://a%20b:1
      - url: http://
      - url: http://bad..host:1
`, []string{
			`x.yaml:5:14: tenants[0].upstreams[0].url: expected absolute http(s) URL, got "127.0.0.1:9001"`,
			`x.yaml:6:14: tenants[0].upstreams[1].url: expected absolute http(s) URL, got "ftp://a:1"`,
			`x.yaml:7:14: tenants[0].upstreams[2].url: base path: expected a path without "." or ".." segments, got "/api/../x"`,
			`x.yaml:8:14: tenants[0].upstreams[3].url: expected a URL without a query or fragment, got "http://a:1?x=1"`,
			`x.yaml:9:14: tenants[0].upstreams[4].url: expected a URL without a query or fragment, got "http://a:1#frag"`,
			`x.yaml:10:14: tenants[0].upstreams[5].url: expected a URL without user info, got "http://user:xxxxx@a:1"`,
			`x.yaml:11:14: tenants[0].upstreams[6].url: expected a port between 1 and 65535, got "http://a:0"`,
			`x.yaml:12:14: tenants[0].upstreams[7].url: expected a port between 1 and 65535, got "http://a:70000"`,
			`x.yaml:13:14: tenants[0].upstreams[8].url: expected a port after ":", got "http://a:"`,
			`x.yaml:14:14: tenants[0].upstreams[9].url: expected absolute http(s) URL, got "http://a%20b:1"`,
			`x.yaml:15:14: tenants[0].upstreams[10].url: expected absolute http(s) URL, got "http://"`,
			`x.yaml:16:14: tenants[0].upstreams[11].url: expected a host name or IP address, got "http://bad..host:1"`}},
		{"duplicate upstreams", "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams: [{url: \"http://a\"}, {url: \"HTTP://A:80/\"}]\n", []string{
			`x.yaml:4:42: tenants[0].upstreams[1].url: duplicate upstream "http://a:80" (first at upstreams[0])`}},
		{"weights out of range", "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams: [{url: \"http://a:1\", weight: 0}, {url: \"http://a:2\", weight: 1001}]\n", []string{
			`x.yaml:4:45: tenants[0].upstreams[0].weight: expected a value between 1 and 1000, got 0`,
			`x.yaml:4:77: tenants[0].upstreams[1].weight: expected a value between 1 and 1000, got 1001`}},
		{"an upstream without a URL", "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams:\n      - weight: 2\n", []string{
			`x.yaml:5:9: tenants[0].upstreams[0]: missing required field "url"`}},

		// script.
		{"bad script paths", `tenants:
  - {name: a, path_prefix: /a, script: /etc/auth.lua}
  - {name: b, path_prefix: /b, script: ../auth.lua}
  - {name: c, path_prefix: /c, script: not-a-script.x}
  - {name: d, path_prefix: /d, script: missing.lua}
  - {name: e, path_prefix: /e, script: folder.lua}
  - {name: f, path_prefix: /f, script: lib/util.lua}
`, []string{
			`x.yaml:2:40: tenants[0].script: expected a path inside the scripts directory such as "auth.lua", got "/etc/auth.lua"`,
			`x.yaml:3:40: tenants[1].script: expected a path inside the scripts directory such as "auth.lua", got "../auth.lua"`,
			`x.yaml:4:40: tenants[2].script: expected a file name ending in ".lua", got "not-a-script.x"`,
			`x.yaml:5:40: tenants[3].script: script "missing.lua" not found in "/etc/keystone/scripts"`,
			`x.yaml:6:40: tenants[4].script: expected a script file, got directory "folder.lua" in "/etc/keystone/scripts"`}},

		// timeouts, pool, bodies.
		{"bad upstream limits", `tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://a:1"}]
    timeouts: {connect: 0s, request: -1s}
    pool: {max_conns: 100001, idle_timeout: 0s, max_conn_wait: 0s}
    max_response_body: 0
`, []string{
			`x.yaml:5:25: tenants[0].timeouts.connect: expected a duration greater than 0, got 0s`,
			`x.yaml:5:38: tenants[0].timeouts.request: expected a duration greater than 0, got -1s`,
			`x.yaml:6:23: tenants[0].pool.max_conns: expected a value between 1 and 100000, got 100001`,
			`x.yaml:6:45: tenants[0].pool.idle_timeout: expected a duration greater than 0, got 0s`,
			`x.yaml:6:64: tenants[0].pool.max_conn_wait: expected a duration greater than 0, got 0s`,
			`x.yaml:7:24: tenants[0].max_response_body: expected a size greater than 0, got 0B`}},

		// health_check.
		{"a bad health check", `tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://a:1"}]
    health_check:
      path: health
      host: "bad host"
      interval: 500ms
      timeout: 0s
      healthy_threshold: 0
      unhealthy_threshold: 101
      expected_status: []
`, []string{
			`x.yaml:6:13: tenants[0].health_check.path: expected a path such as "/health", got "health"`,
			`x.yaml:7:13: tenants[0].health_check.host: expected a host name such as "app.internal" (with an optional port), got "bad host"`,
			`x.yaml:8:17: tenants[0].health_check.interval: expected an interval between 1s and 120s, got 500ms`,
			`x.yaml:9:16: tenants[0].health_check.timeout: expected a duration greater than 0, got 0s`,
			`x.yaml:10:26: tenants[0].health_check.healthy_threshold: expected a value between 1 and 100, got 0`,
			`x.yaml:11:28: tenants[0].health_check.unhealthy_threshold: expected a value between 1 and 100, got 101`,
			`x.yaml:12:24: tenants[0].health_check.expected_status: expected at least one status code or range, got none`}},
		{"a health check timeout as long as its interval", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], health_check: {interval: 3m, timeout: 3m}}\n", []string{
			`x.yaml:2:91: tenants[0].health_check.interval: expected an interval between 1s and 120s, got 3m0s`,
			`x.yaml:2:104: tenants[0].health_check.timeout: expected less than interval (3m0s), got 3m0s`}},

		// outlier_detection and circuit_breaker.
		{"a bad outlier detection", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], outlier_detection: {consecutive_failures: -1, backoff: 1m, max_backoff: 30s}}\n", []string{
			`x.yaml:2:108: tenants[0].outlier_detection.consecutive_failures: expected at least 0, got -1`,
			`x.yaml:2:138: tenants[0].outlier_detection.max_backoff: expected at least backoff (1m0s), got 30s`}},
		{"a bad circuit breaker", `tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://a:1"}]
    circuit_breaker:
      failure_threshold: 0
      failure_ratio: 1.5
      min_requests: 0
      window: 500ms
      open_timeout: 0s
      half_open_max_requests: 0
`, []string{
			`x.yaml:6:26: tenants[0].circuit_breaker.failure_threshold: expected at least 1, got 0`,
			`x.yaml:7:22: tenants[0].circuit_breaker.failure_ratio: expected a ratio greater than 0 and at most 1, got 1.5`,
			`x.yaml:8:21: tenants[0].circuit_breaker.min_requests: expected at least 1, got 0`,
			`x.yaml:9:15: tenants[0].circuit_breaker.window: expected a window of at least 1s, got 500ms`,
			`x.yaml:10:21: tenants[0].circuit_breaker.open_timeout: expected a duration greater than 0, got 0s`,
			`x.yaml:11:31: tenants[0].circuit_breaker.half_open_max_requests: expected a value between 1 and 100000, got 0`}},
		{"a zero failure ratio", "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], circuit_breaker: {failure_ratio: 0}}\n", []string{
			`x.yaml:2:99: tenants[0].circuit_breaker.failure_ratio: expected a ratio greater than 0 and at most 1, got 0`}},

		// retries.
		{"bad retries", `tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://a:1"}]
    retries:
      attempts: 11
      budget_ratio: 1.5
      backoff: -1s
      on: [conect_error, 404, 502, 502, 5xx]
`, []string{
			`x.yaml:6:17: tenants[0].retries.attempts: expected a value between 0 and 10, got 11`,
			`x.yaml:7:21: tenants[0].retries.budget_ratio: expected a ratio between 0 and 1, got 1.5`,
			`x.yaml:8:16: tenants[0].retries.backoff: expected a duration of at least 0, got -1s`,
			`x.yaml:9:12: tenants[0].retries.on[0]: expected connect_error, timeout or a status code within 500..599, got "conect_error" (did you mean "connect_error"?)`,
			`x.yaml:9:26: tenants[0].retries.on[1]: expected a status code within 500..599, got 404`,
			`x.yaml:9:36: tenants[0].retries.on[3]: duplicate retry condition "502"`,
			`x.yaml:9:41: tenants[0].retries.on[4]: expected connect_error, timeout or a status code within 500..599, got "5xx"`}},

		// Every problem at once, sorted by position.
		{"problems are all reported, in file order", `tenants:
  - name: b
    path_prefix: /b
    upstreams: [{url: "http://a:1", weight: 0}]
server:
  listen: nope
logging: {level: loud}
`, []string{
			`x.yaml:4:45: tenants[0].upstreams[0].weight: expected a value between 1 and 1000, got 0`,
			`x.yaml:6:11: server.listen: expected host:port such as ":8080", got "nope"`,
			`x.yaml:7:18: logging.level: expected debug, info, warn or error, got "loud"`}},
		{"a value that fails to decode is not validated again", "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams: [{url: [x]}]\n", []string{
			`x.yaml:4:23: tenants[0].upstreams[0].url: expected a string, got a list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(t, tt.yaml)
			got := errorLines(t, err)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tt.want, "\n      "))
			}
		})
	}
}

func TestConflicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // nil: no error
	}{
		{"two tenants on the same host and prefix", `tenants:
  - {name: api, domains: [api.example.com], path_prefix: /api, upstreams: [{url: "http://a:1"}]}
  - {name: other, domains: [www.example.com, API.example.com], path_prefix: /api, upstreams: [{url: "http://a:1"}]}
`, []string{`x.yaml:3:5: tenants[1]: claims the same host "api.example.com" and path_prefix "/api" as tenant "api" (tenants[0])`}},
		{"two path-only tenants on the same prefix", `tenants:
  - {name: a, path_prefix: /api, upstreams: [{url: "http://a:1"}]}
  - {name: b, path_prefix: /api, upstreams: [{url: "http://a:1"}]}
`, []string{`x.yaml:3:5: tenants[1]: claims the same path_prefix "/api" (with no domains) as tenant "a" (tenants[0])`}},
		{"two host-only tenants on the same host", `tenants:
  - {name: a, domains: [a.example.com], upstreams: [{url: "http://a:1"}]}
  - {name: b, domains: ["*.example.com"], upstreams: [{url: "http://a:1"}]}
  - {name: c, domains: [a.example.com], upstreams: [{url: "http://a:1"}]}
`, []string{`x.yaml:4:5: tenants[2]: claims the same host "a.example.com" (with no path_prefix) as tenant "a" (tenants[0])`}},
		{"two catch-all tenants", `tenants:
  - {name: a, path_prefix: /, upstreams: [{url: "http://a:1"}]}
  - {name: b, path_prefix: /, upstreams: [{url: "http://a:1"}]}
`, []string{`x.yaml:3:5: tenants[1]: claims the same path_prefix "/" (with no domains) as tenant "a" (tenants[0])`}},
		{"a conflict is reported once per pair", `tenants:
  - {name: a, domains: [a.com, b.com], upstreams: [{url: "http://a:1"}]}
  - {name: b, domains: [a.com, b.com], upstreams: [{url: "http://a:1"}]}
`, []string{`x.yaml:3:5: tenants[1]: claims the same host "a.com" (with no path_prefix) as tenant "a" (tenants[0])`}},
		{"invalid domains and prefixes are not compared", `tenants:
  - {name: a, domains: ["a*.x"], path_prefix: /a/, upstreams: [{url: "http://a:1"}]}
  - {name: b, domains: ["a*.x"], path_prefix: /a/, upstreams: [{url: "http://a:1"}]}
`, []string{
			`x.yaml:2:25: tenants[0].domains[0]: expected "*" only as the whole first label, such as "*.example.com", got "a*.x"`,
			`x.yaml:2:47: tenants[0].path_prefix: expected a path without a trailing "/", got "/a/" (did you mean "/a"?)`,
			`x.yaml:3:25: tenants[1].domains[0]: expected "*" only as the whole first label, such as "*.example.com", got "a*.x"`,
			`x.yaml:3:47: tenants[1].path_prefix: expected a path without a trailing "/", got "/a/" (did you mean "/a"?)`}},
		{"a host with and without a prefix do not conflict", `tenants:
  - {name: a, domains: [a.com], upstreams: [{url: "http://a:1"}]}
  - {name: b, domains: [a.com], path_prefix: /api, upstreams: [{url: "http://a:1"}]}
  - {name: c, path_prefix: /api, upstreams: [{url: "http://a:1"}]}
  - {name: d, path_prefix: /api/v2, upstreams: [{url: "http://a:1"}]}
`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(t, tt.yaml)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got error:\n%v\nwant none", err)
				}
				return
			}
			if got := errorLines(t, err); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(tt.want, "\n      "))
			}
		})
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
x-shared:
  hc: &hc {path: /ready, interval: 5s}
  up: &up
    - url: http://a:1
    - url: http://a:2
tenants:
  - name: a
    path_prefix: /a
    upstreams: *up
    health_check: *hc
  - name: b
    path_prefix: /b
    upstreams: *up
    health_check:
      <<: *hc
      path: /live
`)
	a, b := c.Tenants[0], c.Tenants[1]
	if a.HealthCheck.Path != "/ready" || a.HealthCheck.Interval.D() != 5*time.Second || a.HealthCheck.Timeout.D() != 2*time.Second {
		t.Errorf("aliased health check: got %+v", *a.HealthCheck)
	}
	if b.HealthCheck.Path != "/live" || b.HealthCheck.Interval.D() != 5*time.Second {
		t.Errorf("merged health check: got %+v, want path /live and interval 5s", *b.HealthCheck)
	}
	if len(b.Upstreams) != 2 || b.Upstreams[1].URL != "http://a:2" {
		t.Errorf("aliased upstreams: got %+v", b.Upstreams)
	}
	if a.HealthCheck == b.HealthCheck {
		t.Error("tenants share one HealthCheck value; each must get its own")
	}
}

func TestHostileInputsFailFast(t *testing.T) {
	t.Parallel()
	laughs := "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	for i, prev := 'b', 'a'; i <= 'j'; i, prev = i+1, i {
		laughs += string(i) + ": &" + string(i) + " [" + strings.Repeat("*"+string(prev)+",", 8) + "*" + string(prev) + "]\n"
	}
	tests := []struct {
		name string
		data string
		want string
	}{
		{"a billion laughs", "tenants: *j\nx-laughs:\n" + indent(laughs), "x.yaml: aliases expand the document by more than 100000 nodes"},
		{"deep flow nesting", "a: " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000), "x.yaml:1:203: nesting is deeper than 200 levels"},
		{"deep block nesting", strings.Repeat("- ", 100000) + "x", "x.yaml:1:401: nesting is deeper than 200 levels"},
		{"a mapping of 2000 keys", "server:\n" + repeatf(2000, "  k%d: v\n"), "x.yaml:1002:3: expected at most 1000 keys in one mapping"},
		{"many documents", repeatf(100, "---\na: %d\n"), "x.yaml:33:1: expected one YAML document, found more than 16"},
		{"a file over the size cap", "a: \"" + strings.Repeat("x", config.MaxFileSize) + "\"", "x.yaml: config is larger than 4194304 bytes"},
		{"binary garbage", "\x00\x01\x02\xfe\xff", "x.yaml:1:4: expected UTF-8 text, got an invalid byte sequence"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A generous bound: each case is linear in its input and takes
			// well under a second on an idle machine, while the blowups it
			// guards against (alias expansion, quadratic nesting) take
			// minutes or more. A tight bound flaked under -race on a
			// loaded 2-core machine (6s for the flow nesting case).
			start := time.Now()
			_, err := parse(t, tt.data)
			if took := time.Since(start); took > 60*time.Second {
				t.Errorf("took %v", took)
			}
			if got := errorLines(t, err); got[0] != tt.want {
				t.Errorf("got %q, want %q", got[0], tt.want)
			}
		})
	}
}

// repeatf concatenates format formatted with 0..n-1.
func repeatf(n int, format string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, format, i)
	}
	return b.String()
}

// indent indents every line of s by two spaces.
func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

func TestByteOrderMarkAndCRLF(t *testing.T) {
	t.Parallel()
	c := mustParse(t, "\ufefflogging:\r\n  level: warn\r\n"+strings.ReplaceAll(okTenant, "\n", "\r\n"))
	if c.Logging.Level != "warn" || c.Tenants[0].Name != "t" {
		t.Errorf("got level %q, tenant %q; want warn, t", c.Logging.Level, c.Tenants[0].Name)
	}
	_, err := parse(t, "\ufefflogging:\r\n  levl: warn\r\n"+okTenant)
	if got := errorLines(t, err); got[0] != `x.yaml:2:3: logging: unknown field "levl" (did you mean "level"?)` {
		t.Errorf("got %q", got[0])
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"a positioned error with a path", &config.Error{File: "k.yaml", Line: 3, Col: 7, Path: "server.listen", Msg: "bad"}, "k.yaml:3:7: server.listen: bad"},
		{"a positioned error without a path", &config.Error{File: "k.yaml", Line: 1, Col: 1, Msg: "empty config"}, "k.yaml:1:1: empty config"},
		{"an unpositioned error with a path", &config.Error{File: "k.yaml", Path: "tenants", Msg: "missing"}, "k.yaml: tenants: missing"},
		{"an unpositioned error without a path", &config.Error{File: "k.yaml", Msg: "empty config"}, "k.yaml: empty config"},
		{"a list, one error per line", config.ErrorList{
			{File: "k.yaml", Line: 1, Col: 2, Msg: "one"},
			{File: "k.yaml", Line: 3, Col: 4, Path: "p", Msg: "two"},
		}, "k.yaml:1:2: one\nk.yaml:3:4: p: two"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestErrorListIsSortedAndUnwraps(t *testing.T) {
	t.Parallel()
	_, err := parse(t, "tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: x}]}\nlogging: {level: x}\nserver: {listen: x}\n")
	var list config.ErrorList
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("got %v, want 3 errors", err)
	}
	for i := 1; i < len(list); i++ {
		if list[i-1].Line > list[i].Line {
			t.Errorf("errors out of order: line %d before line %d", list[i-1].Line, list[i].Line)
		}
	}
	var e *config.Error
	if !errors.As(err, &e) || e.Path != "tenants[0].upstreams[0].url" || e.Line != 2 {
		t.Errorf("errors.As *Error: got %+v, want the first error", e)
	}
}

func TestTooManyErrorsAreCapped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("tenants:\n")
	for i := range 500 {
		b.WriteString("  - {name: \"bad name\", path_prefix: /p" + strings.Repeat("x", i) + ", upstreams: [{url: x}]}\n")
	}
	_, err := parse(t, b.String())
	lines := errorLines(t, err)
	if len(lines) != 201 || lines[200] != "x.yaml: too many errors (more than 200), stopping" {
		t.Errorf("got %d lines ending %q, want 201 ending with the cap", len(lines), lines[len(lines)-1])
	}
}

func TestLoadResolvesScriptsDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "lua", "auth.lua"), "return chi.NewRouter()\n")
	write(t, filepath.Join(dir, "keystone.yaml"), "lua: {scripts_dir: lua}\ntenants:\n  - {name: a, path_prefix: /a, script: auth.lua}\n")
	path := filepath.Join(dir, "keystone.yaml")
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != path || c.ScriptsDir != filepath.Join(dir, "lua") {
		t.Errorf("got File %q, ScriptsDir %q; want %q, %q", c.File, c.ScriptsDir, path, filepath.Join(dir, "lua"))
	}
	if b, err := fs.ReadFile(c.Scripts, c.Tenants[0].Script); err != nil || string(b) != "return chi.NewRouter()\n" {
		t.Errorf("reading the script through Scripts: got %q, %v", b, err)
	}
}

func TestLoadDefaultsScriptsToTheConfigDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "auth.lua"), "return chi.NewRouter()\n")
	write(t, filepath.Join(dir, "k.yaml"), "tenants:\n  - {name: a, path_prefix: /a, script: auth.lua}\n")
	c, err := config.Load(filepath.Join(dir, "k.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ScriptsDir != dir {
		t.Errorf("ScriptsDir: got %q, want %q", c.ScriptsDir, dir)
	}
}

func TestLoadReportsAMissingScriptsDirOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "k.yaml"), "lua:\n  scripts_dir: nope\ntenants:\n  - {name: a, path_prefix: /a, script: auth.lua}\n  - {name: b, path_prefix: /b, script: b.lua}\n")
	_, err := config.Load(filepath.Join(dir, "k.yaml"))
	want := filepath.Join(dir, "k.yaml") + `:2:16: lua.scripts_dir: scripts directory "` + filepath.Join(dir, "nope") + `" does not exist`
	if got := errorLines(t, err); len(got) != 1 || got[0] != want {
		t.Errorf("got %q, want [%q]", got, want)
	}
}

func TestParseWithBaseDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "scripts", "auth.lua"), "return chi.NewRouter()\n")
	c, err := config.Parse("stdin", []byte("lua: {scripts_dir: scripts}\ntenants:\n  - {name: a, path_prefix: /a, script: auth.lua}\n"),
		config.WithBaseDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if c.ScriptsDir != filepath.Join(dir, "scripts") {
		t.Errorf("ScriptsDir: got %q", c.ScriptsDir)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want an error matching fs.ErrNotExist", err)
	}
	if got := errorLines(t, err); !strings.HasSuffix(got[0], "nope.yaml: cannot read config: no such file or directory") {
		t.Errorf("got %q", got[0])
	}
}

func TestLoadRefusesHugeFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "big.yaml")
	write(t, path, "# "+strings.Repeat("x", config.MaxFileSize))
	_, err := config.Load(path)
	if got := errorLines(t, err); got[0] != path+": config is larger than 4194304 bytes" {
		t.Errorf("got %q", got[0])
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	c, err := config.Default(config.WithEnv(func(k string) (string, bool) {
		if k == "KEYSTONE_DEMO_2" {
			return "127.0.0.1:40002", true
		}
		return "", false
	}))
	if err != nil {
		t.Fatal(err)
	}
	hello, demo := c.TenantByName("hello"), c.TenantByName("demo")
	if hello == nil || demo == nil || c.TenantByName("nope") != nil {
		t.Fatalf("TenantByName: hello %v, demo %v, nope %v", hello, demo, c.TenantByName("nope"))
	}
	var urls []string
	for _, u := range demo.Upstreams {
		urls = append(urls, u.URL)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"File is (default)", c.File, "(default)"},
		{"ScriptsDir is (default)", c.ScriptsDir, "(default)"},
		{"it listens on :8080", c.Server.Listen, ":8080"},
		{"admin is on at /admin", [2]any{c.Admin.Enabled, c.Admin.Prefix}, [2]any{true, "/admin"}},
		{"logs are json at info with access logs", [3]any{c.Logging.Format, c.Logging.Level, c.Logging.AccessLog}, [3]any{"json", "info", true}},
		{"hello is a catch-all served by hello.lua", [3]any{hello.PathPrefix, hello.Script, len(hello.Upstreams)}, [3]any{"", "hello.lua", 0}},
		{"demo strips /demo", [2]any{demo.PathPrefix, demo.StripPrefix}, [2]any{"/demo", true}},
		{"demo is round robin", demo.Balancer, "round_robin"},
		{"demo upstreams come from the environment or loopback defaults", urls,
			[]string{"http://127.0.0.1:9001", "http://127.0.0.1:40002", "http://127.0.0.1:9003"}},
		{"demo checks /health every 5s within 1s", [3]any{demo.HealthCheck.Path, demo.HealthCheck.Interval.D(), demo.HealthCheck.Timeout.D()},
			[3]any{"/health", 5 * time.Second, time.Second}},
		{"demo has a default circuit breaker", *demo.CircuitBreaker, config.CircuitBreaker{
			FailureThreshold: 5, FailureRatio: 0.5, MinRequests: 20, Window: config.Duration(10 * time.Second),
			OpenTimeout: config.Duration(30 * time.Second), HalfOpenMaxRequests: 1}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	script, err := fs.ReadFile(c.Scripts, "hello.lua")
	if err != nil || !strings.Contains(string(script), `r:Get("/hello"`) {
		t.Errorf("hello.lua from Scripts: got %q, %v", script, err)
	}
}

func TestShippedConfigsLoad(t *testing.T) {
	t.Parallel()
	env := config.WithEnv(func(k string) (string, bool) {
		v, ok := map[string]string{"KEYSTONE_ADMIN_TOKEN": "s3cret"}[k]
		return v, ok
	})
	load := func(t *testing.T, name string) *config.Config {
		t.Helper()
		path := filepath.Join("..", "configs", name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		c, err := config.Parse(path, data, env)
		if err != nil {
			t.Fatalf("%s:\n%v", name, err)
		}
		if c.ScriptsDir != filepath.Join("..", "configs", "scripts") {
			t.Errorf("%s: ScriptsDir %q, want ../configs/scripts", name, c.ScriptsDir)
		}
		for _, tn := range c.Tenants {
			if tn.Script != "" {
				if _, err := fs.Stat(c.Scripts, tn.Script); err != nil {
					t.Errorf("%s: tenant %s: %v", name, tn.Name, err)
				}
			}
		}
		return c
	}
	// kinds classifies each tenant as host-only, path-only or hybrid.
	kinds := func(c *config.Config) map[string]bool {
		k := make(map[string]bool)
		for _, tn := range c.Tenants {
			switch {
			case len(tn.Domains) > 0 && tn.PathPrefix != "":
				k["hybrid"] = true
			case len(tn.Domains) > 0:
				k["host"] = true
			default:
				k["path"] = true
			}
			if tn.Script != "" {
				k["script"] = true
			}
		}
		return k
	}
	allKinds := map[string]bool{"hybrid": true, "host": true, "path": true, "script": true}

	t.Run("development is verbose, local and open", func(t *testing.T) {
		t.Parallel()
		c := load(t, "development.yaml")
		if c.Logging.Format != "text" || c.Logging.Level != "debug" {
			t.Errorf("logging: got %s/%s, want text/debug", c.Logging.Format, c.Logging.Level)
		}
		if c.Server.Listen != "127.0.0.1:8080" || c.Admin.Token != "" {
			t.Errorf("got listen %q, admin token %q; want loopback and no token", c.Server.Listen, c.Admin.Token)
		}
		if s := c.TenantByName("secure-api"); s == nil || s.Script != "auth.lua" || c.TenantByName("api") == nil {
			t.Errorf("secure-api must run auth.lua in front of the api tenant")
		}
	})
	t.Run("staging takes its admin token from the environment", func(t *testing.T) {
		t.Parallel()
		c := load(t, "staging.yaml")
		if c.Admin.Token != "s3cret" || c.Logging.Format != "json" {
			t.Errorf("got token %q, format %q", c.Admin.Token, c.Logging.Format)
		}
		if k := kinds(c); !reflect.DeepEqual(k, allKinds) {
			t.Errorf("tenant kinds: got %v, want %v", k, allKinds)
		}
		api := c.TenantByName("api")
		if api == nil || api.HealthCheck == nil || api.CircuitBreaker == nil || !api.Retries.Conditions.RetriesStatus(503) {
			t.Errorf("api: want a health check, a breaker and retries on 503; got %+v", api)
		}
		if web := c.TenantByName("web"); web == nil || web.OutlierDetection == nil || web.OutlierDetection.MaxBackoff.D() != time.Minute {
			t.Errorf("web: want outlier detection with max_backoff 1m")
		}
	})
	t.Run("production trusts its load balancers and shares blocks through anchors", func(t *testing.T) {
		t.Parallel()
		c := load(t, "production.yaml")
		if c.Admin.Token != "s3cret" || len(c.Server.TrustedNets()) != 3 {
			t.Errorf("got token %q, trusted %v", c.Admin.Token, c.Server.TrustedNets())
		}
		if k := kinds(c); !reflect.DeepEqual(k, allKinds) {
			t.Errorf("tenant kinds: got %v, want %v", k, allKinds)
		}
		api, web := c.TenantByName("api"), c.TenantByName("web")
		if api.CircuitBreaker.MinRequests != 50 || web.CircuitBreaker.MinRequests != 50 {
			t.Errorf("the shared breaker must reach api and web")
		}
		if api.HealthCheck.Path != "/healthz" || web.HealthCheck.Path != "/" || web.HealthCheck.Interval.D() != 10*time.Second {
			t.Errorf("web must merge the shared health check and override its path; got %+v", *web.HealthCheck)
		}
		if web.Balancer != "weighted_round_robin" || web.Upstreams[0].Weight != 9 {
			t.Errorf("web: want weighted upstreams, got %s %+v", web.Balancer, web.Upstreams)
		}
		if c.TenantByName("customers").Domains[0] != "*.customers.example.com" {
			t.Errorf("customers: want a wildcard domain")
		}
	})
	t.Run("production-high-load sizes pools and caps for load", func(t *testing.T) {
		t.Parallel()
		c := load(t, "production-high-load.yaml")
		if c.Server.MaxConns != 500000 || c.Logging.AccessLog || c.Lua.PoolSize != 32 || c.Lua.MaxVMs != 512 {
			t.Errorf("got max_conns %d, access_log %v, lua %d/%d", c.Server.MaxConns, c.Logging.AccessLog, c.Lua.PoolSize, c.Lua.MaxVMs)
		}
		api := c.TenantByName("api")
		if api.Pool.MaxConns != 3072 || api.Pool.MaxConnWait.D() != 50*time.Millisecond || len(api.Upstreams) != 12 {
			t.Errorf("api pool: got %+v with %d upstreams", api.Pool, len(api.Upstreams))
		}
		if api.Retries.BudgetRatio != 0.05 || api.OutlierDetection == nil {
			t.Errorf("api: want a 5%% retry budget and outlier detection")
		}
		if k := kinds(c); !reflect.DeepEqual(k, allKinds) {
			t.Errorf("tenant kinds: got %v, want %v", k, allKinds)
		}
	})
	t.Run("the embedded default loads", func(t *testing.T) {
		t.Parallel()
		if _, err := config.Default(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("every shipped config is covered", func(t *testing.T) {
		t.Parallel()
		files, _ := filepath.Glob(filepath.Join("..", "configs", "*.yaml"))
		if len(files) != 4 {
			t.Errorf("configs/*.yaml: got %v; add a subtest for each new config", files)
		}
	})
}

func TestTrustedNets(t *testing.T) {
	t.Parallel()
	c := mustParse(t, "server: {trusted_proxies: [10.1.2.3/8, 192.168.0.1, \"::1\", \"fd00::/8\"]}\n"+okTenant)
	var got []string
	for _, p := range c.Server.TrustedNets() {
		got = append(got, p.String())
	}
	want := []string{"10.0.0.0/8", "192.168.0.1/32", "::1/128", "fd00::/8"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if !reflect.DeepEqual(c.Server.TrustedProxies, []string{"10.1.2.3/8", "192.168.0.1", "::1", "fd00::/8"}) {
		t.Errorf("TrustedProxies must keep the strings as written, got %v", c.Server.TrustedProxies)
	}
}

func TestConfigErrorf(t *testing.T) {
	t.Parallel()
	c := mustParse(t, "tenants:\n  - name: a\n    path_prefix: /a\n    script: auth.lua\n")
	tests := []struct {
		path string
		want string
	}{
		{"tenants[0].script", "x.yaml:4:13: tenants[0].script: compile failed"},
		{"tenants[0].timeouts.request", "x.yaml:2:5: tenants[0].timeouts.request: compile failed"},
		{"server.listen", "x.yaml: server.listen: compile failed"},
	}
	for _, tt := range tests {
		if got := c.Errorf(tt.path, "compile %s", "failed").Error(); got != tt.want {
			t.Errorf("Errorf(%q): got %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestMergeKeys(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
x-a: &a {interval: 5s, timeout: 1s, path: /a}
x-b: &b {interval: 9s, healthy_threshold: 7}
tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://a:1"}]
    health_check:
      <<: [*a, *b, {unhealthy_threshold: 9}]
      path: /own
`)
	hc := c.Tenants[0].HealthCheck
	got := [5]any{hc.Path, hc.Interval.D(), hc.Timeout.D(), hc.HealthyThreshold, hc.UnhealthyThreshold}
	want := [5]any{"/own", 5 * time.Second, time.Second, 7, 9}
	if got != want {
		t.Errorf("own keys win, then earlier merged mappings: got %v, want %v", got, want)
	}

	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"merging a scalar", "server:\n  <<: 5\n" + okTenant, `x.yaml:2:7: server: expected a mapping or a list of mappings to merge, got 5`},
		{"merging a list of scalars", "server:\n  <<: [5]\n" + okTenant, `x.yaml:2:8: server: expected a mapping to merge, got 5`},
		{"merging an unknown key", "x-a: &a {listn: :1}\nserver:\n  <<: *a\n" + okTenant, `x.yaml:1:10: server: unknown field "listn" (did you mean "listen"?)`},
	}
	for _, tt := range tests {
		_, err := parse(t, tt.yaml)
		if got := errorLines(t, err); got[0] != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got[0], tt.want)
		}
	}
}

func TestExpandedScalarsAreTypedByYAMLRules(t *testing.T) {
	t.Parallel()
	env := map[string]string{"T": "TRUE", "N": "null", "H": "0x10", "F": "0.75", "I": ".inf"}
	yaml := `
admin:
  enabled: ${T}
server:
  max_headers: ${H}
  max_conns: ${N}
tenants:
  - name: t
    path_prefix: /t
    upstreams: [{url: "http://a:1"}]
    circuit_breaker:
      failure_ratio: "${F}"
    retries:
      budget_ratio: ${I}
`
	_, err := config.Parse("x.yaml", []byte(yaml), config.WithEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	want := []string{`x.yaml:14:21: tenants[0].retries.budget_ratio: expected a finite number, got .inf`}
	if got := errorLines(t, err); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	c, err := config.Parse("x.yaml", []byte(strings.Replace(yaml, "${I}", "0.5", 1)), config.WithEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	if err != nil {
		t.Fatal(err)
	}
	got := [4]any{c.Admin.Enabled, c.Server.MaxHeaders, c.Server.MaxConns, c.Tenants[0].CircuitBreaker.FailureRatio}
	if want := [4]any{true, 16, 262144, 0.75}; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
