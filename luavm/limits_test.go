package luavm

import (
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func loadTestdata(t testing.TB, e *env, cfg Config, name string, opts Options) *Script {
	t.Helper()
	return e.load(t, cfg, os.DirFS("testdata"), name, opts)
}

// errorBody decodes the JSON error the test Host writes.
func errorBody(t *testing.T, body string) map[string]string {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return m
}

func TestScriptTimeoutDiscardsVMAndKeepsServing(t *testing.T) {
	e := newEnv(t)
	logs := &logBuffer{}
	cfg := testConfig(logs)
	cfg.MaxExecution = 50 * time.Millisecond
	s := loadTestdata(t, e, cfg, "limits.lua", Options{})
	f := serveScript(t, s)

	for _, path := range []string{"/loop", "/pcall-loop"} {
		before := s.Stats()
		start := time.Now()
		r := f.do(t, "GET", path, map[string]string{"X-Request-ID": "rid-" + path}, "")
		elapsed := time.Since(start)
		if r.status != 500 {
			t.Fatalf("%s: status %d, want 500", path, r.status)
		}
		body := errorBody(t, r.body)
		if body["error"] != "script timeout" || body["request_id"] != "rid-"+path {
			t.Errorf("%s: body %v", path, body)
		}
		if elapsed > 2*time.Second {
			t.Errorf("%s: answered after %v, want about MaxExecution", path, elapsed)
		}
		after := s.Stats()
		if after.VMsDiscarded != before.VMsDiscarded+1 {
			t.Errorf("%s: VMsDiscarded %d -> %d, want one more", path, before.VMsDiscarded, after.VMsDiscarded)
		}
		if r := f.do(t, "GET", "/ok", nil, ""); r.status != 200 || r.body != "ok" {
			t.Errorf("after %s: /ok answered %d %q", path, r.status, r.body)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"script timeout"`); n != 2 {
		t.Errorf("%d timeout log lines, want 2:\n%s", n, logs)
	}
}

func TestScriptErrorAnswers500AndLogsOneLine(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		path, line, msg string
	}{
		{"/error", "20", "boom"},
		{"/nil", "25", "attempt to index"},
		{"/stack", "29", "stack overflow"},
		{"/rep", "34", "exceeds the 16777216-byte string limit"},
		{"/rep-method", "38", "string.rep"},
		{"/format", "43", "string.format"},
		{"/concat", "50", "table.concat"},
		{"/gsub", "55", "string.gsub"},
		{"/json", "72", "json.encode"},
		{"/write", "82", "w:Write()"},
	}
	for _, tt := range tests {
		t.Run("GET "+tt.path, func(t *testing.T) {
			logs := &logBuffer{}
			cfg := testConfig(logs)
			// Generous: this tests errors, and the CI box may be loaded.
			cfg.MaxExecution = 10 * time.Second
			s := loadTestdata(t, e, cfg, "limits.lua", Options{})
			f := serveScript(t, s)
			r := f.do(t, "GET", tt.path, map[string]string{"X-Request-ID": "req-42"}, "")
			if r.status != 500 {
				t.Fatalf("status %d, want 500; body %q", r.status, r.body)
			}
			if got := errorBody(t, r.body); got["error"] != "script error" || got["request_id"] != "req-42" {
				t.Errorf("body %v, want script error with request id", got)
			}
			if _, ok := r.headers["X-Leak"]; ok {
				t.Error("a header the script set before failing reached the client")
			}
			lines := logs.lines()
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1:\n%s", len(lines), logs)
			}
			var entry map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"component": "lua", "tenant": "api", "script": "limits.lua", "file": "limits.lua", "request_id": "req-42", "msg": "script error"}
			for k, v := range want {
				if entry[k] != v {
					t.Errorf("log %s = %v, want %v", k, entry[k], v)
				}
			}
			if line := entry["line"]; line != mustFloat(tt.line) {
				t.Errorf("log line = %v, want %s", line, tt.line)
			}
			if msg, _ := entry["error"].(string); !strings.Contains(msg, tt.msg) {
				t.Errorf("log error %q, want it to contain %q", msg, tt.msg)
			}
			if st := s.Stats(); st.VMsDiscarded != 0 || st.Errors != 1 {
				t.Errorf("stats %+v: a Lua error must keep the VM and count one error", st)
			}
			if r := f.do(t, "GET", "/ok", nil, ""); r.status != 200 {
				t.Errorf("/ok after error: %d", r.status)
			}
		})
	}
}

func mustFloat(s string) float64 {
	var f float64
	_ = json.Unmarshal([]byte(s), &f)
	return f
}

func TestCappedStringFunctionsStillWork(t *testing.T) {
	e := newEnv(t)
	s := loadTestdata(t, e, testConfig(nil), "limits.lua", Options{})
	f := serveScript(t, s)
	r := f.do(t, "GET", "/gsub-ok", nil, "")
	want := "<hello> <world> 2 1=a, 2=b A.B.C. 1 $y one,two,three"
	if r.status != 200 || r.body != want {
		t.Errorf("got %d %q, want %q", r.status, r.body, want)
	}
}

// TestDoublingLoopMemoryBounded checks that s = s .. s, which no builtin cap
// can see, ends with the deadline while the heap stays bounded.
func TestDoublingLoopMemoryBounded(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(&logBuffer{})
	cfg.MaxExecution = 50 * time.Millisecond
	s := loadTestdata(t, e, cfg, "limits.lua", Options{})
	f := serveScript(t, s)

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	r := f.do(t, "GET", "/double", nil, "")
	close(stop)
	<-sampled
	if r.status != 500 || errorBody(t, r.body)["error"] != "script timeout" {
		t.Fatalf("got %d %s, want a script timeout", r.status, r.body)
	}
	const bound = 4 << 30
	t.Logf("peak heap during the doubling loop: %d MiB", peak.Load()>>20)
	if peak.Load() > bound {
		t.Errorf("peak heap %d MiB, want under %d MiB", peak.Load()>>20, bound>>20)
	}
	if r := f.do(t, "GET", "/ok", nil, ""); r.status != 200 {
		t.Errorf("/ok after the doubling loop: %d", r.status)
	}
}

func TestKeystoneLogAndPrint(t *testing.T) {
	e := newEnv(t)
	t.Setenv("KEYSTONE_SCRIPT_UPSTREAM", "http://"+e.ups["api2"].addr)
	e.ups["shop"] = e.ups["api"] // keystone.Proxy() is the script's own tenant
	logs := &logBuffer{}
	f := serveScript(t, loadTestdata(t, e, testConfig(logs), "builtins.lua", Options{Tenant: "shop"}))
	if r := f.do(t, "GET", "/log", map[string]string{"X-Request-ID": "log-1"}, ""); r.body != "logged" {
		t.Fatalf("GET /log: %d %q", r.status, r.body)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "hello from lua", "user": "bob", "n": 3.0, "ok": true},
		{"level": "DEBUG", "msg": "debug line"},
		{"level": "DEBUG", "msg": "printed\t1"},
	}
	lines := logs.lines()
	if len(lines) != len(want) {
		t.Fatalf("%d log lines, want %d:\n%s", len(lines), len(want), logs)
	}
	for i, line := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatal(err)
		}
		want[i]["component"], want[i]["tenant"], want[i]["script"], want[i]["request_id"] = "lua", "shop", "builtins.lua", "log-1"
		for k, v := range want[i] {
			if got[k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, got[k], v)
			}
		}
	}
}
