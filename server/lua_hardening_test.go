package server

// Issue 8, script side, through the real gateway: scripts stay inside
// their limits whatever the input (§4), chi and Go shapes work as users
// write them (§5), what a script changes on a request stays a valid
// request without credentials the gateway made up (§2), and errors a
// newcomer meets say what happened and where (§6).

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const hostileLua = `
local r = chi.NewRouter()
r:Get("/ok", function(w, req) w:Write("ok") end)
-- The trim idiom: quadratic on one byte, a long run of spaces, one byte.
r:Post("/trim", function(w, req) w:Write(req:Body():match("^%s*(.-)%s*$")) end)
r:Post("/gsub-trim", function(w, req) w:Write((req:Body():gsub("^%s*(.-)%s*$", "%1"))) end)
r:Post("/find", function(w, req) w:Write(tostring(req:Body():find("(.-)%s*$"))) end)
r:Post("/gmatch", function(w, req)
  local n = 0
  for s in req:Body():gmatch("(.-)%s*$") do n = n + 1 end
  w:Write(tostring(n))
end)
r:Post("/bytes", function(w, req) w:Write(tostring(select("#", req:Body():byte(1, -1)))) end)
r:Post("/unpack", function(w, req) w:Write(tostring(select("#", unpack({}, 1, #req:Body())))) end)
return r
`

// TestLuaHostileInputStopsAtMaxExecution sends the inputs that held a
// core for seconds inside one builtin: each request now ends close to
// max_execution (50ms) and the gateway keeps serving.
func TestLuaHostileInputStopsAtMaxExecution(t *testing.T) {
	g := startGateway(t, luaSection("50ms")+`
tenants:
  - name: lua
    path_prefix: /
    script: hostile.lua
`, "scripts/hostile.lua", hostileLua)

	spaces := "x" + strings.Repeat(" ", 200_000) + "x"
	for _, c := range []struct {
		path, body, want string
	}{
		// Unbounded, each of these is ~2e10 matcher steps: minutes.
		{"/trim", spaces, "script timeout"},
		{"/gsub-trim", spaces, "script timeout"},
		{"/find", spaces, "script timeout"},
		{"/gmatch", spaces, "script timeout"},
		// Refused at once instead of growing the stack a value at a time.
		{"/bytes", strings.Repeat("a", 1_000_000), "script error"},
		{"/unpack", strings.Repeat("a", 1_000_000), "script error"},
	} {
		t.Run(c.path, func(t *testing.T) {
			start := time.Now()
			resp := g.do("POST", "", c.path, []byte(c.body))
			elapsed := time.Since(start)
			scriptFailed(t, resp, c.want)
			// Not a timing assertion: 40x max_execution, far below the
			// unbounded run, leaves room for a loaded -race machine.
			if elapsed > 2*time.Second {
				t.Errorf("answered after %v", elapsed)
			}
			if resp := g.get("/ok"); resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
				t.Errorf("after %s: /ok answered %d %q", c.path, resp.StatusCode(), resp.Body())
			}
		})
	}
	// The same handlers on friendly input.
	if resp := g.do("POST", "", "/trim", []byte("  trim me  ")); string(resp.Body()) != "trim me" {
		t.Errorf("/trim on a short body: %d %q", resp.StatusCode(), resp.Body())
	}
}

// tableLua is a script whose functions each return a table literal of
// perFunc entries, about size bytes in all.
func tableLua(size, perFunc int) string {
	var b strings.Builder
	b.WriteString("local parts = {}\n")
	for i := 0; b.Len() < size; {
		b.WriteString("parts[#parts + 1] = function() return {\n")
		for k := 0; k < perFunc && b.Len() < size; k++ {
			fmt.Fprintf(&b, "  {n = \"item%d\", v = %d},\n", i, i)
			i++
		}
		b.WriteString("} end\n")
	}
	b.WriteString("local r = chi.NewRouter()\nr:Get(\"/n\", function(w, req) w:Write(tostring(#parts)) end)\nreturn r\n")
	return b.String()
}

// newError builds a server from yaml and files and returns its error.
func newError(t *testing.T, yaml string, files ...string) (string, error) {
	t.Helper()
	cfg := loadConfig(t, yaml, files...)
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewJSONHandler(&syncBuffer{}, nil))})
	if err == nil {
		_ = srv.Shutdown(t.Context())
	}
	return cfg.ScriptsDir, err
}

func TestLuaLargeScripts(t *testing.T) {
	t.Run("a table literal of 100,000 entries is refused at the constant that crosses the limit", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("local t = {\n")
		for i := range 100_000 {
			fmt.Fprintf(&b, "  %d,\n", i)
		}
		b.WriteString("}\nreturn chi.NewRouter()\n")
		start := time.Now()
		dir, err := newError(t, luaBlock+"  max_script_size: 2MiB\ntenants:\n  - name: lua\n    path_prefix: /\n    script: big.lua\n",
			"scripts/big.lua", b.String())
		// gopher-lua alone compiled this in ~27s.
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Errorf("refused after %v", elapsed)
		}
		want := filepath.Join(dir, "big.lua") + ":2050: function has more than 2048 distinct constants"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New = %v, want %q", err, want)
		}
	})
	t.Run("a script over lua.max_script_size is refused", func(t *testing.T) {
		src := "-- " + strings.Repeat("x", 70_000) + "\nreturn chi.NewRouter()\n"
		dir, err := newError(t, luaBlock+"  max_script_size: 64KiB\ntenants:\n  - name: lua\n    path_prefix: /\n    script: big.lua\n",
			"scripts/big.lua", src)
		want := fmt.Sprintf("%s:1: script of %d bytes exceeds lua.max_script_size (65536 bytes)", filepath.Join(dir, "big.lua"), len(src))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New = %v, want %q", err, want)
		}
	})
	t.Run("a 1 MiB script of data tables within the limits loads and serves", func(t *testing.T) {
		g := startGateway(t, luaBlock+"tenants:\n  - name: lua\n    path_prefix: /\n    script: data.lua\n",
			"scripts/data.lua", tableLua(1<<20-200, 1000))
		if resp := g.get("/n"); resp.StatusCode() != 200 || string(resp.Body()) == "0" {
			t.Errorf("GET /n = %d %q", resp.StatusCode(), resp.Body())
		}
	})
}

const shapesLua = `
local r = chi.NewRouter()

r:Get("/status/{code}", function(w, req)
  w:WriteHeader(tonumber(req:URLParam("code")))
  w:Write("status set")
end)

r:Get("/error-big", function(w, req) error(string.rep("x", 1024 * 1024)) end)
r:Get("/log-big", function(w, req)
  local big = string.rep("y", 1024 * 1024)
  local fields = {big = big}
  for i = 1, 500 do fields["f" .. i] = i end
  keystone.Log("info", big, fields)
  w:Write("logged")
end)

r:Post("/fields", function(w, req)
  w:JSON(200, {
    header_field = req.Header:Get("X-A"),
    header_method = req:Header():Get("X-A"),
    url_path = req.URL.Path,
    url_raw_query = req.URL.RawQuery,
    url_host = req.URL.Host,
    url_string = tostring(req.URL),
    request_uri = req.RequestURI,
    content_length = req.ContentLength,
    proto = req.Proto,
    proto_major = req.ProtoMajor,
    proto_minor = req.ProtoMinor,
    method = req.Method,
    host = req.Host,
  })
end)

r:Route("/api", function(api)
  api:Get("/", function(w, req) w:Write("api root " .. req.Path) end)
  api:Get("/x", function(w, req) w:Write("api x") end)
end)
local sub = chi.NewRouter()
sub:Get("/", function(w, req) w:Write("mounted root " .. req.Path) end)
r:Mount("/m", sub)

r:Get("/text", function(w, req) w:Write("hello") end)
r:Get("/html", function(w, req) w:Write("<!DOCTYPE html><html><body>hi</body></html>") end)
r:Get("/typed", function(w, req) w:Header():Set("Content-Type", "application/x-custom") w:Write("x") end)
r:Get("/proxied", function(w, req) keystone.Proxy("up")(w, req) end)

r:Get("/io", function(w, req) io.open("/etc/passwd") end)
r:Get("/os", function(w, req) os.execute("true") end)
r:Get("/debug", function(w, req) debug.traceback() end)
return r
`

// TestLuaShapes covers what a script may set and what it reads: only
// final statuses, bounded log lines, Go's Request fields, chi's subrouter
// roots, a default Content-Type, and errors naming removed libraries.
func TestLuaShapes(t *testing.T) {
	// An upstream answering without a Content-Type.
	up := startRaw(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\nuntyped upstream body")
	})
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: lua
    path_prefix: /
    script: shapes.lua
  - name: up
    domains: [up.internal]
    upstreams: [{url: %q}]
`, up.url()), "scripts/shapes.lua", shapesLua)

	t.Run("w:WriteHeader takes final statuses only", func(t *testing.T) {
		for _, code := range []int{100, 101, 103, 199, 600} {
			scriptFailed(t, g.get(fmt.Sprintf("/status/%d", code)), "script error")
		}
		for _, code := range []int{200, 204, 418, 599} {
			if resp := g.get(fmt.Sprintf("/status/%d", code)); resp.StatusCode() != code {
				t.Errorf("WriteHeader(%d): status %d", code, resp.StatusCode())
			}
		}
		// A raw client sees one final response per request.
		out := g.raw("GET /status/100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second)
		if strings.Count(out, "HTTP/1.1 ") != 1 || !strings.HasPrefix(out, "HTTP/1.1 500") {
			t.Errorf("raw answer to WriteHeader(100):\n%s", out)
		}
	})

	t.Run("script error and keystone.Log lines are bounded", func(t *testing.T) {
		scriptFailed(t, g.get("/error-big"), "script error")
		if resp := g.get("/log-big"); resp.StatusCode() != 200 {
			t.Fatalf("/log-big: %d", resp.StatusCode())
		}
		var sawError, sawLog bool
		for _, line := range strings.Split(g.logs.String(), "\n") {
			if !strings.Contains(line, `"component":"lua"`) {
				continue
			}
			if len(line) > 64<<10 {
				t.Errorf("log line of %d bytes: %.200s...", len(line), line)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				continue
			}
			if m["msg"] == "script error" && strings.HasPrefix(fmt.Sprint(m["error"]), "xxxx") {
				sawError = true
				if e := fmt.Sprint(m["error"]); len(e) > 2200 || !strings.Contains(e, "truncated, 1048") {
					t.Errorf("error field of %d bytes: %.100s...%s", len(e), e, e[max(0, len(e)-60):])
				}
			}
			if strings.HasPrefix(fmt.Sprint(m["msg"]), "yyyy") {
				sawLog = true
				if len(fmt.Sprint(m["msg"])) > 2200 || len(fmt.Sprint(m["big"])) > 2200 {
					t.Errorf("keystone.Log message or field not cut")
				}
				if m["fields_dropped"] == nil {
					t.Errorf("501 fields logged without fields_dropped")
				}
			}
		}
		if !sawError || !sawLog {
			t.Errorf("script error line seen: %v, keystone.Log line seen: %v\n%.3000s", sawError, sawLog, g.logs.String())
		}
	})

	t.Run("req fields read as Go's http.Request", func(t *testing.T) {
		resp := g.do("POST", "", "/fields?q=1&r=a%20b", []byte("hello"), "X-A", "va")
		var m map[string]any
		if err := json.Unmarshal(resp.Body(), &m); err != nil {
			t.Fatalf("%d %q: %v", resp.StatusCode(), resp.Body(), err)
		}
		want := map[string]any{
			"header_field": "va", "header_method": "va", "url_path": "/fields", "url_raw_query": "q=1&r=a%20b",
			"url_host": "", "url_string": "/fields?q=1&r=a%20b", "request_uri": "/fields?q=1&r=a%20b",
			"content_length": float64(5), "proto": "HTTP/1.1", "proto_major": float64(1), "proto_minor": float64(1),
			"method": "POST", "host": g.addr,
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("%s = %#v, want %#v", k, m[k], v)
			}
		}
	})

	t.Run("a subrouter's root answers its mount point with and without a trailing slash", func(t *testing.T) {
		for _, c := range []struct{ path, want string }{
			{"/api", "api root /api"}, {"/api/", "api root /api/"}, {"/api/x", "api x"},
			{"/m", "mounted root /m"}, {"/m/", "mounted root /m/"},
		} {
			if resp := g.get(c.path); resp.StatusCode() != 200 || string(resp.Body()) != c.want {
				t.Errorf("GET %s = %d %q, want %q", c.path, resp.StatusCode(), resp.Body(), c.want)
			}
		}
		if resp := g.get("/api/x/"); resp.StatusCode() != 404 {
			t.Errorf("GET /api/x/ = %d, want 404 as in chi", resp.StatusCode())
		}
	})

	t.Run("a body the script wrote gets net/http's Content-Type", func(t *testing.T) {
		for _, c := range []struct{ path, want string }{
			{"/text", "text/plain; charset=utf-8"},
			{"/html", "text/html; charset=utf-8"},
			{"/typed", "application/x-custom"},
			// The upstream's answer is passed as it is, without a type.
			{"/proxied", ""},
		} {
			// Raw, because fasthttp's client reports a default type for
			// a response that has none.
			out := g.raw("GET "+c.path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second)
			head, _, _ := strings.Cut(out, "\r\n\r\n")
			got := ""
			for _, line := range strings.Split(head, "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Type") {
					got = strings.TrimSpace(v)
				}
			}
			if !strings.HasPrefix(head, "HTTP/1.1 200") || got != c.want {
				t.Errorf("GET %s: Content-Type %q, want %q\n%s", c.path, got, c.want, head)
			}
		}
	})

	t.Run("a removed library says it is not available", func(t *testing.T) {
		for _, c := range []struct{ path, want string }{
			{"/io", `io is not available in scripts`},
			{"/os", `os.execute is not available in scripts`},
			{"/debug", `debug is not available in scripts`},
		} {
			scriptFailed(t, g.get(c.path), "script error")
			if !strings.Contains(g.logs.String(), c.want) {
				t.Errorf("GET %s: logs lack %q", c.path, c.want)
			}
		}
	})
}

const rewriteLua = `
local r = chi.NewRouter()
local up = keystone.Proxy("up")
r:Get("/query", function(w, req) req:SetRawQuery("q=a HTTP/1.0 x#frag\r\n%zz&ok=%41") up(w, req) end)
r:Get("/path", function(w, req) req:SetPath("/a b?c#d") up(w, req) end)
r:Get("/host-userinfo", function(w, req) req.Header:Set("Host", "admin:hunter2@up.internal") up(w, req) end)
r:Get("/host-ok", function(w, req) req.Header:Set("Host", "other.internal:8080") up(w, req) end)
r:Get("/header-crlf", function(w, req) req.Header:Set("X-A", "a\r\nX-Injected: 1") up(w, req) end)
r:Get("/header-name", function(w, req) req.Header:Set("X A", "a") up(w, req) end)
-- Framing belongs to the gateway: a Content-Length that disagrees with
-- the body would desynchronise the upstream or client connection.
r:Get("/content-length", function(w, req) req.Header:Set("Content-Length", "1") req:SetBody("hello world") up(w, req) end)
r:Get("/transfer-encoding", function(w, req) req.Header:Add("Transfer-Encoding", "chunked") up(w, req) end)
r:Get("/response-length", function(w, req) w:Header():Set("Content-Length", "1") w:Write("hello world") end)
r:Get("/http-query", function(w, req)
  local res, err = keystone.http.Get(keystone.Env("KEYSTONE_SCRIPT_UP") .. "/x y?q=a b HTTP/1.0")
  w:Write(res and res.body or tostring(err))
end)
r:Get("/http-userinfo", function(w, req)
  local res, err = keystone.http.Get("http://user:pw@up.internal/")
  w:Write(tostring(err))
end)
return r
`

// TestLuaRewritesStayValidRequests checks what reaches the upstream when a
// script rewrites the request: a valid request line, no credentials the
// gateway made up, and script errors for what cannot be escaped.
func TestLuaRewritesStayValidRequests(t *testing.T) {
	up := startEcho(t, "up")
	t.Setenv("KEYSTONE_SCRIPT_UP", up.url())
	g := startGateway(t, luaBlock+yamlf(`
tenants:
  - name: lua
    path_prefix: /
    script: rewrite.lua
  - name: up
    domains: [up.internal]
    preserve_host: true
    upstreams: [{url: %q}]
`, up.url()), "scripts/rewrite.lua", rewriteLua)

	t.Run("a query with spaces and a fragment is percent-encoded", func(t *testing.T) {
		e := decodeEcho(t, g.get("/query"))
		if want := "/query?q=a%20HTTP/1.0%20x%23frag%0D%0A%25zz&ok=%41"; e.URI != want {
			t.Errorf("upstream got %q, want %q", e.URI, want)
		}
	})
	t.Run("a path with a space, '?' and '#' stays the path", func(t *testing.T) {
		e := decodeEcho(t, g.get("/path"))
		if want := "/a%20b%3Fc%23d"; e.URI != want {
			t.Errorf("upstream got %q, want %q", e.URI, want)
		}
	})
	t.Run("a Host with userinfo is a script error and reaches no upstream", func(t *testing.T) {
		before := up.requests.Load()
		scriptFailed(t, g.get("/host-userinfo"), "script error")
		if up.requests.Load() != before {
			t.Errorf("the upstream was called")
		}
	})
	t.Run("a valid Host is accepted", func(t *testing.T) {
		e := decodeEcho(t, g.get("/host-ok"))
		if strings.Contains(e.Host, "@") || len(e.Headers["Authorization"]) != 0 {
			t.Errorf("upstream got Host %q, Authorization %v", e.Host, e.Headers["Authorization"])
		}
	})
	for _, path := range []string{"/header-crlf", "/header-name", "/content-length", "/transfer-encoding", "/response-length"} {
		t.Run("an invalid header is a script error: "+path, func(t *testing.T) {
			before := up.requests.Load()
			scriptFailed(t, g.get(path), "script error")
			if up.requests.Load() != before {
				t.Errorf("the upstream was called")
			}
		})
	}
	t.Run("a keystone.http query with spaces is percent-encoded", func(t *testing.T) {
		e := decodeEcho(t, g.get("/http-query"))
		if want := "/x%20y?q=a%20b%20HTTP/1.0"; e.URI != want {
			t.Errorf("upstream got %q, want %q", e.URI, want)
		}
	})
	t.Run("keystone.http refuses URLs with userinfo", func(t *testing.T) {
		scriptFailed(t, g.get("/http-userinfo"), "script error")
	})
}

// TestLuaErrorPathsOpen checks that the file a load error, a runtime error
// log and a Lua error position name is one the user can open.
func TestLuaErrorPathsOpen(t *testing.T) {
	dir, err := newError(t, luaBlock+"tenants:\n  - name: lua\n    path_prefix: /\n    script: lib/bad.lua\n",
		"scripts/lib/bad.lua", "local r = chi.NewRouter()\nr:Get(\"/x\" function() end)\nreturn r\n")
	file := filepath.Join(dir, "lib", "bad.lua")
	if err == nil || !strings.Contains(err.Error(), file+":2:") {
		t.Fatalf("New = %v, want an error at %s:2", err, file)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the path in the load error does not open: %v", err)
	}

	g := startGateway(t, luaBlock+"tenants:\n  - name: lua\n    path_prefix: /\n    script: main.lua\n",
		"scripts/main.lua", "local util = require(\"lib.util\")\nlocal r = chi.NewRouter()\nr:Get(\"/boom\", function(w, req) util.boom() end)\nreturn r\n",
		"scripts/lib/util.lua", "local M = {}\nfunction M.boom()\n  error(\"kaboom\")\nend\nreturn M\n")
	scriptFailed(t, g.get("/boom"), "script error")
	var logged string
	for _, line := range strings.Split(g.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "script error" {
			logged = fmt.Sprint(m["file"])
			if m["line"] != float64(3) {
				t.Errorf("line = %v, want 3", m["line"])
			}
		}
	}
	if !strings.HasSuffix(logged, filepath.Join("scripts", "lib", "util.lua")) {
		t.Fatalf("logged file %q", logged)
	}
	if _, err := os.Stat(logged); err != nil {
		t.Errorf("the logged path does not open: %v", err)
	}
}

// scriptFailed checks the gateway's answer to a failed script: 500 with
// the JSON error body whose message is msg ("script error", "script
// timeout").
func scriptFailed(t *testing.T, resp *fasthttp.Response, msg string) {
	t.Helper()
	if m := errorBody(t, resp, 500, "internal_error"); m["message"] != msg {
		t.Errorf("message = %v, want %q", m["message"], msg)
	}
}
