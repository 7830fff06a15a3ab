package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/internal/redistest"
)

// TestScriptStoreValueCapIsConfigured sets shared.max_value_size to 100
// bytes, in memory and on Redis: a 100-byte value is stored and read
// back, a 101-byte one is a clear script error (500, logged with the
// config key), and a rebuilt snapshot with a larger cap (a reload)
// applies it to the store that kept its keys.
func TestScriptStoreValueCapIsConfigured(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"local", "redis"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			shared := "shared: {max_value_size: 100}"
			if store == "redis" {
				srv := redistest.Start(t)
				shared = fmt.Sprintf("shared: {max_value_size: 100, store: redis, redis: {addr: %q, timeout: 1s}}", srv.Addr)
			}
			g := startGateway(t, sharedYAML(shared), "scripts/shared.lua", sharedLua)
			v100, v150 := strings.Repeat("a", 100), strings.Repeat("b", 150)
			if c, v := body(t, g, "/s/set/k?v="+v100); c != 200 || v != "ok" {
				t.Fatalf("100-byte value: %d %q, want 200", c, v)
			}
			if c, v := body(t, g, "/s/get/k"); c != 200 || v != v100 {
				t.Errorf("read back: %d %q", c, v)
			}
			if c, _ := body(t, g, "/s/set/k?v="+v100+"x"); c != 500 {
				t.Errorf("101-byte value: status %d, want 500", c)
			}
			const msg = "value of 101 bytes is larger than the 100-byte limit (shared.max_value_size)"
			if !strings.Contains(g.logs.String(), msg) {
				t.Errorf("no %q in the logs:\n%s", msg, g.logs.String())
			}
			if _, v := body(t, g, "/s/get/k"); v != v100 {
				t.Errorf("the refused Set changed the value to %q", v)
			}

			old := g.srv.snap.Load()
			cfg := *old.cfg
			cfg.Shared.MaxValueSize = config.Size(200)
			snap, err := g.srv.build(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			g.srv.snap.Store(snap)
			old.close()
			if c, _ := body(t, g, "/s/set/k?v="+v150); c != 200 {
				t.Errorf("150-byte value after raising the cap to 200: status %d, want 200", c)
			}
			if c, v := body(t, g, "/s/get/k"); c != 200 || v != v150 {
				t.Errorf("read back after the rebuild: %d %q", c, v)
			}
		})
	}
}
