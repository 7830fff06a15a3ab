package server

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestRoundRobinSpreadsRequestsEvenlyAcrossUpstreams(t *testing.T) {
	t.Parallel()
	a, b, c := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "c")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}, {url: %q}, {url: %q}]
`, a.url(), b.url(), c.url()))
	seen := map[string]int{}
	for range 30 {
		resp := g.get("/api/x")
		seen[decodeEcho(t, resp).ID]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if seen[id] != 10 {
			t.Errorf("upstream %s got %d of 30 requests, want 10 (%v)", id, seen[id], seen)
		}
	}
}

func TestForwardedRequestCarriesProxyHeadersAndNoHopByHopHeaders(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    domains: [api.example.com]
    upstreams: [{url: %q}]
`, up.url()))
	resp := g.do("GET", "API.Example.com:8080", "/v1/items?q=1", nil,
		"Connection", "keep-alive, X-Secret-Hop, X-OTHER",
		"X-Secret-Hop", "must not pass",
		"X-Other", "must not pass",
		"Keep-Alive", "timeout=5",
		"Proxy-Authorization", "Basic Zm9vOmJhcg==",
		"Upgrade", "websocket",
		"Te", "trailers",
		"X-Forwarded-For", "203.0.113.9",
		"X-Kept", "yes",
	)
	e := decodeEcho(t, resp)
	for _, h := range []string{"X-Secret-Hop", "X-Other", "Keep-Alive", "Proxy-Authorization", "Upgrade", "Te", "Connection"} {
		if v, ok := e.Headers[h]; ok && !(h == "Connection" && len(v) == 0) {
			t.Errorf("hop-by-hop header %s reached the upstream: %v", h, v)
		}
	}
	if got := e.Headers["X-Kept"]; len(got) != 1 || got[0] != "yes" {
		t.Errorf("end-to-end header X-Kept = %v, want [yes]", got)
	}
	if got := e.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %v, want the chain with the peer appended", got)
	}
	if got := e.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "http" {
		t.Errorf("X-Forwarded-Proto = %v, want [http]", got)
	}
	if got := e.Headers["X-Forwarded-Host"]; len(got) != 1 || !strings.EqualFold(got[0], "api.example.com:8080") {
		t.Errorf("X-Forwarded-Host = %v, want the client's host", got)
	}
	if !strings.EqualFold(e.Host, "api.example.com:8080") {
		t.Errorf("upstream saw Host %q, want the client's Host preserved", e.Host)
	}
	if e.URI != "/v1/items?q=1" {
		t.Errorf("upstream saw %q, want /v1/items?q=1", e.URI)
	}
	id := string(resp.Header.Peek("X-Request-ID"))
	if len(id) != 32 || e.Headers["X-Request-Id"] == nil && e.Headers["X-Request-ID"] == nil {
		t.Errorf("generated request id %q must be 32 hex chars and reach the upstream (%v)", id, e.Headers)
	}
}

func TestRequestIDIsPropagatedWhenValidAndReplacedWhenNot(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, oneTenant("api", "", "", up.url()))
	resp := g.get("/x", "X-Request-ID", "trace-abc-123")
	if got := string(resp.Header.Peek("X-Request-ID")); got != "trace-abc-123" {
		t.Errorf("valid client id not propagated to the client: %q", got)
	}
	if got := decodeEcho(t, resp).Headers["X-Request-Id"]; len(got) != 1 || got[0] != "trace-abc-123" {
		t.Errorf("valid client id not propagated upstream: %v", got)
	}
	resp = g.get("/x", "X-Request-ID", "bad id with spaces\"{")
	if got := string(resp.Header.Peek("X-Request-ID")); len(got) != 32 {
		t.Errorf("malformed client id should be replaced by a generated one, got %q", got)
	}
}

func TestPreserveHostFalseSendsTheUpstreamHost(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /api
    strip_prefix: true
    preserve_host: false
    upstreams: [{url: %q}]
`, up.url()))
	e := decodeEcho(t, g.do("GET", "client.example", "/api/users/7", nil))
	if e.Host != up.addr {
		t.Errorf("Host = %q, want the upstream's %q", e.Host, up.addr)
	}
	if e.URI != "/users/7" {
		t.Errorf("strip_prefix: upstream saw %q, want /users/7", e.URI)
	}
	if got := e.Headers["X-Forwarded-Host"]; len(got) != 1 || got[0] != "client.example" {
		t.Errorf("X-Forwarded-Host = %v, want [client.example]", got)
	}
}

func TestStripPrefixKeepsEncodedBytesEncoded(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: %q}]
`, up.url()))
	cases := []struct{ name, in, want string }{
		{"bare prefix becomes root", "/api", "/"},
		{"an encoded percent stays encoded", "/api/a%2525b", "/a%2525b"},
		{"encoded dots stay data, never become a traversal", "/api/x/%252e%252e/admin", "/x/%252e%252e/admin"},
		{"a space stays encoded", "/api/a%20b", "/a%20b"},
	}
	for _, c := range cases {
		if got := decodeEcho(t, g.get(c.in)).URI; got != c.want {
			t.Errorf("%s: %s forwarded as %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

func TestResponseHopByHopHeadersAreStrippedAndClientConnectionKept(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Connection", "X-Internal")
		ctx.Response.Header.Set("X-Internal", "secret")
		ctx.Response.Header.Set("Keep-Alive", "timeout=1")
		ctx.Response.Header.Set("X-Public", "ok")
		ctx.SetBodyString("hi")
	})
	g := startGateway(t, oneTenant("api", "", "", up.url()))
	resp := g.raw("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", 2*time.Second)
	if n := strings.Count(resp, "HTTP/1.1 200"); n != 2 {
		t.Fatalf("want two answers on one keep-alive connection, got %d:\n%s", n, resp)
	}
	lower := strings.ToLower(resp)
	for _, h := range []string{"x-internal", "keep-alive"} {
		if strings.Contains(lower, h+":") {
			t.Errorf("hop-by-hop response header %q reached the client:\n%s", h, resp)
		}
	}
	if !strings.Contains(lower, "x-public: ok") {
		t.Errorf("end-to-end response header missing:\n%s", resp)
	}
}

func TestHeadAndBodilessStatusesHaveNoBody(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/204":
			ctx.SetStatusCode(204)
		case "/304":
			ctx.SetStatusCode(304)
			ctx.Response.Header.Set("ETag", `"v1"`)
		default:
			ctx.SetBodyString(strings.Repeat("x", 1234))
		}
	})
	g := startGateway(t, oneTenant("api", "", "", up.url()))
	out := g.raw("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2*time.Second)
	parts := strings.Split(out, "HTTP/1.1 ")
	if len(parts) != 4 {
		t.Fatalf("want 3 responses, got:\n%s", out)
	}
	head, r204, r304 := parts[1], parts[2], parts[3]
	if !strings.HasPrefix(head, "200") || !strings.Contains(head, "Content-Length: 1234") || strings.Contains(head, "xxx") {
		t.Errorf("HEAD must carry the length but no body:\n%s", head)
	}
	if !strings.HasPrefix(r204, "204") || !strings.HasSuffix(r204, "\r\n\r\n") {
		t.Errorf("204 must have no body:\n%q", r204)
	}
	if !strings.HasPrefix(r304, "304") || !strings.HasSuffix(r304, "\r\n\r\n") || !strings.Contains(strings.ToLower(r304), `etag: "v1"`) {
		t.Errorf("304 must have no body and keep its validators:\n%q", r304)
	}
}

func TestNoMatchingTenantAnswers404JSON(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}]
`, up.url()))
	errorBody(t, g.get("/apix"), 404, "not_found")
	errorBody(t, g.get("/"), 404, "not_found")
	if up.requests.Load() != 0 {
		t.Errorf("upstream got %d requests, want 0", up.requests.Load())
	}
}

func TestTenantPrecedenceEndToEnd(t *testing.T) {
	t.Parallel()
	hybrid, hostOnly, wildcard, pathOnly, deeper := startEcho(t, "hybrid"), startEcho(t, "host"), startEcho(t, "wild"), startEcho(t, "path"), startEcho(t, "deeper")
	g := startGateway(t, yamlf(`
tenants:
  - {name: hybrid, domains: [api.example.com], path_prefix: /v2, upstreams: [{url: %q}]}
  - {name: host, domains: [api.example.com], upstreams: [{url: %q}]}
  - {name: wild, domains: ["*.example.com"], upstreams: [{url: %q}]}
  - {name: path, path_prefix: /v2, upstreams: [{url: %q}]}
  - {name: deeper, path_prefix: /v2/admin-ui, upstreams: [{url: %q}]}
`, hybrid.url(), hostOnly.url(), wildcard.url(), pathOnly.url(), deeper.url()))
	cases := []struct{ host, path, want string }{
		{"api.example.com", "/v2/x", "hybrid"},
		{"API.EXAMPLE.COM:443", "/v2", "hybrid"},
		{"api.example.com", "/v2x", "host"},
		{"api.example.com", "/other", "host"},
		{"www.example.com", "/v2/x", "wild"},
		{"a.b.example.com", "/v2/x", "path"},
		{"example.com", "/v2/y", "path"},
		{"other.test", "/v2/admin-ui/z", "deeper"},
		{"other.test", "/v2/admin-uix", "path"},
	}
	for _, c := range cases {
		got := decodeEcho(t, g.do("GET", c.host, c.path, nil)).ID
		if got != c.want {
			t.Errorf("Host %q path %q went to %q, want %q", c.host, c.path, got, c.want)
		}
	}
}

func TestUpstreamConnectFailureAnswers502JSON(t *testing.T) {
	t.Parallel()
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	g := startGateway(t, oneTenant("api", "", "retries: {attempts: 0}", deadURL))
	start := time.Now()
	errorBody(t, g.get("/x"), 502, "upstream_connect_failed")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a refused connection took %v to report", d)
	}
}

func TestHangingUpstreamAnswers504WithinTheRequestTimeout(t *testing.T) {
	t.Parallel()
	ln := hangingListener(t)
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: "http://%s"}]
    timeouts: {connect: 1s, request: 300ms}
    retries: {attempts: 0}
`, ln))
	start := time.Now()
	errorBody(t, g.get("/slow"), 504, "upstream_timeout")
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("504 after %v, want about the 300ms request timeout", d)
	}
}

func TestAccessLogLineHasTheRequestFacts(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
logging: {access_log: true}
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}]
`, up.url()))
	resp := g.get("/api/log-me", "X-Request-ID", "log-test-1")
	if resp.StatusCode() != 200 {
		t.Fatalf("status %d", resp.StatusCode())
	}
	var line map[string]any
	eventually(t, 2*time.Second, "the access log line", func() bool {
		for _, l := range g.accessLines() {
			if l["request_id"] == "log-test-1" {
				line = l
				return true
			}
		}
		return false
	})
	want := map[string]any{"tenant": "api", "method": "GET", "path": "/api/log-me", "status": float64(200),
		"upstream": up.url(), "client_ip": "127.0.0.1", "msg": "request"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("access log lacks duration_ms: %v", line)
	}
	if b, _ := line["bytes"].(float64); b <= 0 {
		t.Errorf("access log bytes = %v, want the body size", line["bytes"])
	}
}

func TestPanicInAHandlerAnswers500AndTheGatewayKeepsServing(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - {name: boom, path_prefix: /boom, upstreams: [{url: %q}]}
  - {name: fine, path_prefix: /fine, upstreams: [{url: %q}]}
`, up.url(), up.url()))
	g.srv.snap.Load().byName["boom"].serve = func(*fasthttp.RequestCtx, *reqState) { panic("handler bug") }
	errorBody(t, g.get("/boom/x"), 500, "internal_error")
	if resp := g.get("/fine/x"); resp.StatusCode() != 200 {
		t.Fatalf("gateway stopped serving after a panic: %d", resp.StatusCode())
	}
	if !strings.Contains(g.logs.String(), "handler bug") || !strings.Contains(g.logs.String(), "goroutine") {
		t.Errorf("panic not logged with its stack:\n%s", g.logs.String())
	}
}

func TestAdminHealthAndTenants(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    balancer: round_robin
    upstreams: [{url: %q}]
`, up.url()))
	resp := g.get("/admin/health")
	if resp.StatusCode() != 200 || !strings.HasPrefix(string(resp.Header.ContentType()), "application/json") {
		t.Fatalf("health: %d %s", resp.StatusCode(), resp.Header.ContentType())
	}
	var h struct {
		Status  string  `json:"status"`
		Uptime  float64 `json:"uptime_seconds"`
		Version string  `json:"version"`
		Tenants []struct {
			Name      string `json:"name"`
			Status    string `json:"status"`
			Upstreams []struct {
				URL     string `json:"url"`
				Healthy bool   `json:"healthy"`
			} `json:"upstreams"`
		} `json:"tenants"`
	}
	if err := json.Unmarshal(resp.Body(), &h); err != nil {
		t.Fatal(err)
	}
	if h.Status != "ok" || h.Version != "test" || h.Uptime < 0 || len(h.Tenants) != 1 ||
		h.Tenants[0].Name != "api" || h.Tenants[0].Status != "ok" ||
		len(h.Tenants[0].Upstreams) != 1 || h.Tenants[0].Upstreams[0].URL != up.url() || !h.Tenants[0].Upstreams[0].Healthy {
		t.Errorf("unexpected health document: %s", resp.Body())
	}

	resp = g.get("/admin/tenants")
	var ts []struct {
		Name       string   `json:"name"`
		Domains    []string `json:"domains"`
		PathPrefix string   `json:"path_prefix"`
		Balancer   string   `json:"balancer"`
		Upstreams  []struct {
			URL string `json:"url"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(resp.Body(), &ts); err != nil {
		t.Fatalf("tenants: %v: %s", err, resp.Body())
	}
	if len(ts) != 1 || ts[0].Name != "api" || len(ts[0].Domains) != 1 || ts[0].Domains[0] != "api.example.com" ||
		ts[0].PathPrefix != "/api" || ts[0].Balancer != "round_robin" || len(ts[0].Upstreams) != 1 {
		t.Errorf("unexpected tenants document: %s", resp.Body())
	}
	errorBody(t, g.get("/admin/nope"), 404, "not_found")
	errorBody(t, g.do("POST", "", "/admin/health", []byte("x")), 405, "method_not_allowed")
}

func TestAdminTokenCannotBeBypassedBySpelling(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, oneTenant("svc", "admin: {token: s3cret}", "", up.url()))
	for _, p := range []string{"/admin/health", "//admin/health", "/%%61dmin/health", "/svc/%%2e%%2e/admin/health", "/admin/./health", "/ADMIN/../admin/health", "/admin%%2Fhealth"} {
		p = strings.ReplaceAll(p, "%%", "%")
		errorBody(t, g.get(p), 401, "unauthorized")
	}
	if got := g.get("/admin/health", "Authorization", "Bearer s3cret"); got.StatusCode() != 200 {
		t.Errorf("right token: %d", got.StatusCode())
	}
	errorBody(t, g.get("/admin/health", "Authorization", "Bearer wrong"), 401, "unauthorized")
	if n := up.requests.Load(); n != 0 {
		t.Errorf("%d admin-looking requests leaked to the tenant upstream", n)
	}
}
