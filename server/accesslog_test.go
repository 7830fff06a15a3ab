package server

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// findAccess waits for the access line of request id and returns it.
func findAccess(t *testing.T, g *gateway, id string) map[string]any {
	t.Helper()
	var line map[string]any
	eventually(t, 3*time.Second, "the access line of "+id, func() bool {
		for _, l := range g.accessLines() {
			if l["request_id"] == id {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

func TestAccessLogShowsWhatTheClientSentAndTheUpstreamPath(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+yamlf(`
logging: {access_log: true}
tenants:
  - name: api
    path_prefix: /api
    strip_prefix: true
    preserve_host: false
    upstreams: [{url: %[1]q}]
  - name: lua
    path_prefix: /lua
    upstreams: [{url: %[2]q}]
    script: rewrite.lua
`, up.url()+"/v2", up.url()), "scripts/rewrite.lua", `
local r = chi.NewRouter()
r:Get("/*", function(w, req)
  req:SetPath("/rewritten")
  req:SetRawQuery("by=script")
  keystone.Proxy()(w, req)
end)
return r
`)
	for _, c := range []struct {
		id, host, uri string
		want          map[string]any
	}{
		{"strip-and-base", "Client.Example", "/api/items/%41?x=1&y=%20", map[string]any{
			"method": "GET", "host": "client.example", "path": "/api/items/%41", "query": "x=1&y=%20",
			"upstream_path": "/v2/items/A", "tenant": "api", "status": float64(200)}},
		{"script-rewrite", "s.example", "/lua/x?orig=1", map[string]any{
			"method": "GET", "host": "s.example", "path": "/lua/x", "query": "orig=1",
			"upstream_path": "/rewritten", "tenant": "lua", "status": float64(200)}},
	} {
		resp := g.do("GET", c.host, c.uri, nil, "X-Request-ID", c.id)
		if resp.StatusCode() != 200 {
			t.Fatalf("%s: status %d: %s", c.id, resp.StatusCode(), resp.Body())
		}
		line := findAccess(t, g, c.id)
		for k, v := range c.want {
			if line[k] != v {
				t.Errorf("%s: access log %s = %#v, want %#v (line %v)", c.id, k, line[k], v, line)
			}
		}
	}
	// A request answered by the gateway itself has no upstream path.
	g.do("GET", "", "/nowhere?q=1", nil, "X-Request-ID", "not-found")
	line := findAccess(t, g, "not-found")
	if line["path"] != "/nowhere" || line["query"] != "q=1" || line["upstream_path"] != "" || line["status"] != float64(404) {
		t.Errorf("404 line: %v", line)
	}
}

func TestRequestsCutOffAtTheEndOfTheGraceAreLogged(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	release := make(chan struct{})
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		<-release
		ctx.SetBodyString("late")
	})
	g := startGateway(t, yamlf(`
logging: {access_log: true}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}], timeouts: {request: 30s}}
`, up.url()))
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /slow?a=b HTTP/1.1\r\nHost: s.example\r\nX-Request-ID: cut-off\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the request to reach the upstream", func() bool { return up.requests.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil with a request in flight past the grace period")
	}
	line := findAccess(t, g, "cut-off")
	want := map[string]any{"status": float64(0), "error": "shutdown", "method": "GET", "host": "s.example",
		"path": "/slow", "query": "a=b", "tenant": "api", "client_ip": "127.0.0.1"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("cut-off line %s = %#v, want %#v (line %v)", k, line[k], v, line)
		}
	}
	if d, _ := line["duration_ms"].(float64); d < 250 {
		t.Errorf("duration_ms = %v, want the time until the cut-off (about 300ms)", line["duration_ms"])
	}

	// The handler finishing later (here the process lives on) does not
	// log the request a second time.
	close(release)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	// The answer is written after finish returned: once it is read, a
	// second access line would be in the log.
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("the late answer: %q, %v", buf[:n], err)
	}
	n := 0
	for _, l := range g.accessLines() {
		if l["request_id"] == "cut-off" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d access lines for the cut-off request, want 1:\n%s", n, strings.TrimSpace(g.logs.String()))
	}
}
