package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
	"github.com/valyala/fasthttp"
)

// confDir is a config folder on disk that a test edits between reloads.
type confDir struct {
	t    testing.TB
	dir  string
	path string // keystone.yaml
}

func newConfDir(t testing.TB, yaml string, files ...string) *confDir {
	t.Helper()
	d := &confDir{t: t, dir: t.TempDir()}
	d.path = filepath.Join(d.dir, "keystone.yaml")
	d.write("keystone.yaml", yaml)
	for i := 0; i+1 < len(files); i += 2 {
		d.write(files[i], files[i+1])
	}
	return d
}

// write replaces a file the way editors that save by rename do: a reader
// sees the old content or the new, never half of it.
func (d *confDir) write(name, content string) {
	d.t.Helper()
	p := filepath.Join(d.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		d.t.Fatal(err)
	}
	tmp := p + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		d.t.Fatal(err)
	}
}

func (d *confDir) load() (*config.Config, error) { return config.Load(d.path) }

// start serves the folder's config with Options.Load reading it again.
func (d *confDir) start(t *testing.T) *gateway {
	t.Helper()
	cfg, err := d.load()
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	return startGatewayOpts(t, cfg, Options{Load: d.load})
}

// reload reloads from disk and fails the test unless it was applied.
func (g *gateway) reload() admin.Reload {
	g.t.Helper()
	rec := g.srv.ReloadFromDisk(TriggerAPI, admin.Caller{})
	if rec.Status != "ok" {
		g.t.Fatalf("reload refused: %s", rec.Error)
	}
	return rec
}

// versionedUpstream answers every request with its version in a header and
// the body length it received.
func versionedUpstream(t *testing.T, version string) *echo {
	t.Helper()
	e := startEcho(t, version)
	e.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Upstream-Version", version)
		var n countWriter
		_ = ctx.Request.BodyWriteTo(&n)
		ctx.SetBodyString(fmt.Sprintf("%s %d", version, n))
	})
	return e
}

// countWriter counts the bytes written to it.
type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

const reloadScript = `
local r = chi.NewRouter()
r:Post("/echo", function(w, req)
  w:Header():Set("X-Script-Version", "%s")
  keystone.Proxy("api")(w, req)
end)
r:Get("/hello", function(w, req)
  w:Header():Set("X-Script-Version", "%s")
  w:Write("hello %s")
end)
return r
`

func reloadConfig(upURL, stableURL string) string {
	return luaBlock + yamlf(`
logging: {access_log: false}
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}]
    pool: {idle_timeout: 300ms}
  - name: lua
    path_prefix: /lua
    script: app.lua
  - name: stable
    path_prefix: /stable
    upstreams: [{url: %q}]
    pool: {idle_timeout: 300ms}
`, upURL, stableURL)
}

// TestReloadUnderLoadServesWholeRuntimes is issue 9's "Done when": keep-alive
// clients on a proxied route, a Lua route (which proxies on through
// keystone.Proxy) and admin endpoints, all with request bodies, while the
// gateway reloads 50 times alternating two configs (upstream A or B) and
// two versions of the script (v1 paired with A, v2 with B). Every request
// must succeed on its connection, and every response must come wholly from
// one runtime: a v1 script never forwards to B, nor v2 to A.
func TestReloadUnderLoadServesWholeRuntimes(t *testing.T) {
	upA, upB := versionedUpstream(t, "A"), versionedUpstream(t, "B")
	stable := versionedUpstream(t, "S")
	script := func(v string) string { return fmt.Sprintf(reloadScript, v, v, v) }
	d := newConfDir(t, reloadConfig(upA.url(), stable.url()), "scripts/app.lua", script("v1"))
	g := d.start(t)

	pairs := map[string]string{"v1": "A", "v2": "B"}
	var served, failed atomic.Int64
	var failures sync.Map
	fail := func(what string) {
		failed.Add(1)
		failures.LoadOrStore(what, true)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	body := bytes.Repeat([]byte("x"), 2048)
	enable, _ := json.Marshal(map[string]string{"tenant": "stable", "url": stable.url()})
	client := func(kind string) {
		defer wg.Done()
		c := &fasthttp.HostClient{Addr: g.addr, MaxConns: 1, MaxIdemponentCallAttempts: 1}
		defer c.CloseIdleConnections()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for {
			select {
			case <-stop:
				return
			default:
			}
			req.Reset()
			resp.Reset()
			req.Header.SetMethod("POST")
			req.SetBody(body)
			switch kind {
			case "proxy":
				req.SetRequestURI("http://" + g.addr + "/api/items")
			case "lua":
				req.SetRequestURI("http://" + g.addr + "/lua/echo")
			case "admin":
				req.SetRequestURI("http://" + g.addr + "/admin/upstreams/enable")
				req.SetBody(enable)
			}
			if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
				fail(kind + ": " + err.Error())
				continue
			}
			served.Add(1)
			if resp.StatusCode() != 200 {
				fail(fmt.Sprintf("%s: status %d %q", kind, resp.StatusCode(), resp.Body()))
				continue
			}
			up := string(resp.Header.Peek("X-Upstream-Version"))
			switch kind {
			case "proxy":
				if want := up + " 2048"; (up != "A" && up != "B") || string(resp.Body()) != want {
					fail(fmt.Sprintf("proxy: upstream %q body %q", up, resp.Body()))
				}
			case "lua":
				sv := string(resp.Header.Peek("X-Script-Version"))
				if pairs[sv] == "" || pairs[sv] != up || string(resp.Body()) != up+" 2048" {
					fail(fmt.Sprintf("lua: script %q with upstream %q: mixed runtimes (body %q)", sv, up, resp.Body()))
				}
			}
		}
	}
	for _, kind := range []string{"proxy", "proxy", "lua", "lua", "admin"} {
		wg.Add(1)
		go client(kind)
	}

	const reloads = 50
	for i := 1; i <= reloads; i++ {
		if i%2 == 1 {
			d.write("keystone.yaml", reloadConfig(upB.url(), stable.url()))
			d.write("scripts/app.lua", script("v2"))
		} else {
			d.write("keystone.yaml", reloadConfig(upA.url(), stable.url()))
			d.write("scripts/app.lua", script("v1"))
		}
		rec := g.reload()
		if want := []string{"api", "lua"}; fmt.Sprint(rec.TenantsChanged) != fmt.Sprint(want) {
			t.Errorf("reload %d: tenants changed %v, want %v", i, rec.TenantsChanged, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()

	t.Logf("%d requests served during %d reloads, %d failed", served.Load(), reloads, failed.Load())
	failures.Range(func(k, _ any) bool { t.Errorf("failure: %v", k); return true })
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), served.Load())
	}
	if served.Load() < 500 {
		t.Errorf("only %d requests served: the load did not run through the reloads", served.Load())
	}
	if n := len(g.srv.Reloads()); n != reloads {
		t.Errorf("%d reload records, want %d", n, reloads)
	}
	if upA.requests.Load() == 0 || upB.requests.Load() == 0 {
		t.Errorf("requests to A %d, to B %d: both runtimes should have served", upA.requests.Load(), upB.requests.Load())
	}
}

// TestReloadKeepsUpstreamState checks what carries over: an open breaker
// stays open across a reload that does not touch its upstream (and resets
// with a new entry when its settings change), drain state survives, the
// connection pool is the same, and keystone.store contents remain.
func TestReloadKeepsUpstreamState(t *testing.T) {
	dead := deadURL(t)
	live := versionedUpstream(t, "L")
	cfg := func(extra string) string {
		return yamlf(`
logging: {access_log: false}
tenants:
  - name: flaky
    path_prefix: /flaky
    upstreams: [{url: %q}]
    retries: {attempts: 0}
    circuit_breaker: {failure_threshold: 2, open_timeout: 1h}
  - name: live
    path_prefix: /live
    upstreams: [{url: %q}]
%s`, dead, live.url(), extra)
	}
	d := newConfDir(t, cfg(""))
	g := d.start(t)
	for range 3 {
		g.get("/flaky/x")
	}
	breakerOf := func() string {
		for _, tn := range (adminSource{g.srv}).Tenants() {
			if tn.Name == "flaky" {
				return tn.Upstreams[0].Breaker
			}
		}
		return "missing"
	}
	if b := breakerOf(); b != "open" {
		t.Fatalf("breaker %q before the reload, want open", b)
	}
	liveBefore := g.srv.snap.Load().byName["live"].pool.ups[0]
	if err := g.srv.SetDraining("live", live.url(), true, admin.Caller{IP: "test"}); err != nil {
		t.Fatal(err)
	}

	// A reload that adds a tenant and leaves these two alone.
	d.write("keystone.yaml", cfg(yamlf(`  - name: extra
    path_prefix: /extra
    upstreams: [{url: %q}]
`, live.url())))
	rec := g.reload()
	if fmt.Sprint(rec.TenantsAdded) != "[extra]" || len(rec.TenantsChanged) != 0 || len(rec.TenantsRemoved) != 0 {
		t.Errorf("record: added %v changed %v removed %v", rec.TenantsAdded, rec.TenantsChanged, rec.TenantsRemoved)
	}
	if b := breakerOf(); b != "open" {
		t.Errorf("breaker %q after a reload that did not touch its upstream, want open", b)
	}
	if resp := g.get("/flaky/x"); resp.StatusCode() != fasthttp.StatusServiceUnavailable {
		t.Errorf("flaky: status %d, want 503 from the open breaker", resp.StatusCode())
	}
	liveAfter := g.srv.snap.Load().byName["live"].pool.ups[0]
	if liveAfter != liveBefore {
		t.Error("the live upstream's state and connection pool were rebuilt by a reload that did not change it")
	}
	if !liveAfter.Draining() {
		t.Error("drain state lost across the reload")
	}
	if resp := g.get("/live/x"); resp.StatusCode() != fasthttp.StatusServiceUnavailable {
		t.Errorf("drained live: status %d, want 503", resp.StatusCode())
	}
	if resp := g.get("/extra/x"); resp.StatusCode() != 200 {
		t.Errorf("extra (same URL, other tenant: its own state): status %d, want 200", resp.StatusCode())
	}
	var health admin.Health
	if err := json.Unmarshal(g.get("/admin/health").Body(), &health); err != nil {
		t.Fatal(err)
	}
	for _, th := range health.Tenants {
		if th.Name == "live" && (len(th.Upstreams) != 1 || !th.Upstreams[0].Draining) {
			t.Errorf("/admin/health does not show live's upstream draining: %+v", th.Upstreams)
		}
	}
	if health.LastReload == nil || health.LastReload.Status != "ok" || health.LastReload.Trigger != TriggerAPI {
		t.Errorf("last_reload = %+v", health.LastReload)
	}
	if err := g.srv.SetDraining("live", live.url(), false, admin.Caller{}); err != nil {
		t.Fatal(err)
	}
	if resp := g.get("/live/x"); resp.StatusCode() != 200 {
		t.Errorf("enabled live: status %d, want 200", resp.StatusCode())
	}

	// Changing the breaker's settings is a new upstream entry: closed.
	d.write("keystone.yaml", strings.Replace(cfg(""), "failure_threshold: 2", "failure_threshold: 3", 1))
	g.reload()
	if b := breakerOf(); b != "closed" {
		t.Errorf("breaker %q after its settings changed, want a fresh closed one", b)
	}
	g.srv.waitRetired()
	if got, want := g.srv.reg.len(), len(g.srv.snap.Load().held); got != want {
		t.Errorf("registry holds %d entries, the only snapshot %d: entries of retired snapshots leaked", got, want)
	}
	if !strings.Contains(g.logs.String(), `"component":"audit","what":"upstream_drain","who":"test"`) {
		t.Errorf("no audit line for the drain:\n%s", g.logs.String())
	}
}

// TestReloadRefusesBrokenScriptAndConfig: a broken script or config is
// refused whole, reported with its position, and the running runtime keeps
// serving; fixing it reloads.
func TestReloadRefusesBrokenScriptAndConfig(t *testing.T) {
	up := versionedUpstream(t, "A")
	stable := versionedUpstream(t, "S")
	script := func(v string) string { return fmt.Sprintf(reloadScript, v, v, v) }
	d := newConfDir(t, reloadConfig(up.url(), stable.url()), "scripts/app.lua", script("v1"))
	g := d.start(t)

	d.write("scripts/app.lua", "local r = chi.NewRouter()\nr:Get('/lua/x', function(w, req)\n  w:Write('x'\nend)\nreturn r\n")
	rec := g.srv.ReloadFromDisk(TriggerAPI, admin.Caller{})
	if rec.Status != "error" || !strings.Contains(rec.Error, "app.lua:") {
		t.Fatalf("broken script: record %+v, want an error naming app.lua:LINE", rec)
	}
	if resp := g.get("/lua/hello"); string(resp.Body()) != "hello v1" {
		t.Errorf("after a refused reload: %q, want the old script's answer", resp.Body())
	}
	d.write("scripts/app.lua", script("v2"))
	d.write("keystone.yaml", strings.Replace(reloadConfig(up.url(), stable.url()), "path_prefix: /api", "path_prefx: /api", 1))
	rec = g.srv.ReloadFromDisk(TriggerAPI, admin.Caller{})
	if rec.Status != "error" || !strings.Contains(rec.Error, "keystone.yaml:") || !strings.Contains(rec.Error, `"path_prefx"`) {
		t.Fatalf("broken config: record %+v, want keystone.yaml:LINE:COL naming the unknown field", rec)
	}
	if resp := g.get("/lua/hello"); string(resp.Body()) != "hello v1" {
		t.Errorf("after a refused config: %q, want v1 still", resp.Body())
	}
	var health admin.Health
	if err := json.Unmarshal(g.get("/admin/health").Body(), &health); err != nil {
		t.Fatal(err)
	}
	if lr := health.LastReload; lr == nil || lr.Status != "error" || !strings.Contains(lr.Error, "path_prefx") {
		t.Errorf("last_reload = %+v, want the refused config's error", lr)
	}
	if !strings.Contains(g.logs.String(), "config reload refused") {
		t.Error("the refused reload was not logged")
	}
	d.write("keystone.yaml", reloadConfig(up.url(), stable.url()))
	g.reload()
	if resp := g.get("/lua/hello"); string(resp.Body()) != "hello v2" {
		t.Errorf("after the fix: %q, want v2", resp.Body())
	}
}

// TestReloadNeedsRestartKeys: a changed listen address is reported, not
// applied, and the rest of the config applies.
func TestReloadNeedsRestartKeys(t *testing.T) {
	up := versionedUpstream(t, "A")
	d := newConfDir(t, yamlf("tenants:\n  - name: a\n    path_prefix: /\n    upstreams: [{url: %q}]\n", up.url()))
	g := d.start(t)
	d.write("keystone.yaml", yamlf("server: {listen: \"127.0.0.1:1\", max_conns: 10, read_timeout: 20s}\ntenants:\n  - name: b\n    path_prefix: /\n    upstreams: [{url: %q}]\n", up.url()))
	rec := g.reload()
	if got := fmt.Sprint(rec.NeedsRestart); got != "[server.listen server.max_conns]" {
		t.Errorf("needs_restart = %s, want [server.listen server.max_conns] (read_timeout applies live)", got)
	}
	if fmt.Sprint(rec.TenantsAdded, rec.TenantsRemoved) != "[b] [a]" {
		t.Errorf("added %v removed %v", rec.TenantsAdded, rec.TenantsRemoved)
	}
	if resp := g.get("/x"); resp.StatusCode() != 200 {
		t.Errorf("status %d on the old listener after the reload", resp.StatusCode())
	}
	if !strings.Contains(g.logs.String(), `"needs_restart":["server.listen","server.max_conns"]`) {
		t.Errorf("needs restart not logged:\n%s", g.logs.String())
	}
}

// TestAdminReloadEndpoints: POST /admin/reload under the admin token rules,
// GET /admin/reloads, GET /admin/routes, and the drain endpoints.
func TestAdminReloadEndpoints(t *testing.T) {
	up := versionedUpstream(t, "A")
	stable := versionedUpstream(t, "S")
	script := func(v string) string { return fmt.Sprintf(reloadScript, v, v, v) }
	yaml := "admin: {token: s3cret}\n" + reloadConfig(up.url(), stable.url())
	d := newConfDir(t, yaml, "scripts/app.lua", script("v1"))
	g := d.start(t)
	auth := []string{"Authorization", "Bearer s3cret"}

	if resp := g.do("POST", "", "/admin/reload", nil); resp.StatusCode() != 401 {
		t.Errorf("reload without the token: %d, want 401", resp.StatusCode())
	}
	if resp := g.do("GET", "", "/admin/reload", nil, auth...); resp.StatusCode() != 405 || string(resp.Header.Peek("Allow")) != "POST" {
		t.Errorf("GET /admin/reload: %d Allow %q, want 405 POST", resp.StatusCode(), resp.Header.Peek("Allow"))
	}
	d.write("scripts/app.lua", script("v2"))
	resp := g.do("POST", "", "/admin/reload", nil, auth...)
	var rec admin.Reload
	if err := json.Unmarshal(resp.Body(), &rec); err != nil || resp.StatusCode() != 200 || rec.Status != "ok" || rec.Trigger != "admin" {
		t.Fatalf("POST /admin/reload: %d %s", resp.StatusCode(), resp.Body())
	}
	if fmt.Sprint(rec.TenantsChanged) != "[lua]" {
		t.Errorf("tenants changed %v, want [lua]", rec.TenantsChanged)
	}
	if resp := g.get("/lua/hello"); string(resp.Body()) != "hello v2" {
		t.Errorf("after POST /admin/reload: %q", resp.Body())
	}
	d.write("scripts/app.lua", "return 42\n")
	if resp := g.do("POST", "", "/admin/reload", nil, auth...); resp.StatusCode() != 422 {
		t.Errorf("refused reload: status %d, want 422", resp.StatusCode())
	}
	var recs []admin.Reload
	if err := json.Unmarshal(g.get("/admin/reloads", auth...).Body(), &recs); err != nil || len(recs) != 2 {
		t.Fatalf("/admin/reloads: %v %+v", err, recs)
	}
	if recs[0].Status != "error" || recs[1].Status != "ok" {
		t.Errorf("records not newest first: %+v", recs)
	}
	if !strings.Contains(g.logs.String(), `"component":"audit","what":"reload","who":"127.0.0.1","token":"admin","result":"ok"`) {
		t.Errorf("no audit line for the admin reload:\n%s", g.logs.String())
	}

	var routes []admin.Route
	if err := json.Unmarshal(g.get("/admin/routes", auth...).Body(), &routes); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"api * /api/* static":                 true,
		"lua POST /lua/echo app.lua:3 static": true,
		"lua GET /lua/hello app.lua:7 static": true,
		"stable * /stable/* static":           true,
	}
	for _, r := range routes {
		src := r.Source
		if src != "" {
			src = filepath.Base(src) // an openable path since lua-hard: the base is what the test knows
		}
		k := strings.Join(strings.Fields(fmt.Sprintf("%s %s %s %s %s", r.Tenant, r.Method, r.Pattern, src, r.Kind)), " ")
		if !want[k] {
			t.Errorf("unexpected route %q", k)
		}
		delete(want, k)
	}
	for k := range want {
		t.Errorf("route %q missing from /admin/routes", k)
	}

	drain := []byte(fmt.Sprintf(`{"tenant":"api","url":%q}`, up.url()))
	if resp := g.do("POST", "", "/admin/upstreams/drain", drain, auth...); resp.StatusCode() != 200 {
		t.Fatalf("drain: %d %s", resp.StatusCode(), resp.Body())
	}
	before := up.requests.Load()
	if resp := g.get("/api/x"); resp.StatusCode() != 503 {
		t.Errorf("drained: %d, want 503", resp.StatusCode())
	}
	if up.requests.Load() != before {
		t.Error("a drained upstream got a new request")
	}
	if resp := g.do("POST", "", "/admin/upstreams/enable", drain, auth...); resp.StatusCode() != 200 {
		t.Fatalf("enable: %d %s", resp.StatusCode(), resp.Body())
	}
	if resp := g.get("/api/x"); resp.StatusCode() != 200 {
		t.Errorf("enabled: %d, want 200", resp.StatusCode())
	}
	if resp := g.do("POST", "", "/admin/upstreams/drain", []byte(`{"tenant":"api","url":"http://nowhere:1"}`), auth...); resp.StatusCode() != 404 {
		t.Errorf("drain of an unknown upstream: %d, want 404", resp.StatusCode())
	}
	if resp := g.do("POST", "", "/admin/upstreams/drain", []byte(`not json`), auth...); resp.StatusCode() != 400 {
		t.Errorf("drain with a bad body: %d, want 400", resp.StatusCode())
	}
}

// ownedGoroutines counts the goroutines that reloads start and must stop:
// health checkers, upstream pools' idle-connection cleaners, file watchers
// and snapshot retirement. The process total also counts the test
// upstreams' fasthttp servers, whose idle workers linger 10s after a
// connection closes.
func ownedGoroutines() int {
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "keystone/balancer.(*Checker)") || strings.Contains(g, "(*HostClient).connsCleaner") ||
			strings.Contains(g, "keystone/server.(*watcher)") || strings.Contains(g, "keystone/server.(*Server).retire") {
			n++
		}
	}
	return n
}

// liveVMs sums the VMs alive of scripts.
func liveVMs(scripts []*luavm.Script) int {
	n := 0
	for _, sc := range scripts {
		n += sc.Stats().VMsLive
	}
	return n
}

// TestReloadLeavesNothingBehind: after 100 reloads alternating two configs
// and two scripts, every retired snapshot's VMs are closed, the registry
// holds only the live snapshot's entries, and the goroutine count is back
// to where it was (checkers of removed upstreams stopped, idle connection
// cleaners gone).
func TestReloadLeavesNothingBehind(t *testing.T) {
	upA, upB := versionedUpstream(t, "A"), versionedUpstream(t, "B")
	stable := versionedUpstream(t, "S")
	script := func(v string) string { return fmt.Sprintf(reloadScript, v, v, v) }
	hc := "    health_check: {path: /, interval: 1s, timeout: 500ms}\n"
	withChecks := func(u string) string {
		return strings.Replace(reloadConfig(u, stable.url()), "    pool: {idle_timeout: 300ms}\n", "    pool: {idle_timeout: 300ms}\n"+hc, -1)
	}
	d := newConfDir(t, withChecks(upA.url()), "scripts/app.lua", script("v1"))
	g := d.start(t)
	// One keep-alive client for the whole test: g.do's client per
	// request leaves an idle cleaner goroutine behind for 10s each.
	c := &fasthttp.HostClient{Addr: g.addr, MaxIdleConnDuration: time.Minute}
	defer c.CloseIdleConnections()
	post := func() int {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://" + g.addr + "/lua/echo")
		req.SetBodyString("x")
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode()
	}
	post()
	// Every checker has made its first check (interval 1s) and holds
	// its connection: the steady state of this config.
	time.Sleep(1500 * time.Millisecond)
	runtime.GC()
	base, baseOwned := runtime.NumGoroutine(), ownedGoroutines()

	var old []*luavm.Script
	for i := 1; i <= 100; i++ {
		old = append(old, g.srv.snap.Load().byName["lua"].script)
		u, v := upA.url(), "v1"
		if i%2 == 1 {
			u, v = upB.url(), "v2"
		}
		d.write("keystone.yaml", withChecks(u))
		d.write("scripts/app.lua", script(v))
		g.reload()
		if code := post(); code != 200 {
			t.Fatalf("reload %d: status %d", i, code)
		}
	}
	g.srv.waitRetired()
	if n := liveVMs(old); n != 0 {
		t.Errorf("%d VMs of retired scripts still alive", n)
	}
	if got, want := g.srv.reg.len(), len(g.srv.snap.Load().held); got != want {
		t.Errorf("registry holds %d entries, the live snapshot %d", got, want)
	}
	// Idle connection cleaners of closed clients sleep up to one idle
	// timeout (interval+timeout for checkers) before they see their pool
	// empty.
	deadline := time.Now().Add(5 * time.Second)
	for ownedGoroutines() > baseOwned {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d gateway goroutines after 100 reloads, %d before:\n%s", ownedGoroutines(), baseOwned, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("goroutines: %d before 100 reloads, %d after (gateway-owned %d, %d; the rest are the test upstreams' idle workers)",
		base, runtime.NumGoroutine(), baseOwned, ownedGoroutines())
}

// TestDrainLetsInFlightFinish: draining an upstream stops new requests to
// it while one already sent finishes with the upstream's answer.
func TestDrainLetsInFlightFinish(t *testing.T) {
	up := startEcho(t, "slow")
	release := make(chan struct{})
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		<-release
		ctx.SetBodyString("finished")
	})
	d := newConfDir(t, yamlf("tenants:\n  - name: a\n    path_prefix: /\n    upstreams: [{url: %q}]\n", up.url()))
	g := d.start(t)
	done := make(chan *fasthttp.Response, 1)
	go func() { done <- g.get("/slow") }()
	eventually(t, 2*time.Second, "the request to reach the upstream", func() bool { return up.requests.Load() == 1 })
	if err := g.srv.SetDraining("a", up.url(), true, admin.Caller{IP: "test"}); err != nil {
		t.Fatal(err)
	}
	if resp := g.get("/new"); resp.StatusCode() != fasthttp.StatusServiceUnavailable {
		t.Errorf("a new request to the drained upstream: %d, want 503", resp.StatusCode())
	}
	close(release)
	if resp := <-done; resp.StatusCode() != 200 || string(resp.Body()) != "finished" {
		t.Errorf("the request in flight when the drain began: %d %q", resp.StatusCode(), resp.Body())
	}
	if n := up.requests.Load(); n != 1 {
		t.Errorf("the drained upstream got %d requests, want only the one in flight", n)
	}
}
