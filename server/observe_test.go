package server

import (
	"bufio"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// scrape fetches the metrics and returns every sample by its series name
// (metric and labels, as written).
func scrape(t *testing.T, g *gateway, headers ...string) map[string]float64 {
	t.Helper()
	resp := g.get("/metrics", headers...)
	if resp.StatusCode() != 200 {
		t.Fatalf("GET /metrics: status %d: %s", resp.StatusCode(), resp.Body())
	}
	if ct := string(resp.Header.ContentType()); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q, want the Prometheus text format", ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(resp.Body())))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		if _, dup := out[line[:i]]; dup {
			t.Errorf("series %s written twice", line[:i])
		}
		out[line[:i]] = v
	}
	return out
}

const obsScript = `
local r = chi.NewRouter()
r:Get("/hello", function(w, req) w:Write("hi") end)
r:Get("/boom", function(w, req) error("boom") end)
return r
`

// TestMetricsCountAScriptedWorkload runs a known workload through a real
// gateway (a proxied tenant, a tenant whose only upstream is down, a
// scripted tenant, unmatched requests) and checks the scrape counts each
// request exactly once where it belongs.
func TestMetricsCountAScriptedWorkload(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "a")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close() // nothing listens: every attempt is a connect error
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}]
  - name: down
    path_prefix: /down
    retries: {attempts: 0}
    upstreams: [{url: %q}]
  - name: lua
    path_prefix: /lua
    script: app.lua
`, up.url(), deadURL), "scripts/app.lua", obsScript)

	for range 7 {
		if r := g.get("/api/x"); r.StatusCode() != 200 {
			t.Fatalf("GET /api/x: %d", r.StatusCode())
		}
	}
	for range 3 {
		if r := g.do("POST", "", "/api/y", []byte("12345")); r.StatusCode() != 200 {
			t.Fatalf("POST /api/y: %d", r.StatusCode())
		}
	}
	g.do("PROPFIND", "", "/api/z", nil) // a method outside the fixed set
	for range 2 {
		errorBody(t, g.get("/down/x"), 502, codeUpstreamConnect)
	}
	for range 4 {
		if r := g.get("/lua/hello"); r.StatusCode() != 200 {
			t.Fatalf("GET /lua/hello: %d", r.StatusCode())
		}
	}
	errorBody(t, g.get("/lua/boom"), 500, codeInternal)
	errorBody(t, g.get("/nowhere"), 404, codeNotFound)

	m := scrape(t, g)
	api := up.url()
	for series, want := range map[string]float64{
		`keystone_http_requests_total{tenant="api",route="/api",method="GET",code="200"}`:                 7,
		`keystone_http_requests_total{tenant="api",route="/api",method="POST",code="200"}`:                3,
		`keystone_http_requests_total{tenant="api",route="/api",method="OTHER",code="200"}`:               1,
		`keystone_http_requests_total{tenant="down",route="/down",method="GET",code="502"}`:               2,
		`keystone_http_requests_total{tenant="lua",route="/lua",method="GET",code="200"}`:                 4,
		`keystone_http_requests_total{tenant="lua",route="/lua",method="GET",code="500"}`:                 1,
		`keystone_http_requests_total{tenant="(none)",route="",method="GET",code="404"}`:                  1,
		`keystone_http_request_duration_seconds_count{tenant="api",route="/api"}`:                         11,
		`keystone_http_request_duration_seconds_bucket{tenant="api",route="/api",le="+Inf"}`:              11,
		`keystone_http_request_bytes_total{tenant="api",route="/api"}`:                                    15,
		`keystone_upstream_requests_total{tenant="api",upstream="` + api + `",code="200"}`:                11,
		`keystone_upstream_duration_seconds_count{tenant="api",upstream="` + api + `"}`:                   11,
		`keystone_upstream_requests_total{tenant="down",upstream="` + deadURL + `",code="connect_error"}`: 2,
		`keystone_retries_total{tenant="api"}`:                                                            0,
		`keystone_lua_errors_total{tenant="lua",script="app.lua",kind="error"}`:                           1,
		`keystone_lua_errors_total{tenant="lua",script="app.lua",kind="timeout"}`:                         0,
		`keystone_lua_duration_seconds_count{tenant="lua",script="app.lua"}`:                              5,
		`keystone_upstream_healthy{tenant="api",upstream="` + api + `"}`:                                  1,
		`keystone_upstream_inflight{tenant="api",upstream="` + api + `"}`:                                 0,
		`keystone_lua_vms{tenant="lua",script="app.lua",state="idle"}`:                                    2,
		`keystone_lua_inflight{tenant="lua",script="app.lua"}`:                                            0,
		`keystone_lua_vm_waits_total{tenant="lua",script="app.lua"}`:                                      0,
		`keystone_lua_vm_wait_timeouts_total{tenant="lua",script="app.lua"}`:                              0,
		`keystone_lua_vm_wait_seconds_total{tenant="lua",script="app.lua"}`:                               0,
		`keystone_config_last_reload_success`:                                                             1,
		`keystone_build_info{version="test",goversion="` + goVersion() + `"}`:                             1,
	} {
		got, ok := m[series]
		if !ok {
			t.Errorf("%s: missing", series)
			continue
		}
		if got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// Every response byte the api tenant sent is counted: the echo's
	// bodies vary in size, so compare with what the client received.
	if m[`keystone_http_response_bytes_total{tenant="api",route="/api"}`] <= 0 {
		t.Error("keystone_http_response_bytes_total for api is not counted")
	}
	if ts := m[`keystone_config_last_reload_timestamp_seconds`]; ts < 1.7e9 {
		t.Errorf("keystone_config_last_reload_timestamp_seconds = %v, want the load time", ts)
	}
	if _, ok := m[`go_goroutines`]; !ok {
		t.Error("Go runtime metrics missing")
	}
	// The histogram's buckets are cumulative and end at the count.
	prev := 0.0
	for _, le := range []string{"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"} {
		v, ok := m[`keystone_http_request_duration_seconds_bucket{tenant="api",route="/api",le="`+le+`"}`]
		if !ok || v < prev {
			t.Errorf("bucket le=%s = %v (present %v), want cumulative >= %v", le, v, ok, prev)
		}
		prev = v
	}
	// The first scrape counted itself under (admin); the second sees it.
	if got := scrape(t, g)[`keystone_http_requests_total{tenant="(admin)",route="",method="GET",code="200"}`]; got != 1 {
		t.Errorf("scrapes counted = %v, want 1", got)
	}
}

// TestMetricsEndpointIsGuardedLikeAdmin checks that admin.token guards the
// scrape, that the path is configurable, and that disabled metrics leave
// the path to the tenants.
func TestMetricsEndpointIsGuardedLikeAdmin(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "a")
	g := startGateway(t, oneTenant("app", `
admin: {token: s3cret}
metrics: {path: /-/metrics}
`, "", up.url()))
	resp := g.get("/-/metrics")
	errorBody(t, resp, 401, "unauthorized")
	if got := string(resp.Header.Peek("WWW-Authenticate")); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	errorBody(t, g.get("/-/metrics", "Authorization", "Bearer wrong"), 401, "unauthorized")
	errorBody(t, g.do("POST", "", "/-/metrics", nil, "Authorization", "Bearer s3cret"), 405, codeMethodNotAllowed)
	ok := g.get("/-/metrics", "Authorization", "Bearer s3cret")
	if ok.StatusCode() != 200 || !strings.Contains(string(ok.Body()), "keystone_build_info") {
		t.Fatalf("authorized scrape: %d %q", ok.StatusCode(), ok.Body())
	}
	// /metrics is not the metrics path here: the tenant gets it.
	if e := decodeEcho(t, g.get("/metrics")); e.URI != "/metrics" {
		t.Errorf("/metrics reached the upstream as %q", e.URI)
	}

	off := startGateway(t, oneTenant("app", "metrics: {enabled: false}", "", up.url()))
	if e := decodeEcho(t, off.get("/metrics")); e.URI != "/metrics" {
		t.Errorf("with metrics off, /metrics reached the upstream as %q", e.URI)
	}
}

func goVersion() string { return runtime.Version() }

// TestTraceContextPropagatesThroughTwoGateways sends requests through
// gateway A to gateway B to an upstream and checks, at each hop, that the
// trace id is kept and each gateway's span is the next hop's parent.
func TestTraceContextPropagatesThroughTwoGateways(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	b := startGateway(t, oneTenant("b", "", "", up.url()))
	a := startGateway(t, yamlf(`
tenants:
  - name: a
    path_prefix: /
    upstreams: [{url: "http://%s"}]
`, b.addr))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, c := range []struct {
		name        string
		headers     []string
		keepTrace   bool   // the client's trace id reaches the upstream
		callerSpan  string // A's parent span, "" when A starts the trace
		flags       string
		tracestate  string // what the upstream gets
		wantSampled bool
	}{
		{name: "a valid traceparent keeps its trace id and tracestate",
			headers:   []string{"traceparent", "00-" + traceID + "-00f067aa0ba902b7-01", "tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
			keepTrace: true, callerSpan: "00f067aa0ba902b7", flags: "01", tracestate: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{name: "an unsampled trace stays unsampled",
			headers:   []string{"traceparent", "00-" + traceID + "-00f067aa0ba902b7-00"},
			keepTrace: true, callerSpan: "00f067aa0ba902b7", flags: "00"},
		{name: "no traceparent starts a sampled trace", flags: "01"},
		{name: "a malformed traceparent is treated as absent, its tracestate dropped",
			headers: []string{"traceparent", "00-" + strings.ToUpper(traceID) + "-00f067aa0ba902b7-01", "tracestate", "congo=t61rcWkgMzE"},
			flags:   "01"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := a.get("/x", c.headers...)
			e := decodeEcho(t, resp)
			id := string(resp.Header.Peek("X-Request-ID"))
			tps := e.Headers["Traceparent"]
			if len(tps) != 1 || len(tps[0]) != 55 {
				t.Fatalf("upstream got traceparent %q, want one", tps)
			}
			tp := tps[0]
			if got := strings.Join(e.Headers["Tracestate"], ","); got != c.tracestate {
				t.Errorf("upstream got tracestate %q, want %q", got, c.tracestate)
			}
			if !strings.HasSuffix(tp, "-"+c.flags) {
				t.Errorf("upstream got %s, want flags %s", tp, c.flags)
			}
			la, lb := findAccess(t, a, id), findAccess(t, b, id)
			tid := tp[3:35]
			if c.keepTrace && tid != traceID {
				t.Errorf("trace id %s, want the client's %s", tid, traceID)
			}
			if !c.keepTrace && (tid == traceID || tid == strings.Repeat("0", 32)) {
				t.Errorf("trace id %s, want a new one", tid)
			}
			if la["trace_id"] != tid || lb["trace_id"] != tid {
				t.Errorf("access logs have trace ids %v and %v, want %s", la["trace_id"], lb["trace_id"], tid)
			}
			// The chain: client span → A's span → B's span → upstream.
			if c.callerSpan != "" {
				if la["parent_span_id"] != c.callerSpan {
					t.Errorf("A's parent span %v, want the client's %s", la["parent_span_id"], c.callerSpan)
				}
			} else if _, ok := la["parent_span_id"]; ok {
				t.Errorf("A started the trace but logs parent span %v", la["parent_span_id"])
			}
			if lb["parent_span_id"] != la["span_id"] {
				t.Errorf("B's parent span %v, want A's span %v", lb["parent_span_id"], la["span_id"])
			}
			if tp[36:52] != lb["span_id"] {
				t.Errorf("upstream's parent %s, want B's span %v", tp[36:52], lb["span_id"])
			}
			if la["span_id"] == lb["span_id"] {
				t.Error("A and B logged the same span id")
			}
			if la["route"] != "/" || lb["route"] != "/" {
				t.Errorf("routes %v, %v, want /", la["route"], lb["route"])
			}
		})
	}
}

// TestAccessLogSamplingNeverDropsErrors runs successes and failures with a
// sample ratio of 0: only the failures are logged.
func TestAccessLogSamplingNeverDropsErrors(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "a")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/app/fail" {
			ctx.SetStatusCode(503)
		}
	})
	g := startGateway(t, yamlf(`
logging: {access_log_sample: 0}
tenants:
  - name: app
    path_prefix: /app
    upstreams: [{url: %q}]
`, up.url()))
	var failed []string
	for range 20 {
		g.get("/app/ok")
	}
	for range 3 {
		failed = append(failed, string(g.get("/app/fail").Header.Peek("X-Request-ID")))
	}
	failed = append(failed, string(g.get("/elsewhere").Header.Peek("X-Request-ID"))) // 404 of the gateway's own
	for _, id := range failed {
		findAccess(t, g, id)
	}
	if n := len(g.accessLines()); n != len(failed) {
		t.Errorf("%d access lines, want only the %d failures", n, len(failed))
	}
}
