package server

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// TestWatchReloadsEditedScript: with reload.watch, a script edited on disk
// (saved by rename, as most editors do) serves its new behaviour within a
// second, with no restart; a broken edit keeps the old one serving and is
// reported; fixing it reloads again.
func TestWatchReloadsEditedScript(t *testing.T) {
	up := versionedUpstream(t, "A")
	stable := versionedUpstream(t, "S")
	script := func(v string) string { return fmt.Sprintf(reloadScript, v, v, v) }
	yaml := "reload: {watch: true, debounce: 50ms}\n" + reloadConfig(up.url(), stable.url())
	d := newConfDir(t, yaml, "scripts/app.lua", script("v1"))
	g := d.start(t)
	hello := func() string { return string(g.get("/lua/hello").Body()) }
	if got := hello(); got != "hello v1" {
		t.Fatalf("before the edit: %q", got)
	}

	d.write("scripts/app.lua", script("v2"))
	eventually(t, time.Second, "the edited script to serve", func() bool { return hello() == "hello v2" })

	// An in-place write (truncate and write) is a change too.
	if err := os.WriteFile(filepath.Join(d.dir, "scripts/app.lua"), []byte("local r = chi.NewRouter(\nreturn r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "the broken edit to be reported", func() bool {
		lr := g.srv.LastReload()
		return lr != nil && lr.Status == "error" && strings.Contains(lr.Error, "app.lua:")
	})
	if got := hello(); got != "hello v2" {
		t.Errorf("after a broken edit: %q, want the old script still serving", got)
	}
	if lr := g.srv.LastReload(); lr.Trigger != TriggerWatch {
		t.Errorf("trigger %q, want watch", lr.Trigger)
	}

	d.write("scripts/app.lua", script("v3"))
	eventually(t, time.Second, "the fixed script to serve", func() bool { return hello() == "hello v3" })

	// Editor litter (swap and backup files) does not reload.
	n := len(g.srv.Reloads())
	if err := os.WriteFile(filepath.Join(d.dir, "scripts/.app.lua.swp"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if m := len(g.srv.Reloads()); m != n {
		t.Errorf("a swap file caused %d reloads", m-n)
	}
}

// TestWatchFollowsConfigMapSymlinkSwap lays the files out as a Kubernetes
// ConfigMap volume does (keystone.yaml and scripts/ are symlinks through
// "..data" to a timestamped folder) and updates it the way the kubelet
// does: a new folder, a "..data_tmp" symlink to it, renamed over "..data".
func TestWatchFollowsConfigMapSymlinkSwap(t *testing.T) {
	up := versionedUpstream(t, "A")
	stable := versionedUpstream(t, "S")
	script := func(v string) string { return fmt.Sprintf(reloadScript, v, v, v) }
	yaml := "reload: {watch: true, debounce: 50ms}\n" + reloadConfig(up.url(), stable.url())

	dir := t.TempDir()
	version := func(name, scriptVersion string) {
		t.Helper()
		vd := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(vd, "scripts"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vd, "keystone.yaml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vd, "scripts", "app.lua"), []byte(script(scriptVersion)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_12_04_10_00_00.1", "v1")
	for _, name := range []string{"keystone.yaml", "scripts"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "keystone.yaml")
	load := func() (*config.Config, error) { return config.Load(path) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	g := startGatewayOpts(t, cfg, Options{Load: load})
	hello := func() string { return string(g.get("/lua/hello").Body()) }
	if got := hello(); got != "hello v1" {
		t.Fatalf("before the swap: %q", got)
	}
	version("..2026_12_04_10_05_00.2", "v2")
	eventually(t, time.Second, "the swapped ConfigMap to serve", func() bool { return hello() == "hello v2" })
	version("..2026_12_04_10_10_00.3", "v3")
	eventually(t, time.Second, "a second swap to serve", func() bool { return hello() == "hello v3" })
}

// TestWatchReloadsFilesTheConfigNames: with reload.watch, a file the
// config names (here an htpasswd file; certificates, keys and CA bundles
// are watched the same way) is watched like the config itself. A new
// user, saved by rename or written in place, can sign in soon after
// with no restart; a file that no longer parses keeps the users that
// worked.
func TestWatchReloadsFilesTheConfigNames(t *testing.T) {
	up := startEcho(t, "up")
	user := func(name, password string) string {
		sum := sha1.Sum([]byte(password))
		return name + ":{SHA}" + base64.StdEncoding.EncodeToString(sum[:]) + "\n"
	}
	d := newConfDir(t, yamlf(`
reload: {watch: true, debounce: 50ms}
tenants:
  - name: staff
    path_prefix: /
    upstreams: [{url: %q}]
    auth:
      basic: {htpasswd_file: secrets/users.htpasswd}
`, up.url()), "secrets/users.htpasswd", user("alice", "a-pass"))
	g := d.start(t)
	status := func(name, password string) int {
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+password))
		return g.get("/x", "Authorization", auth).StatusCode()
	}
	if got := status("alice", "a-pass"); got != 200 {
		t.Fatalf("alice before the edit: %d", got)
	}
	if got := status("bob", "b-pass"); got != 401 {
		t.Fatalf("bob before the edit: %d, want 401", got)
	}
	if got := g.srv.snap.Load().cfg.Files; len(got) != 1 || !strings.HasSuffix(got[0], filepath.Join("secrets", "users.htpasswd")) {
		t.Errorf("config.Files = %q, want the htpasswd file", got)
	}

	d.write("secrets/users.htpasswd", user("alice", "a-pass")+user("bob", "b-pass"))
	eventually(t, 5*time.Second, "bob, added by rename, to sign in", func() bool { return status("bob", "b-pass") == 200 })

	if err := os.WriteFile(filepath.Join(d.dir, "secrets/users.htpasswd"), []byte(user("carol", "c-pass")), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "carol, written in place, to sign in", func() bool { return status("carol", "c-pass") == 200 })
	if got := status("alice", "a-pass"); got != 401 {
		t.Errorf("alice after she was removed: %d, want 401", got)
	}
	if lr := g.srv.LastReload(); lr.Trigger != TriggerWatch {
		t.Errorf("trigger %q, want watch", lr.Trigger)
	}

	d.write("secrets/users.htpasswd", "carol:not-a-hash\n")
	eventually(t, 5*time.Second, "the broken file to be reported", func() bool {
		lr := g.srv.LastReload()
		return lr != nil && lr.Status == "error" && strings.Contains(lr.Error, "htpasswd")
	})
	if got := status("carol", "c-pass"); got != 200 {
		t.Errorf("carol after a broken edit: %d, want the old users kept", got)
	}
}
