package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

func TestCompressionAndWebSocketErrors(t *testing.T) {
	t.Parallel()
	_, err := parse(t, `
server:
  compression: {enabled: true, algorithms: [br, zstd, gzip], level: 10, types: [text/html, "text/html; charset=utf-8"]}
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: "http://127.0.0.1:9001"}]
    compression: {algorithms: [zstd, lz4, zstd], level: 23}
    websocket: {idle_timeout: 0s, max_lifetime: -1s}
    upgrade_protocols: [websocket, h2c, "foo/1/2", "ok/1"]
`)
	want := []string{
		`x.yaml:3:69: server.compression.level: expected a level between 1 and 9 for gzip, got 10`,
		`x.yaml:3:92: server.compression.types[1]: expected a media type such as "application/json", without parameters, got "text/html; charset=utf-8"`,
		`x.yaml:8:38: tenants[0].compression.algorithms[1]: expected one of "br", "zstd", "gzip", got "lz4"`,
		`x.yaml:8:43: tenants[0].compression.algorithms[2]: duplicate algorithm "zstd" (first at algorithms[0])`,
		`x.yaml:8:57: tenants[0].compression.level: expected a level between 1 and 22 for zstd, got 23`,
		`x.yaml:9:31: tenants[0].websocket.idle_timeout: expected a duration greater than 0, got 0s`,
		`x.yaml:9:49: tenants[0].websocket.max_lifetime: expected a duration of at least 0, got -1s`,
		`x.yaml:10:25: tenants[0].upgrade_protocols[0]: websocket is configured by websocket.enabled, not upgrade_protocols`,
		`x.yaml:10:36: tenants[0].upgrade_protocols[1]: expected a protocol the gateway can tunnel, got "h2c" (the gateway speaks HTTP itself)`,
		`x.yaml:10:41: tenants[0].upgrade_protocols[2]: expected a protocol name such as "foo" or "foo/1", got "foo/1/2"`,
	}
	if err == nil {
		t.Fatal("loads")
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing error\n%s\nin\n%s", w, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != len(want) {
		t.Errorf("%d errors, want %d:\n%s", n, len(want), got)
	}
}

func TestCompressionInheritance(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
server:
  compression: {enabled: true, algorithms: [br, gzip], level: 4, min_size: 2KiB, types: [Text/HTML]}
tenants:
  - {name: a, path_prefix: /a, upstreams: [{url: "http://127.0.0.1:9001"}], compression: {level: 9}}
  - {name: b, path_prefix: /b, upstreams: [{url: "http://127.0.0.1:9001"}], compression: {enabled: false}}
  - {name: c, path_prefix: /c, upstreams: [{url: "http://127.0.0.1:9001"}]}
`)
	a := c.CompressionFor(&c.Tenants[0])
	if !a.Enabled || a.Level != 9 || a.MinSize != 2*config.KiB || strings.Join(a.Algorithms, ",") != "br,gzip" ||
		strings.Join(a.Types, ",") != "text/html" {
		t.Errorf("tenant a = %+v: want the server's keys with level 9", a)
	}
	if b := c.CompressionFor(&c.Tenants[1]); b.Enabled || b.Level != 4 {
		t.Errorf("tenant b = %+v: want disabled, level inherited", b)
	}
	if cc := c.CompressionFor(&c.Tenants[2]); !cc.Enabled || cc.Level != 4 {
		t.Errorf("tenant c = %+v: want the server's", cc)
	}
	if ws := c.Tenants[2].WebSocket; !ws.Enabled || ws.IdleTimeout.D() != 5*time.Minute || ws.MaxLifetime.D() != 24*time.Hour {
		t.Errorf("websocket defaults = %+v", ws)
	}
}
