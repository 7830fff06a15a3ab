package config_test

import (
	"strings"
	"testing"

	"github.com/keystone-gateway/keystone/config"
)

func TestUpstreamBasePath(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `tenants:
  - name: t
    path_prefix: /t
    upstreams:
      - url: HTTP://Svc:8080/v2/
      - url: http://other/v2
`)
	for i, want := range []string{"http://svc:8080/v2", "http://other/v2"} {
		if got := c.Tenants[0].Upstreams[i].URL; got != want {
			t.Errorf("upstreams[%d].url stored as %q, want %q", i, got, want)
		}
		if bp := config.UpstreamBasePath(c.Tenants[0].Upstreams[i].URL); bp != "/v2" {
			t.Errorf("UpstreamBasePath = %q, want /v2", bp)
		}
	}
	if bp := config.UpstreamBasePath("https://a:1"); bp != "" {
		t.Errorf("UpstreamBasePath of a URL without a path = %q", bp)
	}

	for _, c := range []struct{ name, urls, want string }{
		{"different base paths in one tenant", `[{url: "http://a/v1"}, {url: "http://b/v2"}]`,
			`x.yaml:4:45: tenants[0].upstreams[1].url: expected the base path of upstreams[0] ("/v1"), got "/v2"`},
		{"a base path and none", `[{url: "http://a/v1"}, {url: "http://b"}]`,
			`x.yaml:4:45: tenants[0].upstreams[1].url: expected the base path of upstreams[0] ("/v1"), got ""`},
		{"percent-encoding in the base path", `[{url: "http://a/v%201"}]`,
			`x.yaml:4:23: tenants[0].upstreams[0].url: base path: expected a path without percent-encoding, got "/v%201"`},
		{"an empty segment in the base path", `[{url: "http://a/v1//x"}]`,
			`x.yaml:4:23: tenants[0].upstreams[0].url: base path: expected a path without empty segments, got "/v1//x"`},
	} {
		_, err := parse(t, "tenants:\n  - name: t\n    path_prefix: /t\n    upstreams: "+c.urls+"\n")
		if err == nil || strings.TrimSpace(err.Error()) != c.want {
			t.Errorf("%s:\ngot  %v\nwant %s", c.name, err, c.want)
		}
	}
}
