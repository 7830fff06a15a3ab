package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/internal/leakcheck"
)

// buildBinary compiles keystone with exactly the command the Dockerfile
// uses, from a copy of the Docker build context (the repository less what
// .dockerignore excludes), so the container build is tested without a
// Docker engine. It builds once per test binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	build.Do(func() { build.path, build.err = dockerBuild() })
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

var build struct {
	sync.Once
	dir, path string
	err       error
}

// TestMain removes the built binary and fails the run if the tests left
// goroutines running (internal/leakcheck).
func TestMain(m *testing.M) {
	code := leakcheck.Run(m)
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// terminate sends the gateway process SIGTERM and fails the test unless it
// exits with status 0 within 20s; logs are its output, for the message.
func terminate(t *testing.T, cmd *exec.Cmd, logs fmt.Stringer) {
	t.Helper()
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
}

func dockerBuild() (string, error) {
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 .*go build .*)$`).FindSubmatch(df)
	if m == nil {
		return "", fmt.Errorf("Dockerfile has no `RUN CGO_ENABLED=0 ... go build ...` line")
	}
	build.dir, err = os.MkdirTemp("", "keystone-docker-")
	if err != nil {
		return "", err
	}
	ctxDir := filepath.Join(build.dir, "context")
	if _, err := copyDockerContext("../..", ctxDir); err != nil {
		return "", err
	}
	out := filepath.Join(build.dir, "keystone")
	line := strings.ReplaceAll(string(m[1]), "/out/keystone", out)
	line = strings.ReplaceAll(line, "${VERSION}", "v0.0.0-test")
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = ctxDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", line, err, b)
	}
	return out, nil
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

	terminate(t, cmd, &logs)
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

// startGateway runs the binary with args until the test ends, and waits
// until healthURL answers 200 (with token, when not empty).
func startGateway(t *testing.T, bin, healthURL, token string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
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
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", healthURL, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gateway %q never answered 200 at %s\n%s", args, healthURL, logs.String())
}

// syncBuffer is a bytes.Buffer a child process's output and the test can
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// healthcheck runs "keystone healthcheck args..." with env added, and
// returns its exit code and output.
func healthcheck(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"healthcheck", "--timeout", "5s"}, args...)...)
	cmd.Env = append(append(os.Environ(), "KEYSTONE_CONFIG=", "KEYSTONE_ADMIN_TOKEN="), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("healthcheck %q: %v", args, err)
	return 0, ""
}

// TestHealthcheckUsesTheConfigsToken runs a gateway from a config file given
// as an argument, with a literal admin.token, and probes it as a container
// HEALTHCHECK would: through -c and through KEYSTONE_CONFIG, with no
// KEYSTONE_ADMIN_TOKEN, and with a different one in the environment.
func TestHealthcheckUsesTheConfigsToken(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	addr := freePort(t)
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	write(t, cfg, fmt.Sprintf(`server:
  listen: %q
admin:
  prefix: /_ks
  token: literal-s3cret
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: "http://127.0.0.1:9"}]
`, addr))
	health := "http://" + addr + "/_ks/health"
	// The file as an argument: the admin prefix /_ks exists only in it.
	startGateway(t, bin, health, "literal-s3cret", "run", cfg)

	// The 401 through the real gateway carries its challenge (RFC 6750 §3).
	resp, err := http.Get(health)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || got != `Bearer realm="keystone-admin"` {
		t.Errorf("admin without token: %d with WWW-Authenticate %q, want 401 with Bearer realm=\"keystone-admin\"", resp.StatusCode, got)
	}

	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"-c", nil, []string{"-c", cfg}},
		{"KEYSTONE_CONFIG", []string{"KEYSTONE_CONFIG=" + cfg}, nil},
		{"a different KEYSTONE_ADMIN_TOKEN", []string{"KEYSTONE_CONFIG=" + cfg, "KEYSTONE_ADMIN_TOKEN=other"}, nil},
		{"--url", nil, []string{"-c", cfg, "--url", health}},
	} {
		if code, out := healthcheck(t, bin, c.env, c.args...); code != 0 || !strings.HasPrefix(out, "ok: "+health+", status ") {
			t.Errorf("%s: healthcheck exit %d: %s", c.name, code, out)
		}
	}
	// A config whose token differs is told so.
	other := filepath.Join(t.TempDir(), "other.yaml")
	b, _ := os.ReadFile(cfg)
	write(t, other, strings.Replace(string(b), "literal-s3cret", "wrong", 1))
	if code, out := healthcheck(t, bin, nil, "-c", other); code != 1 || !strings.Contains(out, "answered 401: the gateway's admin.token is not the one sent") {
		t.Errorf("wrong token: healthcheck exit %d: %s", code, out)
	}
	if code, out := healthcheck(t, bin, nil, "--url", health); code != 1 || !strings.Contains(out, "answered 401: the gateway has an admin.token and the config given here has none") {
		t.Errorf("no token: healthcheck exit %d: %s", code, out)
	}
}

// TestHealthcheckReportsOnlyTheGateway: with the admin endpoints off, the
// health URL belongs to whichever tenant claims "/", here an upstream that
// answers 200 to everything. The health check must not report that
// upstream as the gateway's health.
func TestHealthcheckReportsOnlyTheGateway(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`) //nolint:errcheck
	}))
	defer up.Close()
	addr := freePort(t)
	cfg := filepath.Join(t.TempDir(), "noadmin.yaml")
	write(t, cfg, fmt.Sprintf(`server:
  listen: %q
admin:
  enabled: false
tenants:
  - name: site
    path_prefix: /
    upstreams: [{url: %q}]
`, addr, up.URL))
	startGateway(t, bin, "http://"+addr+"/admin/health", "", "run", "--config", cfg)

	code, out := healthcheck(t, bin, nil, "-c", cfg)
	if code != 1 || !strings.Contains(out, "admin.enabled: false") {
		t.Errorf("admin disabled: healthcheck exit %d, want 1 saying admin is disabled: %s", code, out)
	}
	code, out = healthcheck(t, bin, nil, "-c", cfg, "--url", "http://"+addr+"/admin/health")
	if code != 1 || !strings.Contains(out, "without Keystone's health document") {
		t.Errorf("--url at a tenant: healthcheck exit %d, want 1: %s", code, out)
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
	errOut.Reset()
	code := run([]string{"check", "--config", bad}, &out, &errOut)
	if code != 1 {
		t.Errorf("check bad: exit %d, want 1", code)
	}
	if out.Len() != 0 {
		t.Errorf("check bad wrote to stdout (problems go to stderr): %q", out.String())
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per error (2) on stderr, got:\n%s", errOut.String())
	}
	for _, want := range []string{bad + ":2:3: ", bad + ":7:14: "} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("missing %q in:\n%s", want, errOut.String())
		}
	}
}

// TestCheckReadsTheFileItIsGiven: "keystone check FILE", as the example
// configs tell users to run it, checks FILE, not the embedded default.
func TestCheckReadsTheFileItIsGiven(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	garbage := filepath.Join(dir, "garbage.yaml")
	missing := filepath.Join(dir, "missing.yaml")
	write(t, good, "tenants:\n  - name: api\n    path_prefix: /api\n    upstreams: [{url: http://127.0.0.1:9001}]\n")
	write(t, bad, "tenants:\n  - name: api\n    path_prefix: /api\n    upstreams:\n      - url: 127.0.0.1:9001\n")
	write(t, garbage, "\x00\x01 this is not: [yaml\n")
	cases := []struct {
		name   string
		env    string // KEYSTONE_CONFIG
		args   []string
		code   int
		stderr string // a substring
	}{
		{"a good file as the argument", "", []string{"check", good}, 0, ""},
		{"a bad file as the argument", "", []string{"check", bad}, 1, bad + ":5:14: tenants[0].upstreams[0].url: "},
		{"garbage as the argument", "", []string{"check", garbage}, 1, garbage + ":"},
		{"a missing file as the argument", "", []string{"check", missing}, 1, missing + ": cannot read config: no such file or directory"},
		{"the argument after -c naming the same file", "", []string{"check", bad, "-c", bad}, 1, bad + ":5:14: "},
		{"flags after the argument", "", []string{"check", bad, "--config=" + bad}, 1, bad + ":5:14: "},
		{"-- before the argument", "", []string{"check", "--", bad}, 1, bad + ":5:14: "},
		{"KEYSTONE_CONFIG", bad, []string{"check"}, 1, bad + ":5:14: "},
		{"the argument before KEYSTONE_CONFIG", bad, []string{"check", good}, 0, ""},
		{"-c before KEYSTONE_CONFIG", bad, []string{"check", "-c", good}, 0, ""},
		{"nothing: the embedded default, saying so", "", []string{"check"}, 0, "checking the embedded default config"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("KEYSTONE_CONFIG", c.env)
			var out, errOut bytes.Buffer
			code := run(c.args, &out, &errOut)
			if code != c.code || !strings.Contains(errOut.String(), c.stderr) {
				t.Errorf("keystone %s: exit %d, stderr %q; want exit %d, stderr with %q", strings.Join(c.args, " "), code, errOut.String(), c.code, c.stderr)
			}
			if wantOut := map[bool]string{true: "ok\n", false: ""}[c.code == 0]; out.String() != wantOut {
				t.Errorf("keystone %s: stdout %q, want %q", strings.Join(c.args, " "), out.String(), wantOut)
			}
		})
	}
}

// TestUsageErrors: every subcommand refuses what it does not take, with a
// message and its usage on stderr and exit 2, before doing anything.
func TestUsageErrors(t *testing.T) {
	t.Setenv("KEYSTONE_CONFIG", "")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	cases := []struct {
		args []string
		msg  string // after "keystone NAME: "
	}{
		{[]string{"check", a, b}, "expected one config file, got 2 arguments"},
		{[]string{"check", a, "-c", b}, "two config files given"},
		{[]string{"check", "--frob"}, "unknown flag --frob\n"},
		{[]string{"check", "--conifg", a}, "unknown flag --conifg (did you mean --config?)"},
		{[]string{"check", "-c"}, "flag needs an argument: -c"},
		{[]string{"check", "-c", ""}, `-c/--config: expected a config file, got ""`},
		{[]string{"run", a, b}, "expected one config file"},
		{[]string{"run", "--config", a, b}, "two config files given"},
		{[]string{"run", "--frob"}, "unknown flag --frob\n"},
		{[]string{"run", "-lsiten", ":8080"}, "unknown flag --lsiten (did you mean --listen?)"},
		{[]string{"run", "--listen", "8080"}, `--listen: expected host:port such as ":8080", got "8080" (did you mean ":8080"?)`},
		{[]string{"run", "--listen", ""}, `--listen: expected host:port such as ":8080", got ""`},
		{[]string{"run", "--listen", "localhost:99999"}, `--listen: expected a port between 0 and 65535, got "99999"`},
		{[]string{"run", "--listen"}, "flag needs an argument: -listen"},
		{[]string{"--frob"}, "unknown flag --frob\n"},
		{[]string{"healthcheck", a}, `unexpected argument "` + a + `"`},
		{[]string{"healthcheck", "--frob"}, "unknown flag --frob\n"},
		{[]string{"healthcheck", "--timout", "1s"}, "unknown flag --timout (did you mean --timeout?)"},
		{[]string{"healthcheck", "--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
		{[]string{"version", "x"}, `unexpected argument "x"`},
		{[]string{"version", "--short"}, "unknown flag --short\n"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		name := "run"
		if !strings.HasPrefix(c.args[0], "-") {
			name = c.args[0]
		}
		if code != 2 || out.Len() != 0 ||
			!strings.HasPrefix(errOut.String(), "keystone "+name+": "+c.msg) ||
			!strings.Contains(errOut.String(), "\nusage: keystone "+name) {
			t.Errorf("keystone %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, stderr starting %q with the usage of %q", c.args, code, out.String(), errOut.String(), "keystone "+name+": "+c.msg, name)
		}
	}
}

func TestUnknownCommandIsAUsageError(t *testing.T) {
	for _, c := range []struct {
		args []string
		hint string
	}{
		{[]string{"frobnicate"}, `keystone: unknown command "frobnicate"`},
		{[]string{"staging.yaml"}, `(did you mean "keystone run staging.yaml" or "keystone check staging.yaml"?)`},
		{[]string{"help", "frobnicate"}, `keystone help: unknown command "frobnicate"`},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		if code != 2 || out.Len() != 0 || !strings.Contains(errOut.String(), "usage:") || !strings.Contains(errOut.String(), c.hint) {
			t.Errorf("keystone %q: exit %d, stderr %q; want exit 2 and %q", c.args, code, errOut.String(), c.hint)
		}
	}
}

// TestHelpNamesEveryFlag: -h and --help print the subcommand's usage on
// stdout and exit 0, and the usage names every flag the subcommand has,
// as users type it ("-c", "--config", "--listen").
func TestHelpNamesEveryFlag(t *testing.T) {
	t.Parallel()
	clis := map[string]*cli{
		"run":         new(runArgs).cli(io.Discard),
		"check":       new(checkArgs).cli(io.Discard),
		"healthcheck": new(healthcheckArgs).cli(io.Discard),
		"version":     newCLI("version", usageVersion, io.Discard),
	}
	for name, c := range clis {
		for _, h := range []string{"-h", "--help", "-help"} {
			var out, errOut bytes.Buffer
			code := run([]string{name, h}, &out, &errOut)
			if code != 0 || out.String() != c.usage || errOut.Len() != 0 {
				t.Errorf("keystone %s %s: exit %d, stdout %q, stderr %q; want exit 0 and the usage on stdout", name, h, code, out.String(), errOut.String())
			}
		}
		c.fs.VisitAll(func(f *flag.Flag) {
			spelled := "--" + f.Name
			if len(f.Name) == 1 {
				spelled = "-" + f.Name
			}
			if !regexp.MustCompile(`(^|[\s|,\[])` + regexp.QuoteMeta(spelled) + `\b`).MatchString(c.usage) {
				t.Errorf("keystone %s --help does not name its flag %s:\n%s", name, spelled, c.usage)
			}
		})
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || out.String() != usage {
			t.Errorf("keystone %q: exit %d, stdout %q", args, code, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"help", "check"}, &out, &errOut); code != 0 || out.String() != usageCheck {
		t.Errorf("keystone help check: exit %d, stdout %q", code, out.String())
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
