package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/internal/redistest"
)

const sharedLua = `
local r = chi.NewRouter()
r:Get("/set/{key}", function(w, req)
  keystone.store.Set(req:URLParam("key"), req:Query("v"), tonumber(req:Query("ttl")))
  w:Write("ok")
end)
r:Get("/get/{key}", function(w, req)
  local v = keystone.store.Get(req:URLParam("key"))
  if v == nil then
    w:WriteHeader(404)
    w:Write("nil")
    return
  end
  w:Write(v)
end)
r:Get("/incr/{key}", function(w, req)
  local n, err = keystone.store.Incr(req:URLParam("key"), 1, 60)
  if n == nil then
    w:JSON(409, { error = err })
    return
  end
  w:Write(tostring(n))
end)
r:Get("/big", function(w, req)
  keystone.store.Set("big", string.rep("x", 70000))
  w:Write("stored")
end)
r:Get("/limit/{key}", function(w, req)
  local ok, remaining, retry = keystone.limit.Allow(req:URLParam("key"), 1, "1h", 2)
  w:Write(tostring(ok) .. " " .. tostring(remaining) .. " " .. tostring(math.ceil(retry)))
end)
return r
`

func sharedYAML(shared string) string {
	return fmt.Sprintf(`
logging: {access_log: false}
lua: {scripts_dir: scripts}
%s
tenants:
  - name: s
    path_prefix: /s
    script: shared.lua
  - name: other
    path_prefix: /other
    script: shared.lua
`, shared)
}

func body(t *testing.T, g *gateway, uri string) (int, string) {
	t.Helper()
	resp := g.get(uri)
	return resp.StatusCode(), string(resp.Body())
}

// startStoreSharingPair starts two gateways on yaml, whose store is
// shared, and checks what every shared store must do: a value set through
// one is read through the other, another tenant does not see it, and Incr
// counts across both.
func startStoreSharingPair(t *testing.T, yaml string) (a, b *gateway) {
	t.Helper()
	a = startGateway(t, yaml, "scripts/shared.lua", sharedLua)
	b = startGateway(t, yaml, "scripts/shared.lua", sharedLua)
	if c, _ := body(t, a, "/s/set/greeting?v=hello"); c != 200 {
		t.Fatalf("set through a: %d", c)
	}
	if c, v := body(t, b, "/s/get/greeting"); c != 200 || v != "hello" {
		t.Errorf("get through b: %d %q, want 200 \"hello\"", c, v)
	}
	if c, v := body(t, b, "/other/get/greeting"); c != 404 {
		t.Errorf("another tenant reads the key: %d %q, want 404", c, v)
	}
	for i, g := range []*gateway{a, b, a, b} {
		if _, v := body(t, g, "/s/incr/n"); v != fmt.Sprint(i+1) {
			t.Errorf("incr %d: %q, want %d", i+1, v, i+1)
		}
	}
	return a, b
}

// TestScriptStoreSharedThroughRedis runs two gateways on one Redis: what a
// script stores through one is read through the other, Incr counts across
// both, TTLs expire, and tenants do not see each other's keys.
func TestScriptStoreSharedThroughRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	yaml := sharedYAML(fmt.Sprintf("shared: {store: redis, redis: {addr: %q, timeout: 1s}}", srv.Addr))
	a, b := startStoreSharingPair(t, yaml)
	if _, v := body(t, a, "/s/set/greeting?v=notanumber"); v != "ok" {
		t.Fatal(v)
	}
	if c, v := body(t, b, "/s/incr/greeting"); c != 409 || !strings.Contains(v, "not an integer") {
		t.Errorf("incr of a string: %d %q, want 409 with the not-an-integer error", c, v)
	}
	body(t, a, "/s/set/short?v=1&ttl=0.2")
	if c, _ := body(t, b, "/s/get/short"); c != 200 {
		t.Errorf("key with a 200ms ttl missing at once")
	}
	eventually(t, 3*time.Second, "the 200ms key to expire", func() bool { c, _ := body(t, b, "/s/get/short"); return c == 404 })
	// keystone.limit.Allow on Redis: both instances share the bucket.
	for i, want := range []string{"true 1 0", "true 0 0", "false 0 3600"} {
		g := []*gateway{a, b, a}[i]
		if _, v := body(t, g, "/s/limit/k"); v != want {
			t.Errorf("limit call %d: %q, want %q", i+1, v, want)
		}
	}
}

// TestScriptStoreLocalIsBounded checks the local store's value cap (a
// clear script error) and keystone.limit.Allow in memory, and that admin
// shows the store's size.
func TestScriptStoreLocalIsBounded(t *testing.T) {
	t.Parallel()
	yaml := strings.Replace(sharedYAML("shared: {local_max_keys: 64}"), "    script: shared.lua\n  - name: other",
		"    script: shared.lua\n    rate_limits: [{name: all, key: tenant, rate: 1000, burst: 1000}]\n  - name: other", 1)
	g := startGateway(t, yaml, "scripts/shared.lua", sharedLua)
	resp := g.get("/s/big")
	if resp.StatusCode() != 500 {
		t.Errorf("storing a 70000-byte value: status %d, want 500", resp.StatusCode())
	}
	if !strings.Contains(g.logs.String(), "value of 70000 bytes is larger than the 65536-byte limit") {
		t.Errorf("no clear script error in the logs:\n%s", g.logs.String())
	}
	for i := range 1000 {
		body(t, g, fmt.Sprintf("/s/set/k%d?v=x", i))
	}
	st := g.srv.limitsStatus(g.srv.snap.Load().byName["s"])
	if st == nil || st.ScriptStoreKeys <= 0 || st.ScriptStoreKeys > 64+64 {
		t.Errorf("admin limits %+v, want a script store of at most about 64 keys", st)
	}
	for i, want := range []string{"true 1 0", "true 0 0", "false 0 3600"} {
		if _, v := body(t, g, "/s/limit/k"); v != want {
			t.Errorf("limit call %d: %q, want %q", i+1, v, want)
		}
	}
	adm := g.get("/admin/tenants")
	if !strings.Contains(string(adm.Body()), `"script_store_keys"`) || !strings.Contains(string(adm.Body()), `"local_keys"`) {
		t.Errorf("admin tenants lacks the limits object: %s", adm.Body())
	}
}

func TestAdminShowsTheScriptStoreOfATenantWithoutLimits(t *testing.T) {
	t.Parallel()
	g := startGateway(t, sharedYAML(""), "scripts/shared.lua", sharedLua)
	for i := range 3 {
		body(t, g, fmt.Sprintf("/other/set/k%d?v=x", i))
	}
	st := g.srv.limitsStatus(g.srv.snap.Load().byName["other"])
	if st == nil || st.ScriptStoreKeys != 3 || st.Store != "local" {
		t.Errorf("admin limits %+v, want the local store with 3 keys", st)
	}
	if adm := string(g.get("/admin/tenants").Body()); !strings.Contains(adm, `"script_store_keys": 3`) && !strings.Contains(adm, `"script_store_keys":3`) {
		t.Errorf("/admin/tenants does not show the 3 keys: %s", adm)
	}
}
