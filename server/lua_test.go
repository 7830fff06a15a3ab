package server

// End-to-end tests of tenant Lua scripts through the real gateway: every
// test builds a config and its scripts on disk, serves it with New and Serve
// on loopback, and talks to it with a real client; proxied requests reach
// real upstreams (startEcho). The DSL itself is unit-tested in luavm; these
// tests check what only the whole pipeline shows: routing under a tenant's
// prefix, the fallback to the tenant's upstreams, keystone.Proxy resolving
// tenants and URLs, the client IP and request id the pipeline determined,
// the gateway's JSON errors and logs, and that the process keeps serving
// after a script misbehaves.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/luavm"
	"github.com/valyala/fasthttp"
)

// luaBlock keeps VM pools small. max_execution is wall-clock time, and on
// a loaded 2-core CI machine running -race a trivial handler sharing the
// CPUs with a dozen others can be descheduled for a good part of 100ms:
// tests that expect no timeout get a budget no script here comes near.
// TestLuaSandboxAndLimits, which wants timeouts, sets its own.
var luaBlock = luaSection("2s")

// luaSection is the lua: block of a test config with a run time budget.
func luaSection(maxExecution string) string {
	return yamlf(`
lua:
  scripts_dir: scripts
  pool_size: 2
  max_execution: %s
  max_string_size: 1MiB
`, maxExecution)
}

// call is a request of a table-driven test and what the client must get.
type call struct {
	name    string
	method  string // GET if empty
	path    string
	headers []string
	body    string

	status int
	want   string            // exact body, if set
	has    []string          // substrings of the body
	header map[string]string // response headers; "" means absent
}

// check sends c through g and checks the answer.
func (c call) check(t *testing.T, g *gateway) *fasthttp.Response {
	t.Helper()
	method := c.method
	if method == "" {
		method = "GET"
	}
	var body []byte
	if c.body != "" {
		body = []byte(c.body)
	}
	resp := g.do(method, "", c.path, body, c.headers...)
	if c.status != 0 && resp.StatusCode() != c.status {
		t.Errorf("%s %s: status %d, want %d; body %q", method, c.path, resp.StatusCode(), c.status, resp.Body())
	}
	if c.want != "" && string(resp.Body()) != c.want {
		t.Errorf("%s %s: body %q, want %q", method, c.path, resp.Body(), c.want)
	}
	for _, s := range c.has {
		if !strings.Contains(string(resp.Body()), s) {
			t.Errorf("%s %s: body %q does not contain %q", method, c.path, resp.Body(), s)
		}
	}
	for k, v := range c.header {
		if got := string(resp.Header.Peek(k)); got != v {
			t.Errorf("%s %s: header %s = %q, want %q", method, c.path, k, got, v)
		}
	}
	return resp
}

// tryDo is gateway.do for goroutines other than the test's: it reports
// failures as errors instead of calling t.Fatal.
func (g *gateway) tryDo(c *fasthttp.HostClient, method, uri string) (*fasthttp.Response, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://" + g.addr + uri)
	req.Header.SetMethod(method)
	resp := &fasthttp.Response{}
	if err := c.DoTimeout(req, resp, 30*time.Second); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, uri, err)
	}
	return resp, nil
}

// logRecords returns the gateway's JSON log records for which keep is true.
func (g *gateway) logRecords(keep func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(g.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && keep(m) {
			out = append(out, m)
		}
	}
	return out
}

// luaLogs returns the records with component=lua and the given message.
func (g *gateway) luaLogs(msg string) []map[string]any {
	return g.logRecords(func(m map[string]any) bool { return m["component"] == "lua" && m["msg"] == msg })
}

func decodeJSON(t *testing.T, resp *fasthttp.Response) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(resp.Body(), &m); err != nil {
		t.Fatalf("status %d: body %q is not a JSON object: %v", resp.StatusCode(), resp.Body(), err)
	}
	return m
}

const routesLua = `
local r = chi.NewRouter()

local function say(text)
  return function(w, req)
    w:Header():Set("X-Route", text)
    w:Write(text .. " " .. req.Method)
  end
end

r:Get("/m", say("get"))
r:Post("/m", say("post"))
r:Put("/m", say("put"))
r:Patch("/m", say("patch"))
r:Delete("/m", say("delete"))
r:Head("/m", say("head"))
r:Options("/m", say("options"))
r:Connect("/m", say("connect"))
r:Trace("/m", say("trace"))
r:Method("purge", "/m", say("purge"))
r:MethodFunc("REPORT", "/m", say("report"))

r:Handle("/any", say("handle"))
r:HandleFunc("/anyfunc", say("handlefunc"))
r:Handle("/items", say("any"))
r:Get("/items", say("get wins"))

r:Get("/users/{id}", function(w, req) w:Write("user " .. req:URLParam("id")) end)
r:Get("/users/{id}/posts/{post:[0-9]+}", function(w, req)
  w:Write(chi.URLParam(req, "id") .. "/" .. chi.URLParam(req, "post") .. "/" .. req:URLParam("nope") .. ".")
end)
r:Get("/num/{n:[0-9]+}", function(w, req) w:Write("num " .. req:URLParam("n")) end)
r:Get("/reports/{name}.json", function(w, req) w:Write("report " .. req:URLParam("name")) end)
r:Get("/files/*", function(w, req) w:Write("rest [" .. req:URLParam("*") .. "]") end)
r:Get("/files/special", say("special"))
return r
`

// TestLuaRouterMethodsAndPatterns covers every method-registering DSL call
// and every pattern form through the gateway.
func TestLuaRouterMethodsAndPatterns(t *testing.T) {
	t.Parallel()
	g := startGateway(t, luaBlock+`
tenants:
  - name: lua
    path_prefix: /
    allow_trace: true
    script: routes.lua
`, "scripts/routes.lua", routesLua)

	var calls []call
	for _, m := range []struct{ dsl, method string }{
		{"Get", "GET"}, {"Post", "POST"}, {"Put", "PUT"}, {"Patch", "PATCH"}, {"Delete", "DELETE"},
		{"Options", "OPTIONS"}, {"Connect", "CONNECT"}, {"Trace", "TRACE"},
		{`Method("purge")`, "PURGE"}, {`MethodFunc("REPORT")`, "REPORT"},
	} {
		lower := strings.ToLower(m.method)
		calls = append(calls, call{name: "r:" + m.dsl + " registers " + m.method, method: m.method, path: "/m",
			status: 200, want: lower + " " + m.method, header: map[string]string{"X-Route": lower}})
	}
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"} {
		calls = append(calls, call{name: "r:Handle registers " + m, method: m, path: "/any",
			status: 200, header: map[string]string{"X-Route": "handle"}})
	}
	calls = append(calls,
		call{name: "r:Handle does not register other methods", method: "PURGE", path: "/any", status: 405},
		call{name: "r:Head answers HEAD without a body", method: "HEAD", path: "/m", status: 200,
			header: map[string]string{"X-Route": "head"}},
		call{name: "r:HandleFunc registers POST", method: "POST", path: "/anyfunc", status: 200, want: "handlefunc POST"},
		call{name: "a later Get replaces Handle's GET", path: "/items", status: 200, want: "get wins GET"},
		call{name: "Handle keeps the methods Get did not replace", method: "PUT", path: "/items", status: 200, want: "any PUT"},
		call{name: "{name} captures one segment", path: "/users/42", status: 200, want: "user 42"},
		call{name: "{name} does not span segments", path: "/users/42/x", status: 404},
		call{name: "URLParam and chi.URLParam read parameters, a missing one is empty",
			path: "/users/ada/posts/7", status: 200, want: "ada/7/."},
		call{name: "{name:regexp} matches", path: "/num/123", status: 200, want: "num 123"},
		call{name: "{name:regexp} rejects", path: "/num/abc", status: 404},
		call{name: "a parameter with a static suffix", path: "/reports/q3.json", status: 200, want: "report q3"},
		call{name: "the catch-all takes the rest of the path", path: "/files/a/b.txt", status: 200, want: "rest [a/b.txt]"},
		call{name: "the catch-all matches an empty rest", path: "/files/", status: 200, want: "rest []"},
		call{name: "a static route beats the catch-all", path: "/files/special", status: 200, want: "special GET"},
		call{name: "a trailing slash is a miss, not a redirect", path: "/users/", status: 404},
	)
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			resp := c.check(t, g)
			if c.method == "HEAD" && len(resp.Body()) != 0 {
				t.Errorf("HEAD answered with a body: %q", resp.Body())
			}
			switch resp.StatusCode() {
			case 200:
				if c.method != "HEAD" && c.want == "" && !strings.HasSuffix(string(resp.Body()), " "+c.method) {
					t.Errorf("body %q, want the handler's answer to %s", resp.Body(), c.method)
				}
			case 404:
				// The tenant has no upstreams: a miss is the gateway's 404.
				errorBody(t, resp, 404, codeNotFound)
			}
			if len(resp.Header.Peek("X-Request-ID")) == 0 {
				t.Error("Lua-served response has no X-Request-ID")
			}
		})
	}
}

const composeLua = `
local r = chi.NewRouter()

local function say(text)
  return function(w, req) w:Write(text) end
end

-- tag adds its name to X-Mw on the way in.
local function tag(name)
  return function(next)
    return function(w, req)
      w:Header():Add("X-Mw", name)
      next(w, req)
    end
  end
end

r:Use(tag("root"))

r:Group(function(g)
  g:Use(tag("group"))
  g:Get("/account", say("private"))
end)
r:Get("/public", say("public"))
r:With(tag("with1"), tag("with2")):Get("/with", say("with"))

r:Route("/team", function(team)
  team:Use(tag("team"))
  team:Get("/", say("team home"))
  team:Get("/stats", say("team stats"))
end)

local legacy = chi.NewRouter()
legacy:Use(tag("legacy"))
legacy:Get("/ping", say("pong"))
legacy:Handle("/*", function(w, req) w:Write("legacy rest [" .. req:URLParam("*") .. "]") end)
r:Mount("/legacy", legacy)

r:Mount("/hook", function(w, req) w:Write("hook " .. req.Path) end)
r:Mount("/billing", keystone.Proxy("billing"))
return r
`

// TestLuaGroupRouteMountWith covers the DSL calls that compose routers:
// Group, Route, Mount (of a router, a Lua handler and keystone.Proxy) and
// With, with the middleware each one puts in front of its routes.
func TestLuaGroupRouteMountWith(t *testing.T) {
	t.Parallel()
	billing := startEcho(t, "billing")
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: lua
    path_prefix: /
    script: compose.lua
  - name: billing
    domains: [billing.internal]
    upstreams: [{url: %q}]
`, billing.url()), "scripts/compose.lua", composeLua)

	for _, c := range []struct {
		name, path, body string
		mw               []string
	}{
		{"Group's Use applies to the group's routes", "/account", "private", []string{"root", "group"}},
		{"Group's Use does not leak to the parent's routes", "/public", "public", []string{"root"}},
		{"With puts its middleware in front of one route, in order", "/with", "with", []string{"root", "with1", "with2"}},
		{"Route's subrouter answers its mount point with /", "/team", "team home", []string{"root", "team"}},
		{"Route's subrouter answers below its mount point", "/team/stats", "team stats", []string{"root", "team"}},
		{"Mount of a router, its own Use after the parent's", "/legacy/ping", "pong", []string{"root", "legacy"}},
		{"a mounted catch-all answers the mount point itself", "/legacy", "legacy rest []", []string{"root", "legacy"}},
		{"a mounted catch-all answers everything below", "/legacy/a/b", "legacy rest [a/b]", []string{"root", "legacy"}},
		{"Mount of a handler answers the mount point", "/hook", "hook /hook", []string{"root"}},
		{"Mount of a handler answers everything below", "/hook/x/y", "hook /hook/x/y", []string{"root"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := g.get(c.path)
			if resp.StatusCode() != 200 || string(resp.Body()) != c.body {
				t.Fatalf("GET %s: %d %q, want 200 %q", c.path, resp.StatusCode(), resp.Body(), c.body)
			}
			var mw []string
			for _, v := range resp.Header.PeekAll("X-Mw") {
				mw = append(mw, string(v))
			}
			if !slices.Equal(mw, c.mw) {
				t.Errorf("GET %s: middleware ran %v, want %v", c.path, mw, c.mw)
			}
		})
	}

	t.Run("Mount of keystone.Proxy sends the mount point and everything below upstream", func(t *testing.T) {
		for _, p := range []string{"/billing", "/billing/", "/billing/invoices/7?x=1"} {
			resp := g.get(p)
			e := decodeEcho(t, resp)
			if e.ID != "billing" || e.URI != p {
				t.Errorf("GET %s reached %s as %q, want billing as %q", p, e.ID, e.URI, p)
			}
			// Set before the proxy ran, not sent by the upstream: kept.
			if got := string(resp.Header.Peek("X-Mw")); got != "root" {
				t.Errorf("GET %s: X-Mw = %q, want the root middleware's header kept across the proxy", p, got)
			}
		}
	})
}

const orderLua = `
local r = chi.NewRouter()

-- trace records its name in req.Context on the way in and in X-Out on the
-- way out, so one response shows the whole onion.
local function trace(name)
  return function(next)
    return function(w, req)
      req.Context.trace = (req.Context.trace or "") .. name .. ">"
      next(w, req)
      w:Header():Add("X-Out", name)
    end
  end
end

local function auth(next)
  return function(w, req)
    if req:Header():Get("X-Key") ~= "secret" then
      w:JSON(401, { error = "unauthorized" })
      return
    end
    next(w, req)
  end
end

r:Use(trace("a"), trace("b"), auth)
r:With(trace("c")):Get("/order", function(w, req) w:Write(req.Context.trace .. "h") end)

local sub = chi.NewRouter()
sub:Use(trace("s"))
sub:Get("/order", function(w, req) w:Write(req.Context.trace .. "h") end)
r:Mount("/sub", sub)
-- No NotFound: misses go to the tenant's upstreams, through a, b and auth.
return r
`

// TestLuaMiddlewareOrder checks chi's order (Use in registration order,
// then With, the handler, and back out in reverse), that a mounted router's
// Use runs after its parent's, that req.Context carries data from
// middleware to handler, and chi's rule that Use covers the whole router,
// misses included: the root middleware guards requests that fall through
// to the upstreams, and one that answers itself keeps them from the
// upstream.
func TestLuaMiddlewareOrder(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: lua
    path_prefix: /
    script: order.lua
    upstreams: [{url: %q}]
`, up.url()), "scripts/order.lua", orderLua)
	key := []string{"X-Key", "secret"}

	for _, c := range []struct {
		path, body string
		out        []string
	}{
		{"/order", "a>b>c>h", []string{"c", "b", "a"}},
		{"/sub/order", "a>b>s>h", []string{"s", "b", "a"}},
	} {
		resp := g.get(c.path, key...)
		if resp.StatusCode() != 200 || string(resp.Body()) != c.body {
			t.Errorf("GET %s: %d %q, want 200 %q", c.path, resp.StatusCode(), resp.Body(), c.body)
		}
		var out []string
		for _, v := range resp.Header.PeekAll("X-Out") {
			out = append(out, string(v))
		}
		if !slices.Equal(out, c.out) {
			t.Errorf("GET %s: middleware returned in order %v, want %v", c.path, out, c.out)
		}
	}

	resp := g.get("/elsewhere", key...)
	if e := decodeEcho(t, resp); e.URI != "/elsewhere" {
		t.Errorf("a miss reached the upstream as %q, want /elsewhere", e.URI)
	}
	if out := resp.Header.PeekAll("X-Out"); len(out) != 2 {
		t.Errorf("a miss that falls through to the upstream ran %d root middlewares on the way out, want 2 (a, b)", len(out))
	}

	before := up.requests.Load()
	for _, p := range []string{"/order", "/sub/order", "/elsewhere"} {
		resp := g.get(p)
		if resp.StatusCode() != 401 || !strings.Contains(string(resp.Body()), "unauthorized") {
			t.Errorf("GET %s without the key: %d %q, want the middleware's 401", p, resp.StatusCode(), resp.Body())
		}
		if len(resp.Header.Peek("X-Request-ID")) == 0 {
			t.Errorf("GET %s: the middleware's answer has no X-Request-ID", p)
		}
	}
	if n := up.requests.Load() - before; n != 0 {
		t.Errorf("the upstream got %d requests the middleware answered itself, want 0", n)
	}
}

const missLua = `
local r = chi.NewRouter()
r:Get("/status", function(w, req) w:JSON(200, { ok = true }) end)
r:Route("/v2", function(v2)
  v2:Get("/items", function(w, req) w:JSON(200, json.array()) end)
  v2:NotFound(function(w, req) w:JSON(404, { error = "no such v2 endpoint", path = req.Path }) end)
  v2:MethodNotAllowed(function(w, req)
    w:JSON(405, { error = "v2 method", allow = w:Header():Get("Allow") })
  end)
end)
return r
`

const missCustomLua = `
local r = chi.NewRouter()
r:Get("/status", function(w, req) w:Write("ok") end)
r:Put("/status", function(w, req) w:Write("ok") end)
r:NotFound(function(w, req) w:WriteHeader(404); w:Write("custom not found: " .. req.Path) end)
r:MethodNotAllowed(function(w, req)
  w:WriteHeader(405)
  w:Write("custom 405, allow " .. w:Header():Get("Allow"))
end)
return r
`

// TestLuaNotFoundAndMethodNotAllowed covers NotFound and MethodNotAllowed at
// the root and in a subrouter, the gateway's JSON 405 without a handler,
// the fallback to the tenant's upstreams, and the JSON 404 of a tenant
// without upstreams.
func TestLuaNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: a
    path_prefix: /a
    script: miss.lua
    upstreams: [{url: %q}]
  - name: b
    path_prefix: /b
    script: custom.lua
  - name: c
    path_prefix: /c
    script: miss.lua
`, up.url()), "scripts/miss.lua", missLua, "scripts/custom.lua", missCustomLua)

	for _, c := range []call{
		{name: "a route answers", path: "/a/status", status: 200, want: `{"ok":true}`},
		{name: "a subrouter's NotFound answers misses under it", path: "/a/v2/nope", status: 404,
			want: `{"error":"no such v2 endpoint","path":"/a/v2/nope"}`},
		{name: "a subrouter's MethodNotAllowed sees Allow", method: "POST", path: "/a/v2/items", status: 405,
			want: `{"allow":"GET","error":"v2 method"}`},
		{name: "the root's NotFound answers misses", path: "/b/nope", status: 404, want: "custom not found: /b/nope"},
		{name: "the root's MethodNotAllowed answers other methods", method: "DELETE", path: "/b/status", status: 405,
			want: "custom 405, allow GET, PUT", header: map[string]string{"Allow": "GET, PUT"}},
		{name: "HEAD is not implied by GET", method: "HEAD", path: "/b/status", status: 405},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, g) })
	}

	t.Run("without MethodNotAllowed the gateway answers a JSON 405 with Allow", func(t *testing.T) {
		resp := g.do("POST", "", "/a/status", nil)
		errorBody(t, resp, 405, codeMethodNotAllowed)
		if got := string(resp.Header.Peek("Allow")); got != "GET" {
			t.Errorf("Allow = %q, want GET", got)
		}
	})
	t.Run("without NotFound a miss goes to the tenant's upstreams", func(t *testing.T) {
		before := up.requests.Load()
		e := decodeEcho(t, g.get("/a/elsewhere?x=1"))
		if e.URI != "/a/elsewhere?x=1" || up.requests.Load() != before+1 {
			t.Errorf("upstream saw %q (%d requests), want /a/elsewhere?x=1 once", e.URI, up.requests.Load()-before)
		}
	})
	t.Run("without NotFound or upstreams a miss is the gateway's JSON 404", func(t *testing.T) {
		errorBody(t, g.get("/c/elsewhere"), 404, codeNotFound)
	})
}

const requestLua = `
local r = chi.NewRouter()

r:Use(function(next)
  return function(w, req)
    req.Context.user = req:Header():Get("X-User")
    next(w, req)
  end
end)

r:Post("/search/{index}", function(w, req)
  local h = req:Header()
  h:Add("X-Multi", "three")
  local dropped = h:Get("X-Drop")
  h:Del("X-Drop")
  h:Set("X-Set", "set by lua")
  w:JSON(200, {
    method = req.Method, host = req.Host, path = req.Path, query = req.RawQuery,
    client = req.RemoteAddr, index = req:URLParam("index"), index2 = chi.URLParam(req, "index"),
    q = req:Query("q"), absent = req:Query("absent"),
    lang = h:Get("Accept-Language"), multi = h:Values("X-Multi"), none = #h:Values("X-None"),
    session = req:Cookie("session"), body = req:Body(), user = req.Context.user,
    dropped_before = dropped, dropped_after = h:Get("X-Drop"), set = h:Get("X-Set"),
    no_such_field = req.NoSuchField == nil,
  })
end)

r:Get("/client", function(w, req) w:Write(req.RemoteAddr) end)

-- Changes made before keystone.Proxy are what the upstream receives.
r:Get("/v1/*", function(w, req)
  req:SetPath("/v2/" .. req:URLParam("*"))
  req:SetRawQuery(req.RawQuery == "" and "from=v1" or req.RawQuery .. "&from=v1")
  req:Header():Set("X-Added", "yes")
  req:Header():Del("X-Secret")
  keystone.Proxy()(w, req)
end)
r:Post("/upload", function(w, req)
  req:SetBody(string.upper(req:Body()) .. "!")
  req:SetQuery("rewritten=1")
  keystone.Proxy()(w, req)
end)
return r
`

// TestLuaRequest covers every req field and method: the fields read what
// the pipeline determined (RemoteAddr is the client behind a trusted
// proxy, not the TCP peer), the header methods edit the request, and
// SetPath, SetRawQuery/SetQuery, SetBody and header changes made before
// keystone.Proxy reach the upstream.
func TestLuaRequest(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	bodies := startEcho(t, "bodies")
	bodies.setHandler(func(ctx *fasthttp.RequestCtx) {
		var b bytes.Buffer
		_ = ctx.Request.BodyWriteTo(&b) // Body() would log a warning for a streamed body
		ctx.SetBodyString(b.String() + " " + string(ctx.RequestURI()))
	})
	g := startGateway(t, luaBlock+yamlf(`
server:
  trusted_proxies: [127.0.0.1/32]
  stream_request_body_over: 64KiB
tenants:
  - name: api
    path_prefix: /api
    script: request.lua
    upstreams: [{url: %q}]
  - name: bodies
    path_prefix: /bodies
    script: request.lua
    upstreams: [{url: %q}]
`, up.url(), bodies.url()), "scripts/request.lua", requestLua)

	t.Run("fields and methods", func(t *testing.T) {
		resp := g.do("POST", "Search.Example.com", "/api/search/books?q=go&page=2", []byte("hello body"),
			"X-Forwarded-For", "198.51.100.1, 203.0.113.7",
			"X-User", "ada",
			"Accept-Language", "en",
			"X-Multi", "one", "X-Multi", "two",
			"Cookie", "session=s3; theme=dark",
			"X-Drop", "gone soon",
		)
		got := decodeJSON(t, resp)
		want := map[string]any{
			// fasthttp lowercases the host; host names are case-insensitive.
			"method": "POST", "host": "search.example.com", "path": "/api/search/books", "query": "q=go&page=2",
			// 127.0.0.1 is trusted, so the client is the rightmost
			// untrusted address of X-Forwarded-For.
			"client": "203.0.113.7",
			"index":  "books", "index2": "books", "q": "go", "absent": "",
			"lang": "en", "multi": []any{"one", "two", "three"}, "none": float64(0),
			"session": "s3", "body": "hello body", "user": "ada",
			"dropped_before": "gone soon", "dropped_after": "", "set": "set by lua",
			"no_such_field": true,
		}
		for k, v := range want {
			if g, w := fmt.Sprint(got[k]), fmt.Sprint(v); g != w {
				t.Errorf("%s = %s, want %s", k, g, w)
			}
		}
	})

	t.Run("RemoteAddr is the TCP peer without a trusted proxy's X-Forwarded-For", func(t *testing.T) {
		if got := string(g.get("/api/client").Body()); got != "127.0.0.1" {
			t.Errorf("RemoteAddr = %q, want 127.0.0.1", got)
		}
		if got := string(g.get("/api/client", "X-Forwarded-For", "192.0.2.44").Body()); got != "192.0.2.44" {
			t.Errorf("RemoteAddr = %q, want 192.0.2.44 from the trusted peer's X-Forwarded-For", got)
		}
	})

	t.Run("SetPath, SetRawQuery and header changes reach the upstream", func(t *testing.T) {
		e := decodeEcho(t, g.get("/api/v1/users/7?page=3", "X-Secret", "do not forward"))
		if e.URI != "/v2/users/7?page=3&from=v1" {
			t.Errorf("upstream saw %q, want /v2/users/7?page=3&from=v1", e.URI)
		}
		if got := e.Headers["X-Added"]; len(got) != 1 || got[0] != "yes" {
			t.Errorf("X-Added at the upstream = %v, want [yes]", got)
		}
		if got, ok := e.Headers["X-Secret"]; ok {
			t.Errorf("X-Secret deleted by the script reached the upstream: %v", got)
		}
	})

	t.Run("SetBody and SetQuery reach the upstream", func(t *testing.T) {
		resp := g.do("POST", "", "/bodies/upload?orig=1", []byte("quiet"))
		if got := string(resp.Body()); got != "QUIET! /bodies/upload?rewritten=1" {
			t.Errorf("upstream answered %q, want the rewritten body and query", got)
		}
	})

	t.Run("a body streamed to the gateway is read whole and forwarded", func(t *testing.T) {
		big := strings.Repeat("a", 300<<10) // over stream_request_body_over
		resp := g.do("POST", "", "/bodies/upload", []byte(big))
		if want := strings.ToUpper(big) + "! /bodies/upload?rewritten=1"; string(resp.Body()) != want {
			t.Errorf("upstream answered %d bytes, want %d", len(resp.Body()), len(want))
		}
		raw := g.raw("POST /bodies/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+
			"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 10*time.Second)
		if !strings.HasPrefix(raw, "HTTP/1.1 200") || !strings.HasSuffix(raw, "\r\n\r\nHELLO WORLD! /bodies/upload?rewritten=1") {
			t.Errorf("chunked body: got %q", raw)
		}
	})

	// The server streams request bodies; reading one from Lua must not
	// make fasthttp log a warning per request.
	if w := g.logRecords(func(m map[string]any) bool { return m["level"] == "WARN" }); len(w) > 0 {
		t.Errorf("req:Body() logged warnings: %v", w)
	}
}

const responseLua = `
local r = chi.NewRouter()

r:Get("/headers", function(w, req)
  local h = w:Header()
  h:Set("X-One", "1")
  h:Add("X-Two", "a")
  h:Add("X-Two", "b")
  h:Set("X-Gone", "x")
  h:Del("X-Gone")
  w:Write("one=" .. h:Get("X-One") .. " gone=[" .. h:Get("X-Gone") .. "] two=" .. table.concat(h:Values("X-Two"), ","))
end)
r:Get("/status", function(w, req)
  w:WriteHeader(201)
  w:Write("a")
  w:Write("b")
end)
r:Get("/json", function(w, req)
  w:Write("replaced by JSON")
  w:JSON(202, { ok = true, n = 3, list = json.array({ 1, 2 }), empty = json.array() })
end)
r:Get("/redirect", function(w, req) w:Redirect("/w/target") end)
r:Get("/redirect301", function(w, req) w:Redirect("https://example.com/moved", 301) end)
r:Get("/inspect", function(w, req)
  w:WriteHeader(418)
  w:Write("tea")
  local status, body = w:Status(), w:Body()
  w:SetBody(status .. ":" .. body)
end)

-- Response transforms after next(): status, headers and body of the
-- upstream's answer, changed on the way to the client.
local function envelope(next)
  return function(w, req)
    w:Header():Set("X-Before", "kept")
    next(w, req)
    local up = json.decode(w:Body())
    w:WriteHeader(203)
    w:Header():Set("X-Upstream-Id", up.id)
    w:Header():Del("Server")
    w:Header():Set("Content-Type", "text/plain")
    w:SetBody("wrapped " .. up.uri)
  end
end
r:With(envelope):Get("/proxied/*", keystone.Proxy())

local function soften(next)
  return function(w, req)
    next(w, req)
    if w:Status() >= 500 then
      w:WriteHeader(503)
      w:Header():Set("Retry-After", "30")
      w:SetBody('{"error":"upstream unavailable"}')
    end
  end
end
r:With(soften):Get("/failing", keystone.Proxy("failing"))
return r
`

// TestLuaResponseWriter covers every w method, on answers built in Lua and
// on upstream answers changed after next().
func TestLuaResponseWriter(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Server", "upstream/1.0")
		ctx.SetContentType("application/json")
		fmt.Fprintf(ctx, `{"id":"up","uri":%q}`, ctx.RequestURI())
	})
	failing := startEcho(t, "failing")
	failing.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(500)
		ctx.SetBodyString("stack trace the client must not see")
	})
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: w
    path_prefix: /w
    script: response.lua
    upstreams: [{url: %q}]
  - name: failing
    domains: [failing.internal]
    upstreams: [{url: %q}]
    retries: {attempts: 0}
`, up.url(), failing.url()), "scripts/response.lua", responseLua)

	for _, c := range []call{
		{name: "Header Set, Add, Del, Get and Values", path: "/w/headers", status: 200,
			want: "one=1 gone=[] two=a,b", header: map[string]string{"X-One": "1", "X-Gone": ""}},
		{name: "WriteHeader sets the status, Write appends", path: "/w/status", status: 201, want: "ab"},
		{name: "JSON sets status and Content-Type and replaces the body", path: "/w/json", status: 202,
			want:   `{"empty":[],"list":[1,2],"n":3,"ok":true}`,
			header: map[string]string{"Content-Type": "application/json"}},
		{name: "Redirect defaults to 302 and resolves a relative URL", path: "/w/redirect", status: 302,
			header: map[string]string{"Location": "http://" + g.addr + "/w/target"}},
		{name: "Redirect with a code", path: "/w/redirect301", status: 301,
			header: map[string]string{"Location": "https://example.com/moved"}},
		{name: "Status and Body read the response, SetBody replaces it", path: "/w/inspect", status: 418, want: "418:tea"},
		{name: "transforms after next change the upstream's status, headers and body", path: "/w/proxied/x?y=1",
			status: 203, want: "wrapped /w/proxied/x?y=1",
			header: map[string]string{"X-Before": "kept", "X-Upstream-Id": "up", "Server": "", "Content-Type": "text/plain"}},
		{name: "a middleware replaces an upstream 500", path: "/w/failing", status: 503,
			want: `{"error":"upstream unavailable"}`, header: map[string]string{"Retry-After": "30"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := c.check(t, g)
			if c.path == "/w/headers" {
				if got := resp.Header.PeekAll("X-Two"); len(got) != 2 {
					t.Errorf("X-Two has %d values, want 2 (a, b)", len(got))
				}
			}
		})
	}
}

const jsonLua = `
local r = chi.NewRouter()
r:Post("/echo", function(w, req)
  local body, err = json.decode(req:Body())
  if body == nil then
    w:JSON(400, { error = "invalid JSON", detail = err })
    return
  end
  body.count = #body.items
  w:Header():Set("Content-Type", "application/json")
  w:Write(json.encode({ received = body, tags = json.array(), note = json.null }))
end)
return r
`

// TestLuaJSON covers json.encode and json.decode on request and response
// bodies.
func TestLuaJSON(t *testing.T) {
	t.Parallel()
	g := startGateway(t, luaBlock+`
tenants:
  - name: j
    path_prefix: /j
    script: json.lua
`, "scripts/json.lua", jsonLua)

	resp := g.do("POST", "", "/j/echo", []byte(`{"name":"ada","items":[1,"two",{"three":3}],"nested":{"ok":true}}`))
	want := `{"note":null,"received":{"count":3,"items":[1,"two",{"three":3}],"name":"ada","nested":{"ok":true}},"tags":[]}`
	if resp.StatusCode() != 200 || string(resp.Body()) != want {
		t.Errorf("got %d %s, want 200 %s", resp.StatusCode(), resp.Body(), want)
	}
	resp = g.do("POST", "", "/j/echo", []byte(`{"name":`))
	if m := decodeJSON(t, resp); resp.StatusCode() != 400 || m["error"] != "invalid JSON" || m["detail"] == "" {
		t.Errorf("invalid JSON: got %d %s, want 400 with json.decode's error", resp.StatusCode(), resp.Body())
	}
}

const httpLua = `
local up, hang = "%s", "%s"
local r = chi.NewRouter()

local function answer(w, res, err)
  if res == nil then
    w:JSON(502, { error = err })
    return
  end
  w:JSON(200, { status = res.status, ctype = res.headers["Content-Type"], echo = json.decode(res.body) })
end

r:Get("/get", function(w, req)
  local res, err = keystone.http.Get(up .. "/from-lua?x=1", { headers = { ["X-Lua"] = "get" } })
  answer(w, res, err)
end)
r:Get("/post", function(w, req)
  local res, err = keystone.http.Post(up .. "/p", { body = "12345", headers = { ["Content-Type"] = "text/plain" } })
  answer(w, res, err)
end)
r:Get("/do", function(w, req)
  local res, err = keystone.http.Do("put", up .. "/d", { body = "abc", timeout = 2 })
  answer(w, res, err)
end)
r:Get("/hang", function(w, req)
  -- Longer than max_execution: the wait is not Lua run time.
  local res, err = keystone.http.Get(hang .. "/never", { timeout = 0.5 })
  w:JSON(504, { got_response = res ~= nil, error = err })
end)
return r
`

// TestLuaHTTPClient covers keystone.http.Get, Post and Do against a real
// upstream, and the timeout against one that never answers.
func TestLuaHTTPClient(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	hang := hangingListener(t)
	// A budget shorter than the 0.5s keystone.http timeout: waiting on
	// the network is not Lua run time.
	g := startGateway(t, luaSection("250ms")+`
tenants:
  - name: h
    path_prefix: /h
    script: http.lua
`, "scripts/http.lua", fmt.Sprintf(httpLua, up.url(), "http://"+hang))

	for _, c := range []struct {
		path, method, uri, header string
		bodyLen                   float64
	}{
		{"/h/get", "GET", "/from-lua?x=1", "get", 0},
		{"/h/post", "POST", "/p", "", 5},
		{"/h/do", "PUT", "/d", "", 3},
	} {
		resp := g.get(c.path)
		m := decodeJSON(t, resp)
		echo, _ := m["echo"].(map[string]any)
		if resp.StatusCode() != 200 || m["status"] != float64(200) || m["ctype"] != "application/json" || echo == nil {
			t.Errorf("GET %s: %d %s, want the upstream's 200 JSON answer", c.path, resp.StatusCode(), resp.Body())
			continue
		}
		if echo["method"] != c.method || echo["uri"] != c.uri || echo["body_len"] != c.bodyLen {
			t.Errorf("GET %s: upstream saw %v %v with %v body bytes, want %s %s with %v", c.path,
				echo["method"], echo["uri"], echo["body_len"], c.method, c.uri, c.bodyLen)
		}
		if c.header != "" {
			if h, _ := echo["headers"].(map[string]any); fmt.Sprint(h["X-Lua"]) != "["+c.header+"]" {
				t.Errorf("GET %s: X-Lua at the upstream = %v, want [%s]", c.path, h["X-Lua"], c.header)
			}
		}
	}

	start := time.Now()
	resp := g.get("/h/hang")
	took := time.Since(start)
	m := decodeJSON(t, resp)
	if resp.StatusCode() != 504 || m["got_response"] != false || !strings.Contains(fmt.Sprint(m["error"]), "timeout") {
		t.Errorf("hanging upstream: %d %s, want the script's 504 with a timeout error", resp.StatusCode(), resp.Body())
	}
	if took < 400*time.Millisecond || took > 10*time.Second {
		t.Errorf("hanging upstream answered after %v, want about the 0.5s timeout", took)
	}
	if r := g.get("/h/get"); r.StatusCode() != 200 {
		t.Errorf("after the timeout: %d %s", r.StatusCode(), r.Body())
	}
}

const storeLua = `
-- A table's address differs in every VM: it tells requests' VMs apart.
local vm_id = tostring({})
local r = chi.NewRouter()

r:Get("/set/{key}", function(w, req)
  keystone.store.Set(req:URLParam("key"), req:Query("v"), tonumber(req:Query("ttl")))
  w:Write("ok")
end)
r:Get("/setnum/{key}", function(w, req)
  keystone.store.Set(req:URLParam("key"), 42)
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
r:Get("/del/{key}", function(w, req)
  keystone.store.Delete(req:URLParam("key"))
  w:Write("ok")
end)
r:Get("/incr/{key}", function(w, req)
  local n, err = keystone.store.Incr(req:URLParam("key"), tonumber(req:Query("by")), tonumber(req:Query("ttl")))
  if n == nil then
    w:JSON(409, { error = err })
    return
  end
  w:Write(tostring(n))
end)
-- With ?barrier=N, holds its VM (a Lua busy-wait never lends it to other
-- requests, where waiting in keystone.Proxy does) until N requests hold one
-- each; then proxies, and counts.
r:Get("/hit", function(w, req)
  local want = tonumber(req:Query("barrier")) or 0
  if want > 0 then
    keystone.store.Incr("barrier")
    while tonumber(keystone.store.Get("barrier")) < want do end
  end
  keystone.Proxy()(w, req)
  local n = keystone.store.Incr("hits")
  w:Header():Set("X-VM", vm_id)
  w:Header():Set("X-Count", tostring(n))
end)
return r
`

// TestLuaStore covers keystone.store Get, Set, Incr and Delete with TTLs,
// and checks that the store is shared by concurrent requests in different
// VMs: Incr loses no update.
func TestLuaStore(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	const held = 4 // requests held at once, each in its own VM
	var arrived atomic.Int64
	release := make(chan struct{})
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		if arrived.Add(1) == held {
			close(release)
		}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		ctx.SetBodyString("counted")
	})
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: s
    path_prefix: /s
    script: store.lua
    upstreams: [{url: %q}]
  - name: other
    path_prefix: /other
    script: store.lua
`, up.url()), "scripts/store.lua", storeLua)

	t.Run("Set, Get and Delete", func(t *testing.T) {
		for _, c := range []call{
			{path: "/s/get/a", status: 404, want: "nil"},
			{path: "/s/set/a?v=hello", status: 200},
			{path: "/s/get/a", status: 200, want: "hello"},
			{path: "/s/set/long?v=kept&ttl=3600", status: 200},
			{path: "/s/get/long", status: 200, want: "kept"},
			{path: "/s/setnum/n", status: 200},
			{path: "/s/get/n", status: 200, want: "42"},
			{path: "/s/del/a", status: 200},
			{path: "/s/get/a", status: 404, want: "nil"},
			// Each tenant has its own store.
			{path: "/other/get/long", status: 404, want: "nil"},
		} {
			c.check(t, g)
		}
	})

	t.Run("Set with a TTL expires", func(t *testing.T) {
		(call{path: "/s/set/brief?v=x&ttl=0.05", status: 200}).check(t, g)
		eventually(t, 10*time.Second, "the key to expire", func() bool {
			return g.get("/s/get/brief").StatusCode() == 404
		})
	})

	t.Run("Incr with a delta, a TTL, and on a non-integer", func(t *testing.T) {
		for _, c := range []call{
			{path: "/s/incr/c", status: 200, want: "1"},
			{path: "/s/incr/c?by=5", status: 200, want: "6"},
			{path: "/s/incr/c?by=-2", status: 200, want: "4"},
			{path: "/s/get/c", status: 200, want: "4"},
			{path: "/s/incr/t?by=7&ttl=0.05", status: 200, want: "7"},
			{path: "/s/set/word?v=abc", status: 200},
			{path: "/s/incr/word", status: 409, has: []string{"not an integer"}},
		} {
			c.check(t, g)
		}
		eventually(t, 10*time.Second, "the counter to expire", func() bool {
			return g.get("/s/get/t").StatusCode() == 404
		})
		(call{path: "/s/incr/t", status: 200, want: "1"}).check(t, g)
	})

	t.Run("concurrent Incr across VMs loses no update", func(t *testing.T) {
		c := &fasthttp.HostClient{Addr: g.addr, MaxConns: 64}
		defer c.CloseIdleConnections()
		// held requests wait for each other in Lua, each holding a VM:
		// they must land in different VMs (pool_size is 2), and all
		// count in the one store.
		vms := make(chan string, held)
		errs := make(chan error, held)
		var wg sync.WaitGroup
		for range held {
			wg.Go(func() {
				resp, err := g.tryDo(c, "GET", fmt.Sprintf("/s/hit?barrier=%d", held))
				if err != nil {
					errs <- err
					return
				}
				vms <- string(resp.Header.Peek("X-VM"))
			})
		}
		wg.Wait()
		close(vms)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		distinct := map[string]bool{}
		for id := range vms {
			distinct[id] = true
		}
		if len(distinct) != held {
			t.Errorf("%d requests held together ran in %d distinct VMs, want %d", held, len(distinct), held)
		}

		const workers, each = 16, 25
		var failed atomic.Int64
		var firstErr atomic.Value
		for range workers {
			wg.Go(func() {
				for range each {
					resp, err := g.tryDo(c, "GET", "/s/hit")
					if err == nil && resp.StatusCode() != 200 {
						err = fmt.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d of %d requests failed, first: %v", failed.Load(), workers*each, firstErr.Load())
		}
		(call{path: "/s/get/hits", status: 200, want: strconv.Itoa(held + workers*each)}).check(t, g)
	})
}

const proxyLua = `
local other = keystone.Proxy("other")
local direct = keystone.Proxy("%s")
local own = keystone.Proxy()

local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    if req:Header():Get("X-Block") == "1" then
      w:JSON(403, { error = "blocked by lua" })
      return
    end
    req:Header():Set("X-From-Lua", req.Path)
    w:Header():Set("X-Before-Proxy", "kept")
    next(w, req)
    w:Header():Set("X-After-Proxy", tostring(w:Status()))
  end
end)
r:Handle("/other/*", other)
r:Get("/direct/*", direct)
r:Get("/own/*", function(w, req) own(w, req) end)
r:Get("/fresh/*", function(w, req) keystone.Proxy("other")(w, req) end)
return r
`

// TestLuaProxy covers keystone.Proxy to another tenant, to an absolute URL
// and to the script's own tenant; request changes made before it reach
// the upstream, response changes after it reach the client, and a
// middleware that answers itself never calls an upstream.
func TestLuaProxy(t *testing.T) {
	t.Parallel()
	own, other, direct := startEcho(t, "own"), startEcho(t, "other"), startEcho(t, "direct")
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: front
    path_prefix: /front
    script: proxy.lua
    upstreams: [{url: %q}]
  - name: other
    domains: [other.internal]
    upstreams: [{url: %q}]
`, own.url(), other.url()), "scripts/proxy.lua", fmt.Sprintf(proxyLua, direct.url()))

	for _, c := range []struct{ name, path, upstream string }{
		{`keystone.Proxy("other") sends to that tenant's upstreams`, "/front/other/a?b=1", "other"},
		{`keystone.Proxy("http://...") sends to that URL`, "/front/direct/x", "direct"},
		{"keystone.Proxy() sends to the script's own tenant", "/front/own/y", "own"},
		{"keystone.Proxy called from a handler", "/front/fresh/z", "other"},
		{"a miss falls through to the own tenant inside the middleware", "/front/unrouted", "own"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := g.get(c.path)
			e := decodeEcho(t, resp)
			if e.ID != c.upstream || e.URI != c.path {
				t.Errorf("GET %s reached %s as %q, want %s as %q", c.path, e.ID, e.URI, c.upstream, c.path)
			}
			path, _, _ := strings.Cut(c.path, "?")
			if got := e.Headers["X-From-Lua"]; len(got) != 1 || got[0] != path {
				t.Errorf("header set before the proxy reached the upstream as %v, want [%s]", got, path)
			}
			if id := e.Headers["X-Request-Id"]; len(id) != 1 || id[0] != string(resp.Header.Peek("X-Request-ID")) {
				t.Errorf("upstream got request id %v, the client %q", id, resp.Header.Peek("X-Request-ID"))
			}
			for k, v := range map[string]string{"X-Before-Proxy": "kept", "X-After-Proxy": "200"} {
				if got := string(resp.Header.Peek(k)); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}

	t.Run("a middleware ending the request calls no upstream", func(t *testing.T) {
		before := own.requests.Load() + other.requests.Load() + direct.requests.Load()
		for _, p := range []string{"/front/other/a", "/front/direct/x", "/front/own/y", "/front/unrouted"} {
			resp := g.get(p, "X-Block", "1")
			if resp.StatusCode() != 403 || !strings.Contains(string(resp.Body()), "blocked by lua") {
				t.Errorf("GET %s: %d %q, want the middleware's 403", p, resp.StatusCode(), resp.Body())
			}
		}
		if n := own.requests.Load() + other.requests.Load() + direct.requests.Load() - before; n != 0 {
			t.Errorf("upstreams got %d requests, want 0", n)
		}
	})
}

const logEnvLua = `
local greeting = keystone.Env("KEYSTONE_SCRIPT_GREETING") or "Hello"
local r = chi.NewRouter()
r:Get("/greet/{name}", function(w, req)
  keystone.Log("info", "greeting", { name = req:URLParam("name"), n = 3, vip = true })
  local ok, err = pcall(keystone.Env, "KEYSTONE_ADMIN_TOKEN")
  w:JSON(200, {
    greeting = greeting .. ", " .. req:URLParam("name"),
    at_request = keystone.Env("KEYSTONE_SCRIPT_GREETING"),
    unset = keystone.Env("KEYSTONE_SCRIPT_UNSET") == nil,
    secret_readable = ok, secret_error = tostring(err),
  })
end)
return r
`

// TestLuaLogAndEnv covers keystone.Log (a line in the gateway's log with
// component=lua, the tenant, the script, the request id and the fields)
// and keystone.Env (KEYSTONE_SCRIPT_* only). Not parallel: it sets
// environment variables.
func TestLuaLogAndEnv(t *testing.T) {
	t.Setenv("KEYSTONE_SCRIPT_GREETING", "Hi")
	t.Setenv("KEYSTONE_ADMIN_TOKEN", "s3cret-token")
	g := startGateway(t, luaBlock+`
tenants:
  - name: greet
    path_prefix: /
    script: greet.lua
`, "scripts/greet.lua", logEnvLua)

	for _, clientID := range []string{"", "client-id-42"} {
		var hdr []string
		if clientID != "" {
			hdr = []string{"X-Request-ID", clientID}
		}
		resp := g.get("/greet/ada", hdr...)
		m := decodeJSON(t, resp)
		if m["greeting"] != "Hi, ada" || m["at_request"] != "Hi" || m["unset"] != true {
			t.Errorf("Env: got %s, want the KEYSTONE_SCRIPT_ variables", resp.Body())
		}
		if m["secret_readable"] != false || !strings.Contains(fmt.Sprint(m["secret_error"]), "KEYSTONE_SCRIPT_") ||
			strings.Contains(string(resp.Body()), "s3cret") {
			t.Errorf("Env of a variable outside KEYSTONE_SCRIPT_*: got %s, want an error", resp.Body())
		}

		id := string(resp.Header.Peek("X-Request-ID"))
		if clientID != "" && id != clientID {
			t.Errorf("X-Request-ID = %q, want the client's %q", id, clientID)
		}
		var line map[string]any
		eventually(t, 10*time.Second, "the keystone.Log line", func() bool {
			for _, l := range g.luaLogs("greeting") {
				if l["request_id"] == id {
					line = l
					return true
				}
			}
			return false
		})
		want := map[string]any{"level": "INFO", "tenant": "greet", "script": "greet.lua",
			"name": "ada", "n": float64(3), "vip": true}
		for k, v := range want {
			if line[k] != v {
				t.Errorf("log line %s = %v, want %v (%v)", k, line[k], v, line)
			}
		}
	}
}

const prefixLua = `
local r = chi.NewRouter()
r:Get("/", function(w, req) w:Write("root " .. req.Path) end)
r:Get("/hello", function(w, req) w:Write("hello " .. req.Path) end)
return r
`

// TestLuaRoutesUnderPathPrefix checks that a script's routes are relative
// to its tenant's path_prefix, that req.Path is the full path, and that a
// request no route matches goes to the tenant's upstreams (prefix stripped
// or not, as configured), or gets the gateway's JSON 404 when the tenant
// has none.
func TestLuaRoutesUnderPathPrefix(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: api
    path_prefix: /api
    script: prefix.lua
    upstreams: [{url: %q}]
  - name: strip
    path_prefix: /strip
    strip_prefix: true
    script: prefix.lua
    upstreams: [{url: %q}]
  - name: bare
    path_prefix: /bare
    script: prefix.lua
`, up.url(), up.url()), "scripts/prefix.lua", prefixLua)

	for _, c := range []call{
		{name: `r:Get("/") answers the prefix itself`, path: "/api", status: 200, want: "root /api"},
		{name: "a route answers under the prefix, req.Path is the full path", path: "/api/hello", status: 200, want: "hello /api/hello"},
		{name: "a route of a stripping tenant", path: "/strip/hello", status: 200, want: "hello /strip/hello"},
		{name: "a tenant without upstreams answers its routes", path: "/bare/hello", status: 200, want: "hello /bare/hello"},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, g) })
	}

	for _, c := range []struct{ name, path, uri string }{
		{"a miss goes to the upstreams", "/api/other?x=1", "/api/other?x=1"},
		{"a trailing slash is a miss that goes upstream", "/api/hello/", "/api/hello/"},
		{"a stripping tenant's miss goes upstream stripped", "/strip/other", "/other"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if e := decodeEcho(t, g.get(c.path)); e.URI != c.uri {
				t.Errorf("GET %s reached the upstream as %q, want %q", c.path, e.URI, c.uri)
			}
		})
	}

	t.Run("a miss of a tenant without upstreams is the gateway's JSON 404", func(t *testing.T) {
		errorBody(t, g.get("/bare/other"), 404, codeNotFound)
	})
	t.Run("the route outside the prefix matches no tenant", func(t *testing.T) {
		errorBody(t, g.get("/hello"), 404, codeNotFound)
	})
}

// TestLuaRequestID checks the request id on Lua-served answers: generated
// or propagated, on the response, visible to the script, and the same in
// the script's log lines.
func TestLuaRequestID(t *testing.T) {
	t.Parallel()
	g := startGateway(t, luaBlock+`
tenants:
  - name: id
    path_prefix: /
    script: id.lua
`, "scripts/id.lua", `
local r = chi.NewRouter()
r:Get("/id", function(w, req)
  keystone.Log("info", "seen")
  w:Write(req:Header():Get("X-Request-ID"))
end)
return r
`)
	for _, c := range []struct{ name, sent string }{
		{"a generated id", ""},
		{"a client's id", "trace-123"},
		{"an invalid client id is replaced", "bad id\twith tab"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.sent != "" {
				hdr = []string{"X-Request-ID", c.sent}
			}
			resp := g.get("/id", hdr...)
			id := string(resp.Header.Peek("X-Request-ID"))
			switch {
			case id == "":
				t.Fatal("no X-Request-ID on a Lua-served response")
			case c.sent == "trace-123" && id != c.sent:
				t.Errorf("X-Request-ID = %q, want the client's %q", id, c.sent)
			case c.sent != "trace-123" && len(id) != 32:
				t.Errorf("X-Request-ID = %q, want a generated 32-character id", id)
			}
			if got := string(resp.Body()); got != id {
				t.Errorf("the script read request id %q, the client got %q", got, id)
			}
			eventually(t, 10*time.Second, "a log line with the request id", func() bool {
				return slices.ContainsFunc(g.luaLogs("seen"), func(m map[string]any) bool { return m["request_id"] == id })
			})
		})
	}
}

const sandboxLua = `
local r = chi.NewRouter()
r:Get("/ok", function(w, req) w:Write("ok") end)

r:Get("/loop", function(w, req) while true do end end)
r:Get("/pcall-loop", function(w, req)
  while true do pcall(function() while true do end end) end
end)
r:Get("/error", function(w, req)
  w:Header():Set("X-Leak", "yes")
  w:Write("partial")
  local t = nil
  return t.field -- line:error
end)
r:Get("/raise", function(w, req)
  error("boom") -- line:raise
end)

r:Get("/os", function(w, req)
  w:Write(string.format("execute=%s exit=%s getenv=%s remove=%s time=%s",
    type(rawget(os, "execute")), type(rawget(os, "exit")), type(rawget(os, "getenv")), type(rawget(os, "remove")), type(os.time)))
end)
r:Get("/os-execute", function(w, req) os.execute("touch /tmp/keystone-pwned") end)
r:Get("/io", function(w, req) w:Write("io=" .. type(rawget(_G, "io"))) end)
r:Get("/io-open", function(w, req)
  local f = io.open("/etc/passwd")
  w:Write(f:read("*a"))
end)
r:Get("/require", function(w, req)
  local ok1, err1 = pcall(require, "../secret")
  local ok2, err2 = pcall(require, "secret")
  w:Write(string.format("%s %s | %s %s | pwned=%s", tostring(ok1), err1, tostring(ok2), err2, tostring(pwned)))
end)
r:Get("/require-call", function(w, req) require("../secret") end)
r:Get("/load", function(w, req)
  w:Write(string.format("loadstring=%s load=%s dofile=%s loadfile=%s",
    type(rawget(_G, "loadstring")), type(rawget(_G, "load")), type(rawget(_G, "dofile")), type(rawget(_G, "loadfile"))))
end)
r:Get("/loadstring-call", function(w, req) loadstring("return 1")() end)
r:Get("/debug", function(w, req)
  w:Write(string.format("debug=%s getfenv=%s setfenv=%s collectgarbage=%s",
    type(rawget(_G, "debug")), type(rawget(_G, "getfenv")), type(rawget(_G, "setfenv")), type(rawget(_G, "collectgarbage"))))
end)
r:Get("/debug-call", function(w, req) w:Write(debug.traceback()) end)

r:Get("/rep", function(w, req) w:Write(#string.rep("x", 1e10)) end)
r:Get("/rep-pcall", function(w, req)
  local ok, err = pcall(string.rep, "x", 1e10)
  w:Write(tostring(ok) .. " " .. err)
end)
r:Get("/concat", function(w, req)
  local part, t = string.rep("y", 512 * 1024), {}
  for i = 1, 4 do t[i] = part end
  w:Write(#table.concat(t))
end)
r:Get("/write", function(w, req)
  local part = string.rep("z", 512 * 1024)
  for i = 1, 4 do w:Write(part) end
end)
r:Get("/double", function(w, req)
  local s = "x"
  while true do s = s .. s end
end)
return r
`

// lineOf returns the 1-based line of src holding marker.
func lineOf(t *testing.T, src, marker string) float64 {
	t.Helper()
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, marker) {
			return float64(i + 1)
		}
	}
	t.Fatalf("no %q in the script", marker)
	return 0
}

// TestLuaSandboxAndLimits runs misbehaving scripts through the gateway: an
// infinite loop, runtime errors, the removed functions (os.execute,
// io.open, require outside the scripts folder, loadstring, debug) and huge
// strings. Each answers with the script's own answer or the gateway's JSON
// 500 carrying the request id, and after each one the gateway still serves
// the same tenant, another Lua tenant and a plain proxied tenant.
func TestLuaSandboxAndLimits(t *testing.T) {
	t.Parallel()
	plain := startEcho(t, "plain")
	// Short, so the loops end fast, yet several times what an ordinary
	// request needs on a starved machine.
	const maxExecution = 250 * time.Millisecond
	g := startGateway(t, luaSection(maxExecution.String())+yamlf(`
tenants:
  - name: sb
    path_prefix: /sb
    script: sandbox.lua
  - name: ok
    path_prefix: /ok
    script: ok.lua
  - name: plain
    path_prefix: /plain
    upstreams: [{url: %q}]
`, plain.url()),
		"scripts/sandbox.lua", sandboxLua,
		"scripts/ok.lua", `local r = chi.NewRouter(); r:Get("/hi", function(w, req) w:Write("hi") end); return r`,
		// Outside the scripts folder: require must not reach it.
		"secret.lua", `pwned = true; return "secret"`,
	)
	script := func() luavm.Stats { return scriptStats(g.srv, "sb") }
	client := &fasthttp.HostClient{Addr: g.addr}
	defer client.CloseIdleConnections()

	stillServing := func(t *testing.T) {
		t.Helper()
		for _, c := range []call{
			{path: "/sb/ok", status: 200, want: "ok"},
			{path: "/ok/hi", status: 200, want: "hi"},
		} {
			c.check(t, g)
		}
		if e := decodeEcho(t, g.get("/plain/x")); e.ID != "plain" {
			t.Errorf("the plain tenant answered from %q", e.ID)
		}
	}

	const (
		scriptError   = "script error"
		scriptTimeout = "script timeout"
	)
	for _, c := range []struct {
		name string
		path string
		// want is the script's own 200 answer; otherwise the gateway
		// answers a JSON 500 with message fail, logged once with the
		// script's file and, when line is set, the line of that marker.
		want    string
		has     []string
		fail    string
		line    string
		logHas  string
		timeout bool
	}{
		{name: "an infinite loop is stopped at max_execution", path: "/loop", fail: scriptTimeout, timeout: true},
		{name: "pcall cannot catch the timeout", path: "/pcall-loop", fail: scriptTimeout, timeout: true},
		{name: "a runtime error, with what the script wrote discarded", path: "/error", fail: scriptError,
			line: "line:error", logHas: "attempt to index"},
		{name: "error()", path: "/raise", fail: scriptError, line: "line:raise", logHas: "boom"},
		{name: "os keeps only time functions", path: "/os",
			want: "execute=nil exit=nil getenv=nil remove=nil time=function"},
		{name: "calling os.execute fails", path: "/os-execute", fail: scriptError, logHas: "os.execute is not available in scripts"},
		{name: "io is not there", path: "/io", want: "io=nil"},
		{name: "calling io.open fails", path: "/io-open", fail: scriptError, logHas: "io is not available in scripts"},
		{name: "require cannot leave the scripts folder", path: "/require",
			has: []string{"false", "invalid module name", "cannot read module", "pwned=nil"}},
		{name: `require("../x") fails`, path: "/require-call", fail: scriptError, logHas: "invalid module name"},
		{name: "load, loadstring, dofile and loadfile are not there", path: "/load",
			want: "loadstring=nil load=nil dofile=nil loadfile=nil"},
		{name: "calling loadstring fails", path: "/loadstring-call", fail: scriptError, logHas: "loadstring is not available in scripts"},
		{name: "debug and the environment functions are not there", path: "/debug",
			want: "debug=nil getfenv=nil setfenv=nil collectgarbage=nil"},
		{name: "calling debug fails", path: "/debug-call", fail: scriptError, logHas: "debug is not available in scripts"},
		{name: "a huge string.rep fails before allocating", path: "/rep", fail: scriptError, logHas: "string limit"},
		{name: "pcall catches the string limit", path: "/rep-pcall", has: []string{"false", "string limit"}},
		{name: "table.concat over the limit fails", path: "/concat", fail: scriptError, logHas: "string limit"},
		{name: "w:Write over the limit fails", path: "/write", fail: scriptError, logHas: "string limit"},
		{name: "a doubling s = s .. s loop is stopped at max_execution", path: "/double", fail: scriptTimeout, timeout: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.fail == "" {
				(call{path: "/sb" + c.path, status: 200, want: c.want, has: c.has}).check(t, g)
				stillServing(t)
				return
			}

			discarded := script().VMsDiscarded
			start := time.Now()
			resp, err := g.tryDo(client, "GET", "/sb"+c.path)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}

			m := errorBody(t, resp, 500, codeInternal)
			if m["message"] != c.fail {
				t.Errorf("message = %v, want %q", m["message"], c.fail)
			}
			if len(resp.Header.Peek("X-Leak")) > 0 || strings.Contains(string(resp.Body()), "partial") {
				t.Errorf("the client saw what the failed script wrote: %q", resp.Body())
			}
			if c.timeout {
				// Generous: max_execution is wall-clock time, and the
				// last s .. s of the doubling loop, started just before
				// the deadline, copies hundreds of MiB on a starved
				// machine. A script that is not stopped never answers.
				t.Logf("answered after %v (max_execution %v)", took, maxExecution)
				if took > maxExecution+20*time.Second {
					t.Errorf("answered after %v, want about max_execution (%v)", took, maxExecution)
				}
				if d := script().VMsDiscarded; d <= discarded {
					t.Errorf("VMsDiscarded = %d after a timeout, want more than %d", d, discarded)
				}
			}

			id := m["request_id"]
			var lines []map[string]any
			eventually(t, 10*time.Second, "the script's log line", func() bool {
				lines = g.logRecords(func(l map[string]any) bool {
					return l["component"] == "lua" && l["request_id"] == id && l["level"] == "ERROR"
				})
				return len(lines) > 0
			})
			if len(lines) != 1 {
				t.Fatalf("%d error lines for the request, want 1: %v", len(lines), lines)
			}
			l := lines[0]
			// The file as the user can open it: under scripts_dir.
			if l["msg"] != c.fail || !strings.HasSuffix(fmt.Sprint(l["file"]), filepath.Join("scripts", "sandbox.lua")) || l["tenant"] != "sb" {
				t.Errorf("log line %v, want msg %q, file .../scripts/sandbox.lua, tenant sb", l, c.fail)
			}
			if c.line != "" && l["line"] != lineOf(t, sandboxLua, c.line) {
				t.Errorf("log line names line %v, want %v", l["line"], lineOf(t, sandboxLua, c.line))
			}
			if c.logHas != "" && !strings.Contains(fmt.Sprint(l["error"]), c.logHas) {
				t.Errorf("logged error %q does not mention %q", l["error"], c.logHas)
			}
			stillServing(t)
		})
	}
	if _, err := os.Stat("/tmp/keystone-pwned"); err == nil {
		t.Error("os.execute ran")
	}
}

// scriptStats reads the counters of a tenant's script in the published
// snapshot.
func scriptStats(s *Server, tenant string) luavm.Stats {
	return s.snap.Load().byName[tenant].script.Stats()
}

// TestLuaCheckReportsLoadErrors runs server.Check, `keystone check`, on
// configs whose script cannot load: the error names the script file and
// the line, and server.New refuses the same config.
func TestLuaCheckReportsLoadErrors(t *testing.T) {
	t.Parallel()
	const head = "local r = chi.NewRouter()\nlocal h = function(w, req) w:Write(\"x\") end\n"
	for _, c := range []struct {
		name, script string
		want         []string
	}{
		{"a syntax error", "local r = chi.NewRouter()\nlocal x = = 1\nreturn r\n",
			[]string{"bad.lua:2:"}},
		{"a bad regexp in a route pattern", head + "r:Get(\"/users/{id:[0-9+}\", h)\nreturn r\n",
			[]string{`bad.lua:3: route "/users/{id:[0-9+}"`, "missing closing ]"}},
		{"a wildcard not at the end of a pattern", head + "r:Get(\"/a/*/b\", h)\nreturn r\n",
			[]string{`bad.lua:3: route "/a/*/b"`}},
		{"an unknown keystone.Proxy target", head + "r:Handle(\"/*\", keystone.Proxy(\"billing\"))\nreturn r\n",
			[]string{`bad.lua:3: keystone.Proxy("billing"): no tenant of that name`}},
		{"keystone.Proxy of a tenant without upstreams", head + "r:Handle(\"/*\", keystone.Proxy(\"empty\"))\nreturn r\n",
			[]string{`bad.lua:3: keystone.Proxy("empty"): tenant has no upstreams`}},
		{"Use after a route", head + "r:Get(\"/a\", h)\nr:Use(function(next) return next end)\nreturn r\n",
			[]string{"bad.lua:4: Use: all middlewares must be defined before routes"}},
		{"a runtime error at load", head + "error(\"nope\")\nreturn r\n",
			[]string{"bad.lua:3:", "nope"}},
		{"no router returned", head + "r:Get(\"/a\", h)\n",
			[]string{"bad.lua:", "script must return the router"}},
		{"every bad pattern at once", head + "r:Get(\"/x/{\", h)\nr:Get(\"/y/{id:(}\", h)\nreturn r\n",
			[]string{"bad.lua:3: route", "bad.lua:4: route"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := loadConfig(t, `
tenants:
  - name: main
    path_prefix: /main
    script: bad.lua
    upstreams: [{url: "http://127.0.0.1:1"}]
  - name: empty
    path_prefix: /empty
    script: ok.lua
`, "bad.lua", c.script, "ok.lua", "local r = chi.NewRouter(); return r")
			err := Check(cfg)
			if err == nil {
				t.Fatal("Check: no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check error %q does not contain %q", err, w)
				}
			}
			if _, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)}); err == nil {
				t.Error("server.New accepted the config Check refused")
			}
		})
	}

	t.Run("a good script passes", func(t *testing.T) {
		t.Parallel()
		cfg := loadConfig(t, `
tenants:
  - name: main
    path_prefix: /main
    script: good.lua
    upstreams: [{url: "http://127.0.0.1:1"}]
`, "good.lua", routesLua)
		if err := Check(cfg); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}
