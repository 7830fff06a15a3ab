package luavm

import (
	"os"
	"strings"
	"testing"
)

// TestExampleScripts loads every configs/scripts/ex_*.lua with a Host that
// knows the tenants they name, and checks what each one is for.
func TestExampleScripts(t *testing.T) {
	e := newEnv(t)
	e.ups["api-canary"] = e.ups["api2"]
	t.Setenv("KEYSTONE_SCRIPT_API_KEYS", "key-one:alice,key-two:bob")
	t.Setenv("KEYSTONE_SCRIPT_MAINTENANCE_TOKEN", "s3cret")
	fsys := os.DirFS("../configs/scripts")

	tests := []struct {
		script string
		steps  []step
	}{
		{"ex_auth.lua", []step{
			{req: get("/items"), status: 401, contains: []string{"X-API-Key"}},
			{req: request{method: "GET", path: "/items", headers: map[string]string{"X-API-Key": "key-two"}},
				status: 200, upstream: "api", headers: map[string]string{"X-RateLimit-Remaining": "99"},
				check: func(t *testing.T, r result) {
					if e := upstreamEcho(t, r.body); e.Headers["X-Client-Id"] != "bob" || e.Headers["X-Api-Key"] != "" {
						t.Errorf("upstream saw %v", e.Headers)
					}
				}},
		}},
		{"ex_transform.lua", []step{
			{req: get("/profile"), status: 200, headers: map[string]string{"X-Content-Type-Options": "nosniff"},
				check: func(t *testing.T, r result) {
					wantJSON(t, r.body, map[string]any{"status": 200.0})
					if !strings.Contains(r.body, `"data":{`) || !strings.Contains(r.body, `"X-Original-Path":"/profile"`) {
						t.Errorf("body %s, want the upstream answer in an envelope", r.body)
					}
				}},
			{req: request{method: "POST", path: "/other", headers: map[string]string{"Cookie": "a=b"}}, status: 200, upstream: "api",
				headers: map[string]string{"Referrer-Policy": "no-referrer"}},
		}},
		{"ex_ab_split.lua", []step{
			{req: request{method: "GET", path: "/x", headers: map[string]string{"Cookie": "ab=b"}}, status: 200, upstream: "api2",
				headers: map[string]string{"X-AB-Variant": "b", "Set-Cookie": absent}},
			{req: request{method: "GET", path: "/x", headers: map[string]string{"Cookie": "ab=a"}}, status: 200, upstream: "api",
				headers: map[string]string{"X-AB-Variant": "a"}},
			{req: get("/x"), status: 200, check: func(t *testing.T, r result) {
				if v := r.headers["X-AB-Variant"]; !strings.Contains(r.headers["Set-Cookie"], "ab="+v) {
					t.Errorf("variant %q with cookie %q", v, r.headers["Set-Cookie"])
				}
			}},
		}},
		{"ex_mock_api.lua", []step{
			{req: get("/users/2"), status: 200, body: `{"id":2,"name":"Grace Hopper","role":"user"}`, headers: map[string]string{"X-Mock": "true"}},
			{req: get("/users/9"), status: 404, body: `{"error":"user not found","id":"9"}`},
			{req: request{method: "POST", path: "/users", body: `{"name":"Linus"}`}, status: 201,
				body: `{"id":3,"name":"Linus","role":"user"}`, headers: map[string]string{"Location": "/users/3"}},
			{req: request{method: "POST", path: "/users", body: `nope`}, status: 400},
			{req: get("/users"), status: 200, contains: []string{`"count":3`, `"name":"Linus"`}},
			{req: request{method: "DELETE", path: "/users/1"}, status: 204},
			{req: get("/users/1"), status: 404},
			{req: get("/nothing"), status: 404, body: `{"error":"no such endpoint","path":"/nothing"}`},
		}},
		{"ex_rewrite.lua", []step{
			{req: get("/old/a/b"), status: 200, check: func(t *testing.T, r result) { wantPath(t, r, "/new/a/b") }},
			{req: get("/v1/users/7?x=1"), status: 200, check: func(t *testing.T, r result) {
				if e := upstreamEcho(t, r.body); e.Path != "/users/7" || e.Query != "x=1&version=1" {
					t.Errorf("upstream saw %s?%s", e.Path, e.Query)
				}
			}},
			{req: get("/docs"), status: 301, headers: map[string]string{"Location": "http://test.local/docs/"}},
			{req: get("/docs/intro"), status: 200, check: func(t *testing.T, r result) { wantPath(t, r, "/docs/intro") }},
		}},
		{"ex_maintenance.lua", []step{
			{req: get("/x"), status: 200, upstream: "api"},
			{req: request{method: "PUT", path: "/_maintenance/on"}, status: 403},
			{req: request{method: "PUT", path: "/_maintenance/on", headers: map[string]string{"X-Maintenance-Token": "s3cret"}}, status: 200},
			{req: get("/x"), status: 503, headers: map[string]string{"Retry-After": "300"}},
			{req: get("/health"), status: 200, upstream: "api"},
			{req: request{method: "PUT", path: "/_maintenance/off", headers: map[string]string{"X-Maintenance-Token": "s3cret"}}, status: 200},
			{req: get("/x"), status: 200, upstream: "api"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			f := serveScript(t, e.load(t, testConfig(&logBuffer{}), fsys, tt.script, Options{}))
			for _, st := range tt.steps {
				r := f.send(t, st.req)
				checkStep(t, st, r)
			}
		})
	}
}
