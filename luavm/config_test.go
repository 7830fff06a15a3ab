package luavm

import (
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/keystone-gateway/keystone/config"
)

// parseLua returns the lua: section of a config file holding lua (a YAML
// mapping body, indented two spaces, or "") and one tenant.
func parseLua(t *testing.T, lua string) (config.Lua, error) {
	t.Helper()
	src := "tenants:\n  - name: app\n    path_prefix: /\n    upstreams:\n      - url: http://10.0.0.1:8080\n"
	if lua != "" {
		src = "lua:\n" + lua + src
	}
	noEnv := func(string) (string, bool) { return "", false }
	c, err := config.Parse("x.yaml", []byte(src), config.WithEnv(noEnv), config.WithScripts(fstest.MapFS{}, "scripts"))
	if err != nil {
		return config.Lua{}, err
	}
	return c.Lua, nil
}

// TestZeroConfigTakesConfigDefaults checks that a zero Config runs a script
// under exactly the limits an empty lua: section gives it, field by field,
// and that every setting of one has its twin in the other: config owns the
// defaults, and a field added to either without the other fails here.
func TestZeroConfigTakesConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want, err := parseLua(t, "")
	if err != nil {
		t.Fatal(err)
	}
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		name := gv.Type().Field(i).Name
		if name == "Logger" {
			continue
		}
		w := wv.FieldByName(name)
		if !w.IsValid() {
			t.Errorf("luavm.Config.%s has no config.Lua twin", name)
			continue
		}
		if g, w := gv.Field(i).Int(), w.Int(); g != w {
			t.Errorf("zero Config.%s resolves to %d, config's default is %d", name, g, w)
		}
	}
	for i := range wv.NumField() {
		if name := wv.Type().Field(i).Name; name != "ScriptsDir" && !gv.FieldByName(name).IsValid() {
			t.Errorf("config.Lua.%s has no luavm.Config twin", name)
		}
	}
	if d := config.DefaultLua(); !reflect.DeepEqual(d, want) {
		t.Errorf("config.DefaultLua() = %+v, an empty lua: section gives %+v", d, want)
	}
}

// TestConfigRangesAreConfigs checks that Load refuses a setting exactly
// when config.Validate refuses the same setting in a file.
func TestConfigRangesAreConfigs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		cfg  Config
		ok   bool
	}{
		{"the largest pool", "  pool_size: 65536\n  max_memory: 9GiB\n",
			Config{PoolSize: config.MaxLuaPoolSize, MaxMemory: 9 << 30}, true},
		{"a pool above the largest", "  pool_size: 65537\n  max_memory: 9GiB\n",
			Config{PoolSize: config.MaxLuaPoolSize + 1, MaxMemory: 9 << 30}, false},
		{"the most runtime routes", "  max_runtime_routes: 1000000\n", Config{MaxRuntimeRoutes: config.MaxLuaRuntimeRoutes}, true},
		{"more runtime routes than the most", "  max_runtime_routes: 1000001\n", Config{MaxRuntimeRoutes: config.MaxLuaRuntimeRoutes + 1}, false},
		{"memory for exactly the pool and one thread", "  pool_size: 16\n  max_memory: 2064KiB\n",
			Config{PoolSize: 16, MaxMemory: 16*128<<10 + 16<<10}, true},
		{"memory one byte short of the pool and one thread", "  pool_size: 16\n  max_memory: 2113535\n",
			Config{PoolSize: 16, MaxMemory: 16*128<<10 + 16<<10 - 1}, false},
		{"fewer VMs than the pool", "  pool_size: 8\n  max_vms: 4\n", Config{PoolSize: 8, MaxVMs: 4}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cerr := parseLua(t, tc.yaml)
			_, lerr := tc.cfg.withDefaults()
			if (cerr == nil) != tc.ok || (lerr == nil) != tc.ok {
				t.Errorf("want ok=%v; config: %v; luavm: %v", tc.ok, cerr, lerr)
			}
			if cerr != nil && !strings.Contains(cerr.Error(), "x.yaml:") {
				t.Errorf("config error is not positioned: %v", cerr)
			}
		})
	}
}
