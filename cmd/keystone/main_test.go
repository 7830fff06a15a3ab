package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles keystone with exactly the command the Dockerfile
// uses, so the container build is tested without a Docker engine.
func buildBinary(t *testing.T) string {
	t.Helper()
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 .*go build .*)$`).FindSubmatch(df)
	if m == nil {
		t.Fatal("Dockerfile has no `RUN CGO_ENABLED=0 ... go build ...` line")
	}
	out := filepath.Join(t.TempDir(), "keystone")
	line := strings.ReplaceAll(string(m[1]), "/out/keystone", out)
	line = strings.ReplaceAll(line, "${VERSION}", "v0.0.0-test")
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, b)
	}
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestDockerBuildProducesAStaticBinary(t *testing.T) {
	bin := buildBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has a dynamic loader: not static, it would not run in a scratch/distroless image")
		}
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "keystone v0.0.0-test" {
		t.Errorf("version: %q %v", out, err)
	}
}

// TestOutOfTheBox runs the binary with no config, as a beginner would, and
// checks the three hello-world facts, then stops it with SIGTERM.
func TestOutOfTheBox(t *testing.T) {
	bin := buildBinary(t)
	addr := freePort(t)
	cmd := exec.Command(bin, "run", "--listen", addr)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck
	base := "http://" + addr
	waitHealthy(t, base+"/admin/health", &logs)

	var health struct {
		Status  string `json:"status"`
		Version string `json:"version"`
		Tenants []struct {
			Name string `json:"name"`
		} `json:"tenants"`
	}
	getJSON(t, base+"/admin/health", &health)
	if health.Status != "ok" || len(health.Tenants) == 0 {
		t.Errorf("health: %+v", health)
	}

	if code, body := get(t, base+"/hello"); code != 200 || body != "Hello World" {
		t.Errorf("GET /hello = %d %q, want 200 Hello World", code, body)
	}

	seen := map[string]int{}
	for range 9 {
		var demo struct {
			Upstream string `json:"upstream"`
			Path     string `json:"path"`
		}
		getJSON(t, base+"/demo/items", &demo)
		seen[demo.Upstream]++
		if demo.Path != "/items" {
			t.Errorf("demo upstream saw path %q, want /items (strip_prefix)", demo.Path)
		}
	}
	if len(seen) != 3 || seen["demo-1"] != 3 || seen["demo-2"] != 3 || seen["demo-3"] != 3 {
		t.Errorf("GET /demo/ not round-robined across three demo upstreams: %v", seen)
	}

	if err := exec.Command(bin, "healthcheck", "--url", base+"/admin/health").Run(); err != nil {
		t.Errorf("healthcheck against a running gateway: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", logs.String())
	}
	// Logs are JSON lines with a component.
	sc := bufio.NewScanner(&logs)
	lines := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("log line is not JSON: %q", sc.Text())
			continue
		}
		if _, ok := m["component"]; !ok {
			t.Errorf("log line without component: %q", sc.Text())
		}
		lines++
	}
	if lines == 0 {
		t.Error("no log lines")
	}
}

func TestHealthcheckFailsWhenNothingListens(t *testing.T) {
	bin := buildBinary(t)
	if err := exec.Command(bin, "healthcheck", "--url", "http://"+freePort(t)+"/admin/health", "--timeout", "1s").Run(); err == nil {
		t.Error("healthcheck succeeded against a closed port")
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	write(t, good, "tenants:\n  - name: api\n    path_prefix: /api\n    upstreams: [{url: http://127.0.0.1:9001}]\n")
	write(t, bad, "server:\n  listn: :8080\ntenants:\n  - name: api\n    path_prefix: /api\n    upstreams:\n      - url: 127.0.0.1:9001\n")
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-c", good}, &out, &errOut); code != 0 || strings.TrimSpace(out.String()) != "ok" {
		t.Errorf("check good: exit %d, %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	code := run([]string{"check", "--config", bad}, &out, &errOut)
	if code != 1 {
		t.Errorf("check bad: exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per error (2), got:\n%s", out.String())
	}
	for _, want := range []string{bad + ":2:3: ", bad + ":7:14: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}

func TestUnknownCommandIsAUsageError(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitHealthy(t *testing.T, url string, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gateway never became healthy at %s\n%s", url, logs.String())
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	code, body := get(t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}
