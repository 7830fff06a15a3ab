package admin_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/valyala/fasthttp"
)

// source is a fixed Source.
type source []admin.Tenant

func (s source) Tenants() []admin.Tenant {
	out := make([]admin.Tenant, len(s))
	copy(out, s)
	return out
}
func (source) Version() string    { return "v1.2.3" }
func (source) Started() time.Time { return time.Now().Add(-90 * time.Second) }

// writeError replaces the whole response, as the server's does
// (server/errors.go), so headers the handler set before calling it are lost.
func writeError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetBodyString(fmt.Sprintf(`{"error":%q,"message":%q}`, code, msg))
}

func serve(h *admin.Handler, method, path, auth string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI("/admin" + path)
	if auth != "" {
		ctx.Request.Header.Set("Authorization", auth)
	}
	h.Serve(&ctx, []byte(path))
	resp := &fasthttp.Response{}
	ctx.Response.CopyTo(resp)
	return resp
}

func ups(avail ...bool) []admin.Upstream {
	var out []admin.Upstream
	for i, a := range avail {
		out = append(out, admin.Upstream{URL: fmt.Sprintf("http://10.0.0.%d", i+1), Healthy: a, Available: a})
	}
	return out
}

func TestHealthStatusFollowsUpstreamAvailability(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		tenants source
		want    string
		tenant0 string
	}{
		{"every upstream available", source{{Name: "a", Upstreams: ups(true, true)}}, "ok", "ok"},
		{"some tenant has one down", source{{Name: "a", Upstreams: ups(true, false)}, {Name: "b", Upstreams: ups(true)}}, "degraded", "degraded"},
		{"one tenant down, another fine", source{{Name: "a", Upstreams: ups(false)}, {Name: "b", Upstreams: ups(true)}}, "degraded", "down"},
		{"every tenant with upstreams down", source{{Name: "a", Upstreams: ups(false, false)}, {Name: "lua"}}, "down", "down"},
		{"script-only tenants are ok", source{{Name: "lua"}}, "ok", "ok"},
	}
	for _, c := range cases {
		h := admin.New(admin.Config{WriteError: writeError}, c.tenants)
		resp := serve(h, "GET", "/health", "")
		var doc admin.Health
		if err := json.Unmarshal(resp.Body(), &doc); err != nil {
			t.Fatalf("%s: %v: %s", c.name, err, resp.Body())
		}
		if doc.Status != c.want || doc.Tenants[0].Status != c.tenant0 {
			t.Errorf("%s: status %q, tenant %q; want %q, %q", c.name, doc.Status, doc.Tenants[0].Status, c.want, c.tenant0)
		}
		if doc.Version != "v1.2.3" || doc.UptimeSeconds < 89 {
			t.Errorf("%s: version %q uptime %v", c.name, doc.Version, doc.UptimeSeconds)
		}
		if doc.Tenants[len(doc.Tenants)-1].Upstreams == nil {
			t.Errorf("%s: upstreams must be [] not null", c.name)
		}
	}
}

func TestTenantsIsAJSONArray(t *testing.T) {
	t.Parallel()
	h := admin.New(admin.Config{WriteError: writeError}, source{{Name: "api", PathPrefix: "/api", Balancer: "round_robin", Upstreams: ups(true)}})
	resp := serve(h, "GET", "/tenants", "")
	var ts []map[string]any
	if err := json.Unmarshal(resp.Body(), &ts); err != nil {
		t.Fatalf("%v: %s", err, resp.Body())
	}
	if len(ts) != 1 || ts[0]["name"] != "api" || ts[0]["path_prefix"] != "/api" || ts[0]["balancer"] != "round_robin" {
		t.Errorf("tenants: %s", resp.Body())
	}
	if d, ok := ts[0]["domains"].([]any); !ok || len(d) != 0 {
		t.Errorf("domains must be [] when none: %s", resp.Body())
	}
}

func TestTokenMethodsAndUnknownPaths(t *testing.T) {
	t.Parallel()
	h := admin.New(admin.Config{Token: "s3cret", WriteError: writeError}, source{})
	for _, c := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/health", "", 401},
		{"GET", "/health", "Bearer wrong", 401},
		{"GET", "/health", "s3cret", 401},
		{"GET", "/health", "Bearer s3cret", 200},
		{"HEAD", "/tenants", "Bearer s3cret", 200},
		{"POST", "/health", "Bearer s3cret", 405},
		{"GET", "/nope", "Bearer s3cret", 404},
		{"GET", "/nope", "", 401},
	} {
		resp := serve(h, c.method, c.path, c.auth)
		if resp.StatusCode() != c.want {
			t.Errorf("%s %s (auth %q) = %d, want %d", c.method, c.path, c.auth, resp.StatusCode(), c.want)
		}
		if got := string(resp.Header.Peek("WWW-Authenticate")); c.want == 401 && got != `Bearer realm="keystone-admin"` {
			t.Errorf("%s %s (auth %q): 401 with WWW-Authenticate %q, want Bearer realm=\"keystone-admin\" (RFC 6750 §3)", c.method, c.path, c.auth, got)
		}
		if got := string(resp.Header.Peek("Allow")); c.want == 405 && got != "GET, HEAD" {
			t.Errorf("%s %s: 405 with Allow %q, want \"GET, HEAD\"", c.method, c.path, got)
		}
	}
}

func ExampleTenantStatus() {
	fmt.Println(admin.TenantStatus(3, 3), admin.TenantStatus(1, 3), admin.TenantStatus(0, 3), admin.TenantStatus(0, 0))
	// Output: ok degraded down ok
}
