package luavm

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		name   string
		files  map[string]string
		script string // main.lua unless files says otherwise
		want   []string
	}{
		{
			name:   "syntax error has a column",
			script: "local r = chi.NewRouter()\nlocal x = = 1\nreturn r\n",
			want:   []string{`main.lua:2:11: syntax error near "="`},
		},
		{
			name:   "syntax error at end of file",
			script: "local r = chi.NewRouter()\nr:Get(\"/x\", function(w, req)\nreturn r\n",
			want:   []string{`main.lua:4: syntax error at end of file`},
		},
		{
			name:   "pattern without a leading slash",
			script: "local r = chi.NewRouter()\nr:Get(\"users\", function(w, req) end)\nreturn r\n",
			want:   []string{`main.lua:2: route "users": expected a pattern starting with "/"`},
		},
		{
			name:   "bad regexp",
			script: "local r = chi.NewRouter()\n\nr:Get(\"/u/{id:[0-9+}\", function(w, req) end)\nreturn r\n",
			want:   []string{`main.lua:3: route "/u/{id:[0-9+}": parameter "id": invalid regexp "[0-9+": missing closing ]`},
		},
		{
			name:   "wildcard in the middle",
			script: "local r = chi.NewRouter()\nr:Get(\"/a/*/b\", function(w, req) end)\nreturn r\n",
			want:   []string{`main.lua:2: route "/a/*/b": wildcard '*' must be the last character of a pattern`},
		},
		{
			name:   "Use after routes",
			script: "local r = chi.NewRouter()\nr:Get(\"/x\", function(w, req) end)\nr:Use(function(next) return next end)\nreturn r\n",
			want:   []string{`main.lua:3: Use: all middlewares must be defined before routes on a mux`},
		},
		{
			name:   "Use after With",
			script: "local r = chi.NewRouter()\nlocal i = r:With()\nr:Use(function(next) return next end)\nreturn r\n",
			want:   []string{`main.lua:3: Use: all middlewares must be defined before routes on a mux`},
		},
		{
			name:   "unknown proxy target",
			script: "local r = chi.NewRouter()\nr:Handle(\"/*\",\n  keystone.Proxy(\"nope\"))\nreturn r\n",
			want:   []string{`main.lua:3: keystone.Proxy("nope"): unknown tenant "nope"`},
		},
		{
			name:   "every error at once",
			script: "local r = chi.NewRouter()\nr:Get(\"bad\", function() end)\nr:Get(\"/p\", keystone.Proxy(\"nope\"))\nr:Get(\"/{x\", function() end)\nreturn r\n",
			want: []string{
				`main.lua:2: route "bad": expected a pattern starting with "/"`,
				`main.lua:3: keystone.Proxy("nope"): unknown tenant "nope"`,
				`main.lua:4: route "/{x": unclosed '{' at offset 1`,
			},
		},
		{
			name:   "script returning nothing",
			script: "local r = chi.NewRouter()\nr:Get(\"/x\", function(w, req) end)\n",
			want:   []string{`main.lua:3: script must return the router from chi.NewRouter(), got nil`},
		},
		{
			name:   "script returning an inline router",
			script: "local r = chi.NewRouter()\nreturn r:With()\n",
			want:   []string{`main.lua:3: script must return the router from chi.NewRouter(), got an inline router from With or Group`},
		},
		{
			name:   "runtime error while loading",
			script: "local r = chi.NewRouter()\nlocal cfg = nil\nr:Get(cfg.path, function() end)\nreturn r\n",
			want:   []string{`main.lua:3: attempt to index a non-table object(nil) with key 'path'`},
		},
		{
			name:   "bad argument",
			script: "local r = chi.NewRouter()\nr:Get(\"/x\", 42)\nreturn r\n",
			want:   []string{`main.lua:2: bad argument #3 to Get (handler function(w, req) expected, got number)`},
		},
		{
			name:   "conflicting parameter names",
			script: "local r = chi.NewRouter()\nr:Get(\"/u/{id}\", function() end)\nr:Get(\"/u/{name}\", function() end)\nreturn r\n",
			want:   []string{`main.lua:3: route GET "/u/{name}": '{name}' in new path '/u/{name}' conflicts with existing wild path '{id}' in existing prefix '/u/{id}'`},
		},
		{
			name:   "middleware not returning a function",
			script: "local r = chi.NewRouter()\nr:Use(function(next)\n  return 1\nend)\nr:Get(\"/x\", function() end)\nreturn r\n",
			want:   []string{`main.lua:2: middleware returned number, expected a function(w, req)`},
		},
		{
			name:   "mount pattern ending in a slash",
			script: "local r = chi.NewRouter()\nr:Mount(\"/x/\", chi.NewRouter())\nreturn r\n",
			want:   []string{`main.lua:2: Mount "/x/": a mount pattern must not end with "/"`},
		},
		{
			name:   "two mounts at one prefix",
			script: "local r = chi.NewRouter()\nr:Mount(\"/x\", chi.NewRouter())\nr:Route(\"/x\", function(x) end)\nreturn r\n",
			want:   []string{`main.lua:3: Mount "/x": a handler is already mounted there (line 2)`},
		},
		{
			name:   "module with a syntax error",
			files:  map[string]string{"lib/bad.lua": "return {\n"},
			script: "local bad = require(\"lib.bad\")\nreturn chi.NewRouter()\n",
			want:   []string{`main.lua:1: require "lib.bad": lib/bad.lua:2: syntax error at end of file`},
		},
		{
			name:   "nondeterministic script",
			script: "local r = chi.NewRouter()\nif keystone.store.Incr(\"loads\") > 1 then r:Get(\"/extra\", function() end) end\nreturn r\n",
			want:   []string{`main.lua:4: script is not deterministic: this VM defined different routes than the first one`},
		},
		{
			name:   "missing script",
			files:  map[string]string{"other.lua": ""},
			script: "-",
			want:   []string{`main.lua: cannot read script: file does not exist`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			fsys := fstest.MapFS{}
			for name, src := range tt.files {
				fsys[name] = &fstest.MapFile{Data: []byte(src)}
			}
			if tt.script != "-" {
				fsys["main.lua"] = &fstest.MapFile{Data: []byte(tt.script)}
			}
			_, err := Load(testConfig(&logBuffer{}), fsys, "main.lua", Options{Host: e.host, Tenant: "api"})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %T %v, want an ErrorList", err, err)
			}
			if got := strings.Split(err.Error(), "\n"); !equalStrings(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCompileRejectsPathsOutsideTheFS(t *testing.T) {
	for _, name := range []string{"../x.lua", "/etc/passwd", "a/../../b.lua", ""} {
		if _, err := Compile(fstest.MapFS{}, name); err == nil || !strings.Contains(err.Error(), "invalid script path") {
			t.Errorf("Compile(%q) = %v, want an invalid path error", name, err)
		}
	}
}

func TestModulePath(t *testing.T) {
	tests := []struct {
		name, path string
		ok         bool
	}{
		{"lib.auth", "lib/auth.lua", true},
		{"util", "util.lua", true},
		{"a-b.c_d", "a-b/c_d.lua", true},
		{"../x", "", false},
		{"/etc/passwd", "", false},
		{"lib..x", "", false},
		{"lib/x", "", false},
		{"", "", false},
		{"x.", "", false},
	}
	for _, tt := range tests {
		path, ok := modulePath(tt.name)
		if ok != tt.ok || (ok && path != tt.path) {
			t.Errorf("modulePath(%q) = %q, %v; want %q, %v", tt.name, path, ok, tt.path, tt.ok)
		}
	}
}

// TestKnownDifferencesFromChi pins the behaviours docs/lua.md lists under
// "Differences from chi".
func TestKnownDifferencesFromChi(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct{ script, want string }{
		{"r:Get(\"/admin*\", function() end)", `main.lua:2: route "/admin*": wildcard '*' must follow '/'`},
		{"r:Get(\"/x\", function() end) r:Get(\"/x/\", function() end)", `main.lua:2: route GET "/x/": a handler is already registered for path '/x/'`},
		{"r:Get(\"/{a?}\", function() end)", `main.lua:2: route "/{a?}": invalid parameter name "a?": expected letters, digits, '_' or '-'`},
	} {
		_, err := Load(testConfig(&logBuffer{}), scriptFS("local r = chi.NewRouter()\n"+tt.script+"\nreturn r\n"), "main.lua", Options{Host: e.host})
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: error %v, want %s", tt.script, err, tt.want)
		}
	}

	s := e.load(t, testConfig(&logBuffer{}), scriptFS(`
local r = chi.NewRouter()
r:Get("/a/*", function(w, req) w:Write("a " .. req:URLParam("*")) end)
r:Get("/a/b/*", function(w, req) w:Write("ab " .. req:URLParam("*")) end)
r:NotFound(function(w, req) w:WriteHeader(404) end)
return r
`), "main.lua", Options{})
	f := serveScript(t, s)
	for path, want := range map[string]result{
		"/a/x":   {status: 200, body: "a x"},
		"/a/b/c": {status: 200, body: "ab c"},
		"/a/b/":  {status: 200, body: "ab "},
		"/a/b":   {status: 404}, // chi: "a b"
	} {
		if r := f.do(t, "GET", path, nil, ""); r.status != want.status || r.body != want.body {
			t.Errorf("GET %s: %d %q, want %d %q", path, r.status, r.body, want.status, want.body)
		}
	}
}
