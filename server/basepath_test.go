package server

import (
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestUpstreamBasePathIsJoinedLikeProxyPass(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	var mu sync.Mutex
	var health []string
	hc := startEcho(t, "hc")
	hc.setHandler(func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		health = append(health, string(ctx.RequestURI()))
		mu.Unlock()
	})
	g := startGateway(t, yamlf(`
tenants:
  - name: stripped
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: %[1]q}]
  - name: kept
    path_prefix: /plain
    upstreams: [{url: %[2]q}]
  - name: checked
    path_prefix: /checked
    upstreams: [{url: %[3]q}]
    health_check: {path: /healthz, interval: 1s, timeout: 500ms}
`, up.url()+"/v2/", up.url()+"/base/v1", hc.url()+"/v9"))
	for _, c := range []struct{ uri, want string }{
		{"/api/items?x=1&y=a%20b", "/v2/items?x=1&y=a%20b"},
		{"/api/items/", "/v2/items/"},
		{"/api/", "/v2/"},
		{"/api", "/v2"},
		{"/api?q=1", "/v2?q=1"},
		{"/api/a%2525b", "/v2/a%2525b"},
		{"/api//double//slash", "/v2/double/slash"},
		{"/plain/x", "/base/v1/plain/x"},
		{"/plain", "/base/v1/plain"},
	} {
		if got := decodeEcho(t, g.get(c.uri)).URI; got != c.want {
			t.Errorf("%s reached the upstream as %q, want %q", c.uri, got, c.want)
		}
	}
	// Health checks ask for their own path, not under the base path.
	eventually(t, 5*time.Second, "a health check", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(health) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for _, p := range health {
		if p != "/healthz" {
			t.Errorf("health check asked for %q, want /healthz", p)
		}
	}
	var upURL string
	for _, tn := range g.srv.snap.Load().tenants {
		if tn.cfg.Name == "stripped" {
			upURL = tn.pool.ups[0].URL
		}
	}
	if upURL != up.url()+"/v2" {
		t.Errorf("the upstream is named %q, want its URL with the base path", upURL)
	}
}

func TestKeystoneProxyURLMayCarryABasePath(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+`
tenants:
  - name: lua
    path_prefix: /
    script: proxy.lua
`, "scripts/proxy.lua", `
local r = chi.NewRouter()
r:Get("/*", keystone.Proxy("`+up.url()+`/v3/"))
return r
`)
	if got := decodeEcho(t, g.get("/items?x=1")).URI; got != "/v3/items?x=1" {
		t.Errorf("keystone.Proxy with a base path sent %q, want /v3/items?x=1", got)
	}
}
