package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGUSR1ReopensTheAccessLog rotates the running binary's access log as
// logrotate does: rename the file, send SIGUSR1, and the next lines go to a
// new file at the configured path while the process keeps serving.
func TestSIGUSR1ReopensTheAccessLog(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	addr := freePort(t)
	cfg := filepath.Join(dir, "keystone.yaml")
	write(t, cfg, `
server: {listen: "`+addr+`"}
logging: {access_log_file: `+logPath+`}
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: "http://127.0.0.1:1"}]
`)
	cmd := exec.Command(bin, "run", cfg)
	cmd.Env = append(os.Environ(), "KEYSTONE_CONFIG=")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
		cmd.Wait()                          //nolint:errcheck
	})
	health := "http://" + addr + "/admin/health"
	waitHealthy(t, health, &logs)

	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The signal is handled asynchronously: poll until a request's line
	// lands in the new file.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get(t, "http://"+addr+"/admin/health"); code != 200 {
			t.Fatalf("health after SIGUSR1: %d", code)
		}
		// The reopen's own log line follows the new file's creation, so
		// a request can land in the new file before it is written.
		if b, err := os.ReadFile(logPath); err == nil && strings.Contains(string(b), `"component":"access"`) &&
			strings.Contains(logs.String(), "reopened the access log") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access line in a new %s, or no log line for the reopen, after SIGUSR1\n%s", logPath, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	old, err := os.ReadFile(rotated)
	if err != nil || !strings.Contains(string(old), `"component":"access"`) {
		t.Errorf("the rotated file lost the lines written before the rotation: %q, %v", old, err)
	}
	if strings.Contains(logs.String(), `"component":"access"`) {
		t.Errorf("access lines went to stdout as well as the file:\n%s", logs.String())
	}
}
