package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-gateway/keystone/config"
)

// accessFileLines returns the request ids of the access lines in path.
func accessFileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line is not JSON: %q", line)
		}
		if m["component"] != "access" {
			t.Errorf("non-access line in the access log file: %q", line)
		}
		ids = append(ids, m["request_id"].(string))
	}
	return ids
}

// TestAccessLogFileIsReopenedAfterRotation rotates the access log file as
// logrotate does (rename, then signal) and checks that no line is lost:
// lines before the rename are in the old file, lines after ReopenLogs in a
// new file at the configured path, and none in the main log.
func TestAccessLogFileIsReopenedAfterRotation(t *testing.T) {
	up := startEcho(t, "a")
	path := filepath.Join(t.TempDir(), "access.log")
	g := startGateway(t, yamlf(`
logging: {access_log_file: %q}
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %s}]
`, path, up.url()))

	get := func(id string) {
		t.Helper()
		if resp := g.get("/x", "X-Request-Id", id); resp.StatusCode() != 200 {
			t.Fatalf("GET: %d", resp.StatusCode())
		}
	}
	get("before-1")
	get("before-2")
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	get("between") // still written to the renamed file, as logrotate expects
	if err := g.srv.ReopenLogs(); err != nil {
		t.Fatal(err)
	}
	get("after")

	if got, want := strings.Join(accessFileLines(t, rotated), ","), "before-1,before-2,between"; got != want {
		t.Errorf("rotated file: %s, want %s", got, want)
	}
	if got, want := strings.Join(accessFileLines(t, path), ","), "after"; got != want {
		t.Errorf("new file: %s, want %s", got, want)
	}
	if n := len(g.accessLines()); n != 0 {
		t.Errorf("%d access lines in the main log, want them all in the file", n)
	}
}

func TestAccessLogFileMustBeInAnExistingDirectory(t *testing.T) {
	dir := t.TempDir()
	yaml := "logging: {access_log_file: " + filepath.Join(dir, "missing", "access.log") + "}\ntenants: [{name: a, path_prefix: /, upstreams: [{url: http://127.0.0.1:1}]}]\n"
	cfgPath := filepath.Join(dir, "k.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(cfgPath)
	if err == nil || !strings.Contains(err.Error(), "logging.access_log_file: expected a file in an existing directory") {
		t.Fatalf("got %v", err)
	}
}
