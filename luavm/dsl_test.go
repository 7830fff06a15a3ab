package luavm

import (
	"encoding/json"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// step is one request to a script and what must come back. headers
// listed with the value "<absent>" must not be in the response.
type step struct {
	req     request
	status  int
	body    string // exact, unless contains or check is set
	headers map[string]string
	// contains lists substrings of the body.
	contains []string
	// upstream, when set, is the upstream that must have answered.
	upstream string
	check    func(t *testing.T, r result)
}

type scriptCase struct {
	name   string
	script string
	opts   func(e *env) Options
	setup  func(t *testing.T, e *env)
	steps  []step
}

const absent = "<absent>"

func get(path string) request { return request{method: "GET", path: path} }

func trace(names string) map[string]string { return map[string]string{"X-Trace": names} }

func TestScriptsThroughTheDSL(t *testing.T) {
	cases := []scriptCase{
		{
			name:   "every router method, pattern and nesting",
			script: "routes.lua",
			steps: []step{
				{req: get("/get"), status: 200, body: "get", headers: trace("root1,root2")},
				{req: request{method: "POST", path: "/post"}, status: 200, body: "post"},
				{req: request{method: "PUT", path: "/put"}, status: 200, body: "put"},
				{req: request{method: "PATCH", path: "/patch"}, status: 200, body: "patch"},
				{req: request{method: "DELETE", path: "/delete"}, status: 200, body: "delete"},
				{req: request{method: "HEAD", path: "/head"}, status: 200, headers: map[string]string{"X-Head": "yes"}},
				{req: request{method: "OPTIONS", path: "/options"}, status: 200, body: "options"},
				{req: request{method: "TRACE", path: "/trace"}, status: 200, body: "trace"},
				{req: request{method: "PURGE", path: "/purge"}, status: 200, body: "purge"},
				{req: request{method: "REPORT", path: "/report"}, status: 200, body: "report"},
				{req: request{method: "POST", path: "/any"}, status: 200, body: "any POST"},
				{req: get("/any"), status: 200, body: "get replaces any"},
				{req: request{method: "DELETE", path: "/anyfunc"}, status: 200, body: "anyfunc DELETE"},
				{req: get("/users/7"), status: 200, body: "user 7"},
				{req: get("/users/7/posts/9"), status: 200, body: "7/9"},
				{req: get("/users/7/posts/x"), status: 404, body: "custom not found /users/7/posts/x", headers: trace("root1,root2")},
				{req: get("/files/a/b.txt"), status: 200, body: "file a/b.txt"},
				{req: get("/files/special"), status: 200, body: "special file"},
				{req: get("/files/"), status: 200, body: "file "},
				{req: get("/num/12"), status: 200, body: "num 12"},
				{req: get("/num/ab"), status: 404, body: "custom not found /num/ab"},
				{req: get("/items/abc.json"), status: 200, body: "item abc"},
				{req: get("/with"), status: 200, body: "with", headers: trace("root1,root2,with1,with2")},
				{req: get("/early"), status: 401, body: "denied", headers: trace("root1,root2")},
				{req: get("/group"), status: 200, body: "group", headers: trace("root1,root2,group")},
				{req: get("/api"), status: 200, body: "api root", headers: trace("root1,root2,api")},
				{req: get("/api/v1/3"), status: 200, body: "api v1 3", headers: trace("root1,root2,api")},
				{req: get("/api/nested/deep"), status: 200, body: "deep", headers: trace("root1,root2,api,nested")},
				{req: get("/api/zzz"), status: 404, body: "api not found", headers: trace("root1,root2,api")},
				{req: request{method: "POST", path: "/api/v1/3"}, status: 405, body: "custom 405",
					headers: map[string]string{"X-Trace": "root1,root2,api", "Allow": "GET"}},
				{req: get("/legacy"), status: 200, body: "legacy root", headers: trace("root1,root2,legacy")},
				{req: get("/legacy/old"), status: 200, body: "legacy old"},
				{req: get("/legacy/x/y"), status: 200, upstream: "legacy", headers: trace("root1,root2,legacy"),
					check: func(t *testing.T, r result) { wantPath(t, r, "/legacy/x/y") }},
				// fasthttp/router answers "/legacy/old/" with a trailing-slash
				// hint; chi goes on to the catch-all, and so do we.
				{req: get("/legacy/old/"), status: 200, upstream: "legacy"},
				{req: get("/mounted"), status: 200, upstream: "api2", check: func(t *testing.T, r result) { wantPath(t, r, "/mounted") }},
				{req: get("/mounted/a/b"), status: 200, upstream: "api2"},
				{req: get("/nowhere"), status: 404, body: "custom not found /nowhere", headers: trace("root1,root2")},
				{req: get("/get/"), status: 404, body: "custom not found /get/"},
				{req: request{method: "POST", path: "/get"}, status: 405, body: "custom 405",
					headers: map[string]string{"Allow": "GET", "X-Trace": "root1,root2"}},
				{req: request{method: "POST", path: "/users/1"}, status: 405, headers: map[string]string{"Allow": "GET"}},
			},
		},
		{
			name:   "every req field and method, every w method",
			script: "reqw.lua",
			steps: []step{
				{
					req: request{method: "POST", path: "/echo/5?q=hi&x=y", body: "payload",
						headers: map[string]string{"X-One": "1", "Cookie": "session=abc"},
						add:     [][2]string{{"X-Multi", "a"}, {"X-Multi", "b"}}},
					status:  201,
					headers: map[string]string{"Content-Type": "application/json"},
					check: func(t *testing.T, r result) {
						wantJSON(t, r.body, map[string]any{
							"method": "POST", "host": "test.local", "path": "/echo/5", "raw_query": "q=hi&x=y",
							"remote": "127.0.0.1", "q": "hi", "missing": "", "body": "payload", "id": "5",
							"param_missing": "", "one": "1", "multi": []any{"a", "b"}, "cookie": "abc",
						})
					},
				},
				{req: request{method: "GET", path: "/headers", headers: map[string]string{"X-Gone": "bye"}}, status: 200,
					body: "1|a,b||v|2|", headers: map[string]string{"X-Out": "v", "X-Multi-Out": "1, 2", "X-Tmp": absent}},
				{req: get("/status"), status: 418, body: "ab 418 ab"},
				{req: get("/setbody"), status: 200, body: "new"},
				{req: get("/redirect"), status: 302, headers: map[string]string{"Location": "http://test.local/elsewhere"}},
				{req: get("/redirect301"), status: 301, headers: map[string]string{"Location": "https://example.com/x"}},
				{req: get("/context"), status: 200, body: "user=bob"},
				{req: get("/context-fresh"), status: 200, body: "user=nil"},
				{req: get("/context"), status: 200, body: "user=bob"},
				{req: get("/context-fresh"), status: 200, body: "user=nil"},
				{req: request{method: "POST", path: "/rewrite?orig=1", body: "orig"}, status: 200, upstream: "api",
					check: func(t *testing.T, r result) {
						e := upstreamEcho(t, r.body)
						if e.Path != "/rewritten/path" || e.Query != "a=1" || e.Body != "new body" || e.Headers["X-Rewritten"] != "1" {
							t.Errorf("upstream saw %+v", e)
						}
					}},
				{req: get("/setquery?z=9"), status: 200, upstream: "api",
					check: func(t *testing.T, r result) {
						if e := upstreamEcho(t, r.body); e.Query != "b=2" {
							t.Errorf("upstream query %q, want b=2", e.Query)
						}
					}},
				{req: get("/bad-header"), status: 500, contains: []string{"script error"}},
			},
		},
		{
			name:   "middleware around keystone.Proxy",
			script: "proxy.lua",
			steps: []step{
				{req: get("/private/x"), status: 401, body: `{"error":"unauthorized"}`,
					headers: map[string]string{"X-Served-By": "keystone", "X-Upstream": "overridden by the upstream"}},
				{req: request{method: "POST", path: "/private/x", headers: map[string]string{"Authorization": "Bearer secret"}},
					status: 200, upstream: "api", headers: map[string]string{"X-Served-By": "keystone"},
					check: func(t *testing.T, r result) {
						if e := upstreamEcho(t, r.body); e.Headers["X-From-Gateway"] != "1" || e.Method != "POST" {
							t.Errorf("upstream saw %+v", e)
						}
					}},
				{req: get("/transform/a"), status: 202, body: "seen /transform/a by api2",
					headers: map[string]string{"X-Upstream-Status": "200", "X-Upstream": absent, "X-Served-By": "keystone"}},
				{req: request{method: "GET", path: "/transform/b", headers: map[string]string{"X-Upstream-Status": "503"}},
					status: 202, headers: map[string]string{"X-Upstream-Status": "503"}},
				{req: get("/rewrite/abc"), status: 200, upstream: "api", check: func(t *testing.T, r result) { wantPath(t, r, "/v2/abc") }},
				{req: get("/anything/else"), status: 200, upstream: "api",
					headers: map[string]string{"X-Served-By": "keystone", "X-Multi": "1, 2", "X-Upstream": "api", "Set-Cookie": "gw=1; Path=/"}},
			},
		},
		{
			name:   "fallback and 405 without NotFound",
			script: "fallback.lua",
			opts: func(e *env) Options {
				h, _ := e.host.ProxyHandler("api")
				return Options{Fallback: h}
			},
			steps: []step{
				{req: get("/only-get"), status: 200, body: "got", headers: map[string]string{"X-Root-Middleware": "1"}},
				{req: get("/nowhere"), status: 200, upstream: "api", headers: map[string]string{"X-Root-Middleware": "1"}},
				{req: request{method: "POST", path: "/only-get"}, status: 405, contains: []string{"method not allowed"},
					headers: map[string]string{"Allow": "GET", "X-Root-Middleware": "1"}},
				{req: get("/only-get/5"), status: 405, headers: map[string]string{"Allow": "POST"}},
				{req: request{method: "POST", path: "/only-get/5"}, status: 200, body: "posted"},
			},
		},
		{
			name:   "routes relative to the tenant path prefix",
			script: "prefix.lua",
			opts:   func(*env) Options { return Options{PathPrefix: "/api"} },
			steps: []step{
				{req: get("/api"), status: 200, body: "prefix root /api"},
				{req: get("/api/hello"), status: 200, body: "hello /api/hello"},
				{req: get("/api/v1/9"), status: 200, body: "v1 9"},
				{req: get("/hello"), status: 404, contains: []string{"not found"}},
			},
		},
		{
			name:   "no middleware: Go-only dispatch",
			script: "bare.lua",
			steps: []step{
				{req: get("/hello"), status: 200, body: "Hello World"},
				{req: get("/proxied/x"), status: 200, upstream: "api"},
				{req: get("/missing"), status: 404, contains: []string{`"error":"not found"`}},
			},
		},
		{
			name:   "every built-in",
			script: "builtins.lua",
			setup: func(t *testing.T, e *env) {
				t.Setenv("KEYSTONE_SCRIPT_UPSTREAM", "http://"+e.ups["api2"].addr)
				t.Setenv("KEYSTONE_SCRIPT_GREETING", "hi")
			},
			steps: []step{
				{req: get("/json"), status: 200, check: func(t *testing.T, r result) {
					wantJSON(t, r.body, map[string]any{
						"encoded": `{"arr":[1,2,3],"empty":{},"empty_arr":[],"f":1.5,"n":42,"nested":{"k":["x"]},"null":null,"s":"a\"b\n","t":true}`,
						"a2":      true, "a3": 3.0, "c": "d", "e": true, "f": false, "reencoded": "[1,null,3]",
						"bad": true, "bad_err": true, "cycle": true, "fn": true,
					})
				}},
				{req: get("/store"), status: 200, check: func(t *testing.T, r result) {
					wantJSON(t, r.body, map[string]any{
						"v": "v", "num": "5", "a": 1.0, "b": 11.0, "c": 10.0, "bad": true,
						"bad_err": ErrNotInteger.Error(), "gone": true,
					})
				}},
				{req: get("/hits"), status: 200, body: "1"},
				{req: get("/hits"), status: 200, body: "2"},
				{req: get("/http"), status: 200, check: func(t *testing.T, r result) {
					wantJSON(t, r.body, map[string]any{
						"status": 200.0, "upstream": "api2", "sub_path": "/sub", "sub_query": "x=1", "sub_header": "yes",
						"post_body": "payload", "put_method": "PUT", "unreachable": true,
					})
				}},
				{req: get("/env"), status: 200, body: "hi nil false"},
				{req: get("/require"), status: 200, body: "hello, lua true 1"},
				{req: get("/proxy-default"), status: 200, upstream: "api"},
				{req: get("/proxy-url"), status: 200, upstream: "api2"},
				{req: get("/proxy-inline"), status: 200, upstream: "api2", headers: map[string]string{"X-After": "1"}},
			},
		},
		{
			name:   "sandbox",
			script: "sandbox.lua",
			steps: append(probeSteps("blocked", "os_execute", "os_exit", "os_getenv", "os_remove", "io_open",
				"require_parent", "require_abs", "require_missing", "loadstring", "load", "dofile", "loadfile",
				"debug", "package", "collectgarbage", "setfenv", "getfenv", "string_dump", "coroutine", "module",
				"newproxy", "env_home", "new_router_at_request"),
				append(probeSteps("allowed", "os_time", "os_date", "os_clock", "math_random"),
					step{req: get("/metatable"), status: 200, body: "keystone.Request keystone.ResponseWriter"})...),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			opts := Options{}
			if tc.opts != nil {
				opts = tc.opts(e)
			}
			f := serveScript(t, loadTestdata(t, e, testConfig(&logBuffer{}), tc.script, opts))
			for _, st := range tc.steps {
				checkStep(t, st, f.send(t, st.req))
			}
		})
	}
}

// checkStep compares a response with what a step wants.
func checkStep(t *testing.T, st step, r result) {
	t.Helper()
	name := st.req.method + " " + st.req.path
	if r.status != st.status {
		t.Errorf("%s: status %d, want %d (body %q)", name, r.status, st.status, r.body)
		return
	}
	if st.body != "" && r.body != st.body {
		t.Errorf("%s: body %q, want %q", name, r.body, st.body)
	}
	for _, sub := range st.contains {
		if !strings.Contains(r.body, sub) {
			t.Errorf("%s: body %q, want it to contain %q", name, r.body, sub)
		}
	}
	for k, v := range st.headers {
		// fasthttp normalizes names as net/textproto does: X-Ab-Variant.
		k = textproto.CanonicalMIMEHeaderKey(k)
		got, ok := r.headers[k]
		if v == absent && ok {
			t.Errorf("%s: header %s = %q, want none", name, k, got)
		} else if v != absent && got != v {
			t.Errorf("%s: header %s = %q, want %q", name, k, got, v)
		}
	}
	if st.upstream != "" && r.headers["X-Upstream"] != st.upstream && !strings.Contains(r.body, `"upstream":"`+st.upstream+`"`) {
		t.Errorf("%s: answered by %q (body %q), want upstream %q", name, r.headers["X-Upstream"], r.body, st.upstream)
	}
	if st.check != nil {
		st.check(t, r)
	}
}

func probeSteps(want string, names ...string) []step {
	steps := make([]step, len(names))
	for i, n := range names {
		steps[i] = step{req: get("/probe/" + n), status: 200, body: want}
	}
	return steps
}

func wantPath(t *testing.T, r result, path string) {
	t.Helper()
	if e := upstreamEcho(t, r.body); e.Path != path {
		t.Errorf("upstream saw path %q, want %q", e.Path, path)
	}
}

// wantJSON checks that body is a JSON object holding at least want.
func wantJSON(t *testing.T, body string, want map[string]any) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
}

// TestConnectRoute calls Handler directly: HTTP clients send CONNECT in
// authority form, which has no path to route.
func TestConnectRoute(t *testing.T) {
	e := newEnv(t)
	s := loadTestdata(t, e, testConfig(&logBuffer{}), "routes.lua", Options{})
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("CONNECT")
	ctx.Request.SetRequestURI("/connect")
	s.Handler(&ctx)
	if got := string(ctx.Response.Body()); ctx.Response.StatusCode() != 200 || got != "connect" {
		t.Errorf("CONNECT /connect: %d %q", ctx.Response.StatusCode(), got)
	}
}
