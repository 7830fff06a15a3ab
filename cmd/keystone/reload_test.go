package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const reloadTestScript = `
local r = chi.NewRouter()
r:Get("/hello", function(w, req) w:Write("hello %s") end)
return r
`

// TestSIGHUPReloadsAndNeverExits runs the real binary: SIGHUP, repeated,
// never ends the process; it reloads the config and scripts; `keystone reload` reloads
// through the pid file and, without one, through POST /admin/reload.
func TestSIGHUPReloadsAndNeverExits(t *testing.T) {
	bin := buildBinary(t)
	addr := freePort(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "keystone.pid")
	yaml := fmt.Sprintf(`
server: {listen: %q, pid_file: %q}
lua: {scripts_dir: scripts}
tenants:
  - name: hello
    path_prefix: /
    script: app.lua
`, addr, pidFile)
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p+".tmp", []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
	}
	write("keystone.yaml", yaml)
	write("scripts/app.lua", fmt.Sprintf(reloadTestScript, "v1"))
	// The same gateway seen through a config without a pid file:
	// `keystone reload` then posts to the admin endpoint.
	write("nopid.yaml", strings.Replace(yaml, fmt.Sprintf(", pid_file: %q", pidFile), "", 1))

	cmd := exec.Command(bin, "run", "-c", filepath.Join(dir, "keystone.yaml"))
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck
	base := "http://" + addr
	waitHealthy(t, base+"/admin/health", &logs)
	hello := func() string { _, body := get(t, base+"/hello"); return body }

	for range 3 {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if code, _ := get(t, base+"/admin/health"); code != 200 {
		t.Fatalf("after three SIGHUPs the gateway answers %d\n%s", code, logs.String())
	}

	write("scripts/app.lua", fmt.Sprintf(reloadTestScript, "v2"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SIGHUP to reload the script", func() bool { return hello() == "hello v2" }, &logs)

	write("scripts/app.lua", fmt.Sprintf(reloadTestScript, "v3"))
	out, err := exec.Command(bin, "reload", "-c", filepath.Join(dir, "keystone.yaml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sent SIGHUP to process") {
		t.Fatalf("keystone reload (pid file): %v\n%s", err, out)
	}
	waitFor(t, "keystone reload to reload the script", func() bool { return hello() == "hello v3" }, &logs)

	write("scripts/app.lua", fmt.Sprintf(reloadTestScript, "v4"))
	var stdout, stderr bytes.Buffer
	if code := run([]string{"reload", filepath.Join(dir, "nopid.yaml")}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "reloaded in") {
		t.Fatalf("keystone reload (admin POST): exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if got := hello(); got != "hello v4" {
		t.Errorf("after keystone reload via POST: %q", got)
	}
	write("scripts/app.lua", "return nil\n")
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"reload", filepath.Join(dir, "nopid.yaml")}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "app.lua:") {
		t.Errorf("keystone reload of a broken script: exit %d, want 1 with its position\n%s%s", code, stdout.String(), stderr.String())
	}
	if got := hello(); got != "hello v4" {
		t.Errorf("after a refused reload: %q, want v4 still", got)
	}

	terminate(t, cmd, &logs)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
	// The kernel merges a standard signal sent while one is pending, so
	// the three quick SIGHUPs are at least one reload; then v2, v3, v4.
	if n := strings.Count(logs.String(), `"msg":"config reloaded"`); n < 4 {
		t.Errorf("%d reloads logged, want at least 4\n%s", n, logs.String())
	}
}

func waitFor(t *testing.T, what string, cond func() bool, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
