package luavm

import (
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func TestPatternsMatchLua(t *testing.T) {
	e := newEnv(t)
	f := serveScript(t, loadTestdata(t, e, testConfig(nil), "patterns.lua", Options{}))
	if r := f.do(t, "GET", "/run", nil, ""); r.status != 200 || r.body != "ok" {
		t.Errorf("status %d, failures:\n%s", r.status, r.body)
	}
}

// hostileTrim is one non-space byte, n spaces, one non-space byte: the
// trim idiom "^%s*(.-)%s*$" tries every end of the run of spaces from
// every start, about n*n/2 steps.
func hostileTrim(n int) string { return "x" + strings.Repeat(" ", n) + "x" }

// A builtin given hostile input stops at the deadline: the request answers
// "script timeout", the VM is dropped, and the next request is served.
func TestHostileBuiltinsStopAtTheDeadline(t *testing.T) {
	e := newEnv(t)
	logs := &logBuffer{}
	cfg := testConfig(logs)
	cfg.MaxExecution = 50 * time.Millisecond
	s := loadTestdata(t, e, cfg, "patterns.lua", Options{})
	f := serveScript(t, s)
	tests := []struct {
		name, path, body, want string
	}{
		// Unbounded, 200,000 spaces are ~2e10 matcher steps: minutes.
		{"trim idiom over a long run of spaces", "/trim", hostileTrim(200_000), "script timeout"},
		{"string.byte over a megabyte", "/bytes", strings.Repeat("a", 1<<20), "script error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Stats()
			start := time.Now()
			r := f.do(t, "POST", tt.path, nil, tt.body)
			elapsed := time.Since(start)
			if r.status != 500 || errorBody(t, r.body)["error"] != tt.want {
				t.Fatalf("status %d body %q, want 500 %q", r.status, r.body, tt.want)
			}
			// Not a timing assertion: a bound far above max_execution and
			// far below the unbounded run.
			if elapsed > 5*time.Second {
				t.Errorf("answered after %v", elapsed)
			}
			if tt.want == "script timeout" && s.Stats().VMsDiscarded != before.VMsDiscarded+1 {
				t.Errorf("the timed-out VM was not discarded")
			}
			if r := f.do(t, "POST", "/trim", nil, "  ok  "); r.status != 200 || r.body != "ok" {
				t.Errorf("next request: %d %q", r.status, r.body)
			}
		})
	}
}

// BenchmarkStringMatch bounds the cost of the deadline-polling matcher
// on the trim idiom over a short header-sized value.
func BenchmarkStringMatch(b *testing.B) {
	s := benchScript(b, `
local r = chi.NewRouter()
local v = "   Bearer abcdef0123456789abcdef0123456789   "
r:Get("/m", function(w, req)
  local t = v:match("^%s*(.-)%s*$")
  local k, val = ("key=value"):match("(%w+)=(%w+)")
  w:Write(t)
end)
return r`)
	ctx := newCtx("GET", "/m")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
}

// FuzzPattern runs find, match, gmatch and gsub on fuzzed patterns and
// subjects: a malformed pattern must be a Lua error, never a Go panic (an
// index out of range in the matcher), and the deadline must stop any
// backtracking.
func FuzzPattern(f *testing.F) {
	for _, seed := range [][2]string{
		{"^%s*(.-)%s*$", "  trim  "}, {"%b()", "f(a(b)c)"}, {"%f[%a]%a+", "THE (quick) fox"},
		{"(%w+)=(%w+)", "k=v, a=b"}, {"[%a-]+", "a-b"}, {"[]]", "]"}, {"[^]", "x"}, {"[a-", "a"},
		{"%", "x"}, {"(", "x"}, {")", "x"}, {"%1", "x"}, {"(()", "x"}, {"%b", "x"}, {"%bx", "x"},
		{"%f", "x"}, {"%f[", "x"}, {"[%", "x"}, {"$", ""}, {"^$", ""}, {"(.-)%1", "abab"},
		{strings.Repeat("a?", 300), strings.Repeat("a", 300)}, {strings.Repeat("(.-)", 40) + "$", strings.Repeat("x", 60)},
	} {
		f.Add(seed[0], seed[1])
	}
	e := newEnv(f)
	cfg := testConfig(nil)
	cfg.MaxExecution = 20 * time.Millisecond
	s := e.load(f, cfg, scriptFS(`
local r = chi.NewRouter()
r:Post("/p", function(w, req)
  local pat, subj = req:Header():Get("X-Pattern"), req:Body()
  pcall(string.find, subj, pat)
  pcall(string.match, subj, pat)
  pcall(string.gsub, subj, pat, "%0")
  pcall(function() for a in subj:gmatch(pat) do end end)
  w:Write("done")
end)
return r`), "main.lua", Options{})
	f.Fuzz(func(t *testing.T, pat, subj string) {
		ctx := newCtx("POST", "/p")
		// A header value cannot hold CR, LF or NUL: such patterns are
		// skipped.
		if strings.ContainsAny(pat, "\r\n\x00") {
			return
		}
		ctx.Request.Header.Set("X-Pattern", pat)
		ctx.Request.SetBodyString(subj)
		s.Handler(ctx)
		switch body := string(ctx.Response.Body()); {
		case ctx.Response.StatusCode() == 200 && body == "done":
		case strings.Contains(body, "script timeout"):
		default:
			t.Fatalf("pattern %q on %q: %d %s", pat, subj, ctx.Response.StatusCode(), body)
		}
	})
}

// table.sort with the default comparison runs no Lua between comparisons:
// it must poll the deadline itself. A deadline that already fired stops
// it within pollSteps comparisons.
func TestTableSortStopsAtTheDeadline(t *testing.T) {
	e := newEnv(t)
	s := e.load(t, testConfig(nil), scriptFS(helloScript), "main.lua", Options{})
	th, v, err := s.acquire()
	if err != nil {
		t.Fatal(err)
	}
	// The VM's own deadline is left fired: drop the VM, keep the thread.
	defer s.releaseThread(th, true)
	defer s.releaseVM(v, false)
	L := v.L
	tbl := L.CreateTable(1_000_000, 0)
	for i := range 1_000_000 {
		tbl.RawSetInt(i+1, lua.LNumber((i*7919)%1000003))
	}
	v.dl.arm(time.Nanosecond)
	for !v.dl.expiredNow() {
		time.Sleep(time.Millisecond)
	}
	err = L.CallByParam(lua.P{Fn: L.NewFunction(v.tableSort), Protect: true}, tbl)
	if err == nil || !strings.Contains(err.Error(), errTimeoutText) {
		t.Fatalf("table.sort after the deadline: %v", err)
	}
	v.dl.disarm()
}
