package server

import (
	"log/slog"
	"reflect"
	"testing"
)

// TestLuaConfigCarriesEverySetting sets every lua: key to a value that is
// not its default and checks that the luavm.Config the server builds
// holds each one, so a setting added to config.Lua and luavm.Config is
// not silently left at its default by the server.
func TestLuaConfigCarriesEverySetting(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(t, `
lua:
  scripts_dir: scripts
  pool_size: 3
  max_vms: 7
  max_memory: 3MiB
  vm_wait: 2s
  idle_vm_ttl: 31s
  max_execution: 70ms
  call_stack_size: 150
  registry_max_size: 100000
  max_string_size: 2MiB
  max_script_size: 300KiB
  max_runtime_routes: 20
tenants:
  - {name: t, path_prefix: /, upstreams: [{url: "http://127.0.0.1:1"}]}
`, "scripts/.keep", "")
	s := &Server{log: slog.Default()}
	got := reflect.ValueOf(s.luaConfig(cfg))
	want := reflect.ValueOf(cfg.Lua)
	for i := range got.NumField() {
		name := got.Type().Field(i).Name
		if name == "Logger" {
			continue
		}
		w := want.FieldByName(name)
		if !w.IsValid() {
			t.Errorf("luavm.Config.%s has no config.Lua twin", name)
			continue
		}
		if g, w := got.Field(i).Int(), w.Int(); g != w {
			t.Errorf("luavm.Config.%s = %d, lua: section says %d", name, g, w)
		}
	}
}
