package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testParams(t *testing.T, hosts int) targetParams {
	t.Helper()
	return targetParams{
		Dir: t.TempDir(), Listen: "127.0.0.1:18080", Upstream: "127.0.0.1:19001", Procs: 1,
		KeepAlive: 1024, MaxConns: 4096, Hosts: tenantHosts(hosts), Root: os.Geteuid() == 0,
	}
}

// TestNginxConfig checks the generated nginx.conf with nginx -t when nginx
// is installed, and its essential directives always.
func TestNginxConfig(t *testing.T) {
	t.Parallel()
	p := testParams(t, 3)
	path, err := writeNginx(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	conf := string(b)
	for _, want := range []string{
		"worker_processes 1;", "keepalive 1024;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`,
		"access_log off;", "error_log " + p.Dir + "/error.log", "ngx_http_lua_module.so", "content_by_lua_block",
		"access_by_lua_block", "header_filter_by_lua_block", "server_name t0003.bench.local;", "daemon off;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	if strings.Count(conf, "server_name ") != 3 {
		t.Errorf("want one server block per tenant host")
	}
	if nx := discoverTarget("nginx"); nx.Status == "ok" {
		if err := checkConfig(nx, path); err != nil {
			t.Error(err)
		}
	} else {
		t.Logf("nginx %s: nginx -t not run", nx.Status)
	}
}

// TestHaproxyConfig checks the generated haproxy.cfg with haproxy -c when
// HAProxy is installed, and its essential directives always.
func TestHaproxyConfig(t *testing.T) {
	t.Parallel()
	p := testParams(t, 3)
	path, err := writeHaproxy(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	conf := string(b)
	for _, want := range []string{"nbthread 1", "http-reuse always", "use-service lua.hello", "backend be_t0003", "replace-path /api(/.*) \\1"} {
		if !strings.Contains(conf, want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	m, _ := os.ReadFile(filepath.Join(p.Dir, "hosts.map"))
	if !strings.Contains(string(m), "t0002.bench.local be_t0002\n") {
		t.Errorf("hosts.map: %q", m)
	}
	if hp := discoverTarget("haproxy"); hp.Status == "ok" {
		if err := checkConfig(hp, path); err != nil {
			t.Error(err)
		}
	} else {
		t.Logf("haproxy %s: haproxy -c not run", hp.Status)
	}
}

// TestKeystoneConfig checks the generated keystone.yaml and scripts. The
// config is validated by `keystone check` in the smoke test, where a
// keystone binary is built.
func TestKeystoneConfig(t *testing.T) {
	t.Parallel()
	p := testParams(t, 2)
	path, err := writeKeystone(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	conf := string(b)
	for _, want := range []string{
		`listen: "127.0.0.1:18080"`, `url: "http://127.0.0.1:19001"`, "path_prefix: /api", "strip_prefix: true",
		"script: hello.lua", "script: mw.lua", "domains: [t0002.bench.local]", "access_log: false", "circuit_breaker: {}",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("keystone.yaml lacks %q", want)
		}
	}
	for name := range keystoneScripts {
		if _, err := os.Stat(filepath.Join(p.Dir, "scripts", name)); err != nil {
			t.Error(err)
		}
	}
}

func TestPlanLayout(t *testing.T) {
	t.Parallel()
	l, err := planLayout("0", "1-2", true)
	if err != nil || cpuList(l.Server) != "0" || cpuList(l.Client) != "1,2" {
		t.Errorf("flags: %+v %v", l, err)
	}
	if _, err := planLayout("x", "1", true); err == nil {
		t.Error("bad CPU list accepted")
	}
	l, _ = planLayout("", "", false)
	if l.Pinned {
		t.Error("pinned without taskset")
	}
}

func TestProcSetKillsTheWholeGroup(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	ps := newProcSet()
	// A parent that forks a child and waits, like nginx's master.
	c, err := ps.start("sh", ps.command(nil, nil, "sh", "-c", "sleep 60 & wait"), "")
	if err != nil {
		t.Fatal(err)
	}
	pids, _ := descendants(c.Pid())
	for len(pids) < 2 {
		time.Sleep(time.Millisecond)
		pids, _ = descendants(c.Pid())
	}
	ps.killAll()
	// SIGKILL reaches the whole group at once, but a process dies only
	// when next scheduled and is reaped later still: on a busy machine the
	// forked child can outlive killAll's return by a moment. Wait for each
	// to be gone (or a zombie) rather than expect it instantly.
	alive := func(p int) bool {
		st, err := os.ReadFile(filepath.Join("/proc", itoa(p), "stat"))
		return err == nil && !strings.Contains(string(st), ") Z ")
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("process %d survived killAll", p)
		}
	}
}

func TestScanLogFindsRacesAndDeduplicatesWarnings(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "log")
	log := `2026/11/26 02:51:24 [alert] 5023#5023: setrlimit(RLIMIT_NOFILE, 24096) failed
2026/11/26 02:51:54 [alert] 5062#5062: setrlimit(RLIMIT_NOFILE, 24096) failed
{"time":"2026-11-26T01:00:00Z","level":"WARN","msg":"upstream slow"}
{"time":"2026-11-26T01:00:01Z","level":"INFO","msg":"started"}
==================
WARNING: DATA RACE
Write at 0x00c000 by goroutine 7:
  main.f()
==================
`
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	notes, race := scanLog(path)
	if len(notes) != 2 || !strings.HasPrefix(notes[0], "1× {") && !strings.HasPrefix(notes[0], "2× [alert]") {
		t.Errorf("notes %q: want the alert twice as one note and the warning once", notes)
	}
	if !strings.Contains(strings.Join(notes, "\n"), "2× [alert] setrlimit") {
		t.Errorf("notes %q: timestamps and pids should not split one message", notes)
	}
	if !strings.HasPrefix(race, "WARNING: DATA RACE") || !strings.Contains(race, "main.f()") {
		t.Errorf("race %q", race)
	}
}
