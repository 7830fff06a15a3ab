package luavm

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// tableScript returns a script whose functions each return a table
// literal of perFunc entries (two constants each), size bytes in all.
func tableScript(size, perFunc int) string {
	var b strings.Builder
	b.WriteString("local parts = {}\n")
	for i := 0; b.Len() < size; {
		b.WriteString("parts[#parts + 1] = function() return {\n")
		for k := 0; k < perFunc && b.Len() < size; k++ {
			fmt.Fprintf(&b, "  {n = \"item%d\", v = %d},\n", i, i)
			i++
		}
		b.WriteString("} end\n")
	}
	b.WriteString("local r = chi.NewRouter()\nr:Get(\"/n\", function(w, req) w:Write(tostring(#parts)) end)\nreturn r\n")
	return b.String()
}

func TestLoadRefusesFunctionsWithTooManyConstants(t *testing.T) {
	// One table of 100,000 entries: gopher-lua alone compiled it in ~27s.
	var b strings.Builder
	b.WriteString("local t = {\n")
	for i := range 100_000 {
		fmt.Fprintf(&b, "  %d,\n", i)
	}
	b.WriteString("}\nreturn chi.NewRouter()\n")
	cfg := testConfig(nil)
	cfg.MaxScriptSize = 4 << 20
	_, err := Load(cfg, scriptFS(b.String()), "main.lua", Options{Host: newEnv(t).host})
	// The constant 0 is on line 2, so constant number 2049 is on line 2050.
	want := fmt.Sprintf("main.lua:2050: function has more than %d distinct constants", maxConstants)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Load = %v, want %q", err, want)
	}
}

func TestMegabyteScriptLoads(t *testing.T) {
	e := newEnv(t)
	src := tableScript(1<<20-200, maxConstants/2-10)
	s := e.load(t, testConfig(nil), scriptFS(src), "main.lua", Options{})
	f := serveScript(t, s)
	if r := f.do(t, "GET", "/n", nil, ""); r.status != 200 || r.body == "0" {
		t.Errorf("GET /n = %d %q", r.status, r.body)
	}
}

func TestLoadRefusesScriptsOverMaxScriptSize(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(nil)
	cfg.MaxScriptSize = 1000
	big := "-- " + strings.Repeat("x", 1100) + "\nreturn chi.NewRouter()\n"
	fsys := fstest.MapFS{
		"big.lua":     {Data: []byte(big)},
		"main.lua":    {Data: []byte("local m = require(\"lib.big\")\nreturn chi.NewRouter()\n")},
		"lib/big.lua": {Data: []byte(big)},
	}
	_, err := Load(cfg, fsys, "big.lua", Options{Host: e.host})
	want := fmt.Sprintf("big.lua:1: script of %d bytes exceeds lua.max_script_size (1000 bytes)", len(big))
	if err == nil || err.Error() != want {
		t.Errorf("Load(big.lua) = %v, want %q", err, want)
	}
	_, err = Load(cfg, fsys, "main.lua", Options{Host: e.host})
	want = fmt.Sprintf("lib/big.lua:1: module of %d bytes exceeds lua.max_script_size (1000 bytes)", len(big))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Load(main.lua) = %v, want %q", err, want)
	}
}

// Paths in load errors, runtime error logs and Lua error positions are
// the scripts directory joined with the script's name: what an editor
// opens.
func TestErrorsNamePathsUnderScriptsDir(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join("configs", "scripts")
	fsys := fstest.MapFS{
		"bad.lua":      {Data: []byte("local r = chi.NewRouter()\nr:Get(\"/x\" function() end)\nreturn r\n")},
		"main.lua":     {Data: []byte("local lib = require(\"lib.util\")\nlocal r = chi.NewRouter()\nr:Get(\"/boom\", function(w, req) lib.boom() end)\nreturn r\n")},
		"lib/util.lua": {Data: []byte("local M = {}\nfunction M.boom()\n  error(\"kaboom\")\nend\nreturn M\n")},
	}
	_, err := Load(testConfig(nil), fsys, "bad.lua", Options{Host: e.host, ScriptsDir: dir})
	if want := filepath.Join(dir, "bad.lua") + ":2:"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("load error %v, want prefix %q", err, want)
	}
	logs := &logBuffer{}
	s := e.load(t, testConfig(logs), fsys, "main.lua", Options{ScriptsDir: dir})
	f := serveScript(t, s)
	if r := f.do(t, "GET", "/boom", nil, ""); r.status != 500 {
		t.Fatalf("status %d", r.status)
	}
	want := `"file":"` + filepath.Join(dir, "lib", "util.lua") + `","line":3,"error":"kaboom"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("logs lack %s:\n%s", want, logs)
	}
}

// BenchmarkLoadMegabyteScript bounds loading (parse, compile, run, warm
// two VMs) a 1 MiB script of data tables at the constant limit.
func BenchmarkLoadMegabyteScript(b *testing.B) {
	src := scriptFS(tableScript(1<<20-200, maxConstants/2-10))
	host := &testHost{}
	cfg := benchConfig()
	cfg.PoolSize = 1
	b.ReportAllocs()
	for b.Loop() {
		s, err := Load(cfg, src, "main.lua", Options{Host: host})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// TestSubrouterRootsAsChi routes the requests chi answers with a mounted
// router's "/" route, and those it does not, as chi v5 does (Mount
// registers pattern, pattern+"/" and pattern+"/*"; the mounted router sees
// "/" for the first two).
func TestSubrouterRootsAsChi(t *testing.T) {
	e := newEnv(t)
	f := serveScript(t, loadTestdata(t, e, testConfig(nil), "subroots.lua", Options{}))
	tests := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/api", 200, "api root"},
		{"GET", "/api/", 200, "api root"},
		{"GET", "/api/x", 200, "api x"},
		{"GET", "/api/x/", 404, ""},
		{"POST", "/api/", 405, ""},
		{"GET", "/files", 200, "files root"},
		{"GET", "/files/", 200, "files root"},
		{"GET", "/files/a/b", 200, "files rest"},
		{"GET", "/only-rest", 200, "only rest"},
		{"GET", "/only-rest/", 200, "only rest"},
		{"GET", "/m", 200, "mounted root"},
		{"GET", "/m/", 200, "mounted root"},
		{"POST", "/m/", 200, "mounted root post"},
		{"GET", "/m/y", 200, "mounted y"},
		{"GET", "/a/b", 200, "ab root"},
		{"GET", "/a/b/", 200, "ab root"},
		{"GET", "/a", 404, ""},
		{"GET", "/a/", 404, ""},
		{"GET", "/users/7", 200, "user 7"},
		{"GET", "/users/7/", 200, "user 7"},
		{"GET", "/h", 200, "handler /h"},
		{"GET", "/h/", 200, "handler /h/"},
		{"GET", "/h/z", 200, "handler /h/z"},
	}
	for _, tt := range tests {
		r := f.do(t, tt.method, tt.path, nil, "")
		if r.status != tt.status || (tt.body != "" && r.body != tt.body) {
			t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, r.status, r.body, tt.status, tt.body)
		}
	}
}

// The root router is mounted at the tenant's path prefix as chi's Mount
// would: its "/" route answers the prefix with and without the slash.
func TestPrefixRootAnswersWithTrailingSlash(t *testing.T) {
	e := newEnv(t)
	s := e.load(t, testConfig(nil), scriptFS(`local r = chi.NewRouter()
r:Get("/", function(w, req) w:Write("root " .. req.Path) end)
return r`), "main.lua", Options{PathPrefix: "/pre"})
	f := serveScript(t, s)
	for _, p := range []string{"/pre", "/pre/"} {
		if r := f.do(t, "GET", p, nil, ""); r.status != 200 || r.body != "root "+p {
			t.Errorf("GET %s = %d %q", p, r.status, r.body)
		}
	}
}

// A body the script wrote without a Content-Type gets the type net/http
// would sniff, from this body, not an earlier one the VM sniffed.
func TestDefaultContentTypeIsSniffedPerBody(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(nil)
	cfg.PoolSize, cfg.MaxVMs = 1, 1
	s := e.load(t, cfg, scriptFS(`local r = chi.NewRouter()
r:Post("/echo", function(w, req) w:Write(req:Body()) end)
r:Post("/typed", function(w, req) w:Header():Set("Content-Type", "application/x-y") w:Write(req:Body()) end)
return r`), "main.lua", Options{})
	for _, c := range []struct{ path, body, want string }{
		{"/echo", "hello", "text/plain; charset=utf-8"},
		{"/echo", "<!DOCTYPE html><p>hi", "text/html; charset=utf-8"},
		{"/echo", "hello", "text/plain; charset=utf-8"},
		{"/echo", "\x89PNG\x0D\x0A\x1A\x0A", "image/png"},
		{"/typed", "hello", "application/x-y"},
		{"/echo", "", ""},
	} {
		ctx := newCtx("POST", c.path)
		// As the server runs: no fasthttp default type.
		ctx.Response.Header.SetNoDefaultContentType(true)
		ctx.Request.SetBodyString(c.body)
		s.Handler(ctx)
		if got := string(ctx.Response.Header.ContentType()); got != c.want {
			t.Errorf("POST %s %q: Content-Type %q, want %q", c.path, c.body, got, c.want)
		}
	}
}
