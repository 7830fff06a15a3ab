package server

import (
	"fmt"
	"strings"
	"testing"
)

const runtimeRoutesScript = `
local r = chi.NewRouter()
r:Get("/static", function(w, req) w:Write("static %s") end)
r:Post("/add/{name}", function(w, req)
  local name = req:URLParam("name")
  local ok, err = keystone.AddRoute("GET", "/dyn/" .. name, function(w, req) w:Write("dynamic " .. name) end)
  if ok then w:Write("added") else w:WriteHeader(409); w:Write(err) end
end)
r:Post("/try", function(w, req)
  local ok, err = keystone.AddRoute("GET", req:Body(), function(w, req) w:Write("x") end)
  if ok then w:Write("added") else w:WriteHeader(409); w:Write(err) end
end)
r:Post("/capture", function(w, req)
  local t = {}
  local ok, err = keystone.AddRoute("GET", "/cap", function(w, req) w:Write(tostring(t)) end)
  w:WriteHeader(ok and 200 or 409); w:Write(err or "added")
end)
r:Delete("/add/{name}", function(w, req)
  local ok, err = keystone.RemoveRoute("GET", "/dyn/" .. req:URLParam("name"))
  if ok then w:Write("removed") else w:WriteHeader(409); w:Write(err) end
end)
r:Get("/routes", function(w, req)
  local out = {}
  for _, rt in ipairs(keystone.Routes()) do out[#out + 1] = rt.method .. " " .. rt.pattern .. " " .. rt.kind end
  w:Write(table.concat(out, "\n"))
end)
return r
`

// TestLuaRuntimeRoutes covers keystone.AddRoute, RemoveRoute and Routes:
// a route added by a handler serves at once in every VM, bad patterns,
// clashes with static routes, captured tables and the per-tenant bound are
// errors returned to the script with the live router unchanged, and the
// routes are kept by a reload that leaves the script alone and dropped
// (and counted) by one that changes it.
func TestLuaRuntimeRoutes(t *testing.T) {
	script := func(v string) string { return fmt.Sprintf(runtimeRoutesScript, v) }
	yaml := strings.Replace(luaBlock, "lua:\n", "lua:\n  max_runtime_routes: 3\n", 1) + `
tenants:
  - name: app
    path_prefix: /app
    script: app.lua
`
	d := newConfDir(t, yaml, "scripts/app.lua", script("v1"))
	g := d.start(t)
	body := func(method, uri string, b []byte) (int, string) {
		resp := g.do(method, "", uri, b)
		return resp.StatusCode(), string(resp.Body())
	}

	if code, _ := body("GET", "/app/dyn/a", nil); code != 404 {
		t.Fatalf("before AddRoute: %d, want 404", code)
	}
	if code, b := body("POST", "/app/add/a", nil); code != 200 || b != "added" {
		t.Fatalf("AddRoute: %d %q", code, b)
	}
	// pool_size 2: both VMs, and any new one, serve it.
	for range 6 {
		if code, b := body("GET", "/app/dyn/a", nil); code != 200 || b != "dynamic a" {
			t.Fatalf("runtime route: %d %q", code, b)
		}
	}
	for _, c := range []struct{ name, uri, body, want string }{
		{"a bad pattern", "/app/try", "/{", "keystone.AddRoute: pattern \"/{\""},
		{"a pattern without a slash", "/app/try", "dyn", `expected a pattern starting with "/"`},
		{"the same pattern as a static route", "/app/try", "/static", "clashes with a route"},
		{"an existing runtime route", "/app/add/a", "", "already exists"},
		{"a handler capturing a table", "/app/capture", "", `handler captures "t", a table`},
	} {
		if code, b := body("POST", c.uri, []byte(c.body)); code != 409 || !strings.Contains(b, c.want) {
			t.Errorf("%s: %d %q, want 409 containing %q", c.name, code, b, c.want)
		}
	}
	if code, b := body("GET", "/app/static", nil); b != "static v1" {
		t.Errorf("the static route after refused AddRoutes: %d %q", code, b)
	}
	body("POST", "/app/add/b", nil)
	body("POST", "/app/add/c", nil)
	if code, b := body("POST", "/app/add/d", nil); code != 409 || !strings.Contains(b, "lua.max_runtime_routes") {
		t.Errorf("past the bound: %d %q", code, b)
	}
	if code, b := body("DELETE", "/app/add/c", nil); code != 200 || b != "removed" {
		t.Errorf("RemoveRoute: %d %q", code, b)
	}
	if code, _ := body("GET", "/app/dyn/c", nil); code != 404 {
		t.Errorf("a removed route: %d, want 404", code)
	}
	if code, b := body("DELETE", "/app/add/c", nil); code != 409 || !strings.Contains(b, "no runtime route") {
		t.Errorf("removing it again: %d %q", code, b)
	}
	_, routes := body("GET", "/app/routes", nil)
	for _, want := range []string{"GET /app/static static", "GET /app/dyn/a runtime", "GET /app/dyn/b runtime"} {
		if !strings.Contains(routes, want) {
			t.Errorf("keystone.Routes() lacks %q:\n%s", want, routes)
		}
	}
	adminRoutes := string(g.get("/admin/routes").Body())
	if !strings.Contains(adminRoutes, `"pattern": "/app/dyn/a"`) || !strings.Contains(adminRoutes, `"kind": "runtime"`) {
		t.Errorf("/admin/routes lacks the runtime route:\n%s", adminRoutes)
	}
	if !strings.Contains(g.logs.String(), `"component":"audit","what":"route_add","who":"127.0.0.1","result":"ok","tenant":"app","method":"GET","pattern":"/dyn/a"`) {
		t.Errorf("no audit line for AddRoute:\n%s", g.logs.String())
	}

	// A reload that keeps the script keeps its runtime routes.
	d.write("keystone.yaml", yaml+"  - name: other\n    path_prefix: /other\n    script: app.lua\n")
	if rec := g.reload(); rec.RuntimeRoutesDropped != 0 {
		t.Errorf("unchanged script: %d runtime routes dropped", rec.RuntimeRoutesDropped)
	}
	if code, b := body("GET", "/app/dyn/b", nil); code != 200 || b != "dynamic b" {
		t.Errorf("after a reload that kept the script: %d %q", code, b)
	}
	// One that changes it drops them, and says how many.
	d.write("scripts/app.lua", script("v2"))
	if rec := g.reload(); rec.RuntimeRoutesDropped != 2 {
		t.Errorf("changed script: %d runtime routes dropped, want 2", rec.RuntimeRoutesDropped)
	}
	if code, _ := body("GET", "/app/dyn/b", nil); code != 404 {
		t.Errorf("after the script changed: %d, want 404", code)
	}
	if _, b := body("GET", "/app/static", nil); b != "static v2" {
		t.Errorf("static after reload: %q", b)
	}
}
