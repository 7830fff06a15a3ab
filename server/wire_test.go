package server

import (
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// wireConfig is a catch-all tenant on one echo upstream, with header limits
// small enough to test.
const wireConfig = `
server:
  max_headers: 20
  max_header_bytes: 32KiB # so that 1,000 short fields pass the byte limit
  trusted_proxies: [10.0.0.0/8]
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %q}]
`

func TestUserInfoOrNoHostInTheAuthorityIsRejected(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(wireConfig, up.url()))
	for _, c := range []struct{ name, req string }{
		{"user info in Host", "GET /echo HTTP/1.1\r\nHost: admin:hunter2@s.example\r\n\r\n"},
		{"a user name in Host", "GET /echo HTTP/1.1\r\nHost: user@b.example\r\n\r\n"},
		{"a host:port before the @ in Host", "GET /echo HTTP/1.1\r\nHost: a.example:80@b.example\r\n\r\n"},
		{"user info in an absolute-form target", "GET http://admin:hunter2@s.example/echo HTTP/1.1\r\nHost: s.example\r\n\r\n"},
		{"a host:port before the @ in an absolute-form target", "GET http://a.example:80@b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"},
		{"user info in an https absolute-form target", "GET https://u:p@b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"},
		{"an absolute-form target with another scheme", "GET ftp://b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"},
		{"HTTP/1.1 without Host", "GET /echo HTTP/1.1\r\nX-A: 1\r\n\r\n"},
		{"HTTP/1.1 with an empty Host", "GET /echo HTTP/1.1\r\nHost:\r\n\r\n"},
	} {
		out := g.raw(c.req, 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 400") || !strings.Contains(out, `"request_id":"`) {
			t.Errorf("%s: got %.200q, want a 400 JSON error", c.name, out)
		}
		if strings.Count(out, "HTTP/1.1 ") != 1 {
			t.Errorf("%s: the connection must close after the 400: %q", c.name, out)
		}
	}
	if n := up.requests.Load(); n != 0 {
		t.Errorf("%d requests with user info reached the upstream", n)
	}
	// "@" in the path is no authority.
	out := g.raw("GET /a@b HTTP/1.1\r\nHost: s.example\r\nConnection: close\r\n\r\n", 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, `"uri":"/a@b"`) {
		t.Errorf("an @ in the path: %.300q", out)
	}
}

// TestTheGatewayNeverCreatesCredentials sends user info in Host to a tenant
// whose script deletes Authorization: fasthttp's client used to write
// "Authorization: Basic" from the URI's user info after the script ran. A
// script's own Host change must not bring it back either.
func TestTheGatewayNeverCreatesCredentials(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %q}]
    script: creds.lua
`, up.url()), "scripts/creds.lua", `
local r = chi.NewRouter()
r:Get("/*", function(w, req)
  req:Header():Del("Authorization")
  req:Header():Set("Host", "admin:hunter2@s.example")
  keystone.Proxy()(w, req)
end)
return r
`)
	out := g.raw("GET /x HTTP/1.1\r\nHost: admin:hunter2@s.example\r\n\r\n", 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 400") {
		t.Errorf("user info in Host: got %.200q, want 400", out)
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("a request with user info reached the upstream")
	}
	resp := g.get("/x", "Authorization", "Bearer client")
	e := decodeEcho(t, resp)
	if a := e.Headers["Authorization"]; len(a) != 0 {
		t.Errorf("upstream received Authorization %q after the script deleted it", a)
	}
	if strings.Contains(e.Host, "@") {
		t.Errorf("upstream received Host %q", e.Host)
	}
}

func TestGatewayOwnedHeadersAreSentAsOneField(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(wireConfig, up.url()))
	out := g.raw("GET /echo HTTP/1.1\r\nHost: s.example\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n"+
		"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\n"+
		"X-Forwarded-Host: evil.example\r\nX-Forwarded-Host: evil2.example\r\n"+
		"X-Request-ID: bad id\r\nX-Request-ID: second\r\n"+
		"Connection: close\r\n\r\n", 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("got %.300q", out)
	}
	up.mu.Lock()
	last := up.last
	up.mu.Unlock()
	h := &last.Header
	// From an untrusted peer (127.0.0.1 is not in 10.0.0.0/8) every
	// claim is replaced: the chain is kept as what the peer said plus the
	// peer, as one field.
	for _, c := range []struct{ key, want string }{
		{"X-Forwarded-For", "6.6.6.6, 7.7.7.7, 127.0.0.1"},
		{"X-Forwarded-Proto", "http"},
		{"X-Forwarded-Host", "s.example"},
	} {
		all := h.PeekAll(c.key)
		if len(all) != 1 || string(all[0]) != c.want {
			var got []string
			for _, v := range all {
				got = append(got, string(v))
			}
			t.Errorf("%s reached the upstream as %q, want one field %q", c.key, got, c.want)
		}
	}
	if ids := h.PeekAll("X-Request-ID"); len(ids) != 1 || !validRequestID(ids[0]) {
		t.Errorf("X-Request-ID reached the upstream as %d fields: %q", len(ids), ids)
	}
}

func TestTheResponseCarriesOneRequestID(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Add("X-Request-ID", "upstream-1")
		ctx.Response.Header.Add("X-Request-ID", "upstream-2")
	})
	g := startGateway(t, yamlf(wireConfig, up.url()))
	resp := g.get("/", "X-Request-ID", "client-id")
	var ids []string
	for _, v := range resp.Header.PeekAll("X-Request-ID") {
		ids = append(ids, string(v))
	}
	if len(ids) != 1 || ids[0] != "client-id" {
		t.Errorf("response X-Request-ID fields %q, want just the gateway's %q", ids, "client-id")
	}
}

func TestTrustedProxyHeadersAreKeptAndAppended(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	// The test client connects from 127.0.0.1: trust it.
	g := startGateway(t, yamlf(`
server: {trusted_proxies: [127.0.0.0/8]}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	get := func(extra string) (xff, proto, host []string) {
		t.Helper()
		out := g.raw("GET /echo HTTP/1.1\r\nHost: s.example\r\n"+extra+"Connection: close\r\n\r\n", 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Fatalf("got %.300q", out)
		}
		up.mu.Lock()
		h := &up.last.Header
		for _, v := range h.PeekAll("X-Forwarded-For") {
			xff = append(xff, string(v))
		}
		for _, v := range h.PeekAll("X-Forwarded-Proto") {
			proto = append(proto, string(v))
		}
		for _, v := range h.PeekAll("X-Forwarded-Host") {
			host = append(host, string(v))
		}
		up.mu.Unlock()
		return xff, proto, host
	}
	xff, proto, host := get("X-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-For: 3.3.3.3\r\n" +
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example\r\n")
	if len(xff) != 1 || xff[0] != "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want every prior field joined plus the peer, as one field", xff)
	}
	if len(proto) != 1 || proto[0] != "https" {
		t.Errorf("a trusted proxy's single X-Forwarded-Proto must be kept: %q", proto)
	}
	if len(host) != 1 || host[0] != "public.example" {
		t.Errorf("a trusted proxy's single X-Forwarded-Host must be kept: %q", host)
	}
	// Repeated, even a trusted proxy's claim is ambiguous: replaced.
	_, proto, host = get("X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n" +
		"X-Forwarded-Host: a.example\r\nX-Forwarded-Host: b.example\r\n")
	if len(proto) != 1 || proto[0] != "http" {
		t.Errorf("repeated X-Forwarded-Proto from a trusted proxy: %q, want our own one field", proto)
	}
	if len(host) != 1 || host[0] != "s.example" {
		t.Errorf("repeated X-Forwarded-Host from a trusted proxy: %q, want our own one field", host)
	}
}

func TestOnlyHTTP11And10AreServedAndUpstreamsGetHTTP11(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(wireConfig, up.url()))
	for _, v := range []string{"HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"} {
		out := g.raw("GET / "+v+"\r\nHost: s.example\r\n\r\n", 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 505") || !strings.Contains(out, `"error":"http_version_not_supported"`) {
			t.Errorf("%s: got %.200q, want the gateway's 505", v, out)
		}
		if strings.Count(out, "HTTP/1.1 505") != 1 {
			t.Errorf("%s: the connection must close after the 505: %q", v, out)
		}
	}
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("%d requests of unsupported versions reached the upstream", n)
	}
	out := g.raw("GET /ten HTTP/1.0\r\nHost: s.example\r\n\r\n", 3*time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("HTTP/1.0: %.300q", out)
	}
	up.mu.Lock()
	proto := string(up.last.Header.Protocol())
	up.mu.Unlock()
	if proto != "HTTP/1.1" {
		t.Errorf("an HTTP/1.0 request reached the upstream as %s, want HTTP/1.1", proto)
	}
}

func TestTraceIs405UnlessTheTenantAllowsIt(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - {name: closed, path_prefix: /closed, upstreams: [{url: %[1]q}]}
  - {name: open, path_prefix: /open, allow_trace: true, upstreams: [{url: %[1]q}]}
`, up.url()))
	errorBody(t, g.do("TRACE", "", "/closed/x", nil), 405, codeMethodNotAllowed)
	if n := up.requests.Load(); n != 0 {
		t.Fatalf("a refused TRACE reached the upstream")
	}
	if e := decodeEcho(t, g.do("TRACE", "", "/open/x", nil)); e.Method != "TRACE" {
		t.Errorf("allowed TRACE reached the upstream as %q", e.Method)
	}
}

func TestEveryFieldLineCountsAgainstMaxHeaders(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(wireConfig, up.url())) // max_headers: 20
	lines := func(name string, n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(name)
			b.WriteString(": c")
			b.WriteString(strings.Repeat("x", i%7))
			b.WriteString("=1\r\n")
		}
		return b.String()
	}
	for _, c := range []struct {
		name, fields string
		status       string
	}{
		{"20 fields with Host pass", lines("X-A", 19), "200"},
		{"21 fields are 431", lines("X-A", 20), "431"},
		{"19 Cookie fields and Host pass", lines("Cookie", 19), "200"},
		{"20 Cookie fields and Host are 431", lines("Cookie", 20), "431"},
		{"1,000 Cookie fields are 431", lines("Cookie", 1000), "431"},
		{"Cookie and other fields count together", lines("Cookie", 10) + lines("X-A", 10), "431"},
	} {
		out := g.rawExchange("GET /c HTTP/1.1\r\nHost: s.example\r\n"+c.fields+"\r\n", true, 3*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 "+c.status) {
			t.Errorf("%s: got %.200q", c.name, out)
		}
		if c.status == "431" && !strings.Contains(out, `"error":"header_too_large"`) {
			t.Errorf("%s: no JSON error body: %.300q", c.name, out)
		}
	}
}
