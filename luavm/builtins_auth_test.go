package luavm

import (
	"encoding/base64"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// TestAuthMiddlewareIsSharedBetweenVMs loads a script whose pool holds
// several VMs: each VM runs keystone.auth.jwt, but one authenticator (and
// its token cache) is built per distinct option set, and requests through
// any VM see the same verdicts.
func TestAuthMiddlewareIsSharedBetweenVMs(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	e := newEnv(t)
	cfg := testConfig(nil)
	cfg.PoolSize = 4
	ac := &AuthConfig{}
	s := e.load(t, cfg, scriptFS(`
local r = chi.NewRouter()
for _, aud in ipairs({"a", "b"}) do
  r:With(keystone.auth.jwt{secret = "`+secret+`", algorithms = {"HS256"}, audience = aud}):Get("/"..aud, function(w, req)
    w:Write(aud .. ":" .. tostring(req.Auth))
  end)
end
return r
`), "main.lua", Options{Auth: ac})
	if n := len(ac.built); n != 2 {
		t.Fatalf("%d authenticators built for %d VMs, want one per option set (2)", n, cfg.PoolSize)
	}
	f := serveScript(t, s)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "aud": "a",
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		// testHost is no AuthHost: the handler runs, req.Auth is nil.
		if r := f.do(t, "GET", "/a", map[string]string{"Authorization": "Bearer " + tok}, ""); r.status != 200 || r.body != "a:nil" {
			t.Fatalf("/a: %d %q", r.status, r.body)
		}
		r := f.do(t, "GET", "/b", map[string]string{"Authorization": "Bearer " + tok}, "")
		if r.status != 401 || r.headers["Www-Authenticate"] != `Bearer error="invalid_token"` {
			t.Fatalf("/b with an audience-a token: %d %v", r.status, r.headers)
		}
	}
}

// TestAuthMiddlewareOptionErrors checks option conversion errors.
func TestAuthMiddlewareOptionErrors(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ src, want string }{
		{`keystone.auth.jwt("x")`, "bad argument #1"},
		{`keystone.auth.jwt{leeway = true}`, "leeway: expected a duration"},
		{`keystone.auth.jwt{leeway = "soon"}`, `leeway: expected a duration such as "30s" or a number of seconds, got "soon"`},
		{`keystone.auth.jwt{algorithms = {1, 2}}`, "algorithms[1]: expected a string"},
		{`keystone.auth.jwt{claims_to_headers = {sub = 1}}`, "claims_to_headers: expected a table of strings to strings"},
		{`keystone.auth.jwt{jwks_url = "https://idp.example.com/jwks", algorithms = {"RS256"}}`, "a script verifies with the tenant's auth.jwt.jwks_url only"},
		{`keystone.auth.api_key{keys = {"k"}}`, "keys: expected a list of {consumer"},
		{`keystone.auth.api_key{keys = {{consumer = "c", key = "0123456789abcdefg", extra = "x"}}}`, `keys[1]: unknown field "extra"`},
		{`keystone.auth.basic{realm = "r"}`, `basic: missing required field "htpasswd_file"`},
		{`keystone.auth.basic{htpasswd_file = "missing"}`, `htpasswd_file: cannot read "missing" in the scripts directory`},
		{`keystone.auth.basic{strip_credentials = "yes"}`, "strip_credentials: expected true or false"},
	} {
		src := "local r = chi.NewRouter()\nr:With(" + c.src + "):Get(\"/\", function(w, req) end)\nreturn r\n"
		_, err := Load(testConfig(nil), scriptFS(src), "main.lua", Options{Host: e.host, Tenant: "api"})
		if err == nil {
			t.Errorf("%s: loads, want %q", c.src, c.want)
			continue
		}
		if got := err.Error(); !strings.Contains(got, "main.lua:2:") || !strings.Contains(got, c.want) {
			t.Errorf("%s:\n got %s\nwant main.lua:2: ... %s", c.src, got, c.want)
		}
	}
}

// TestAuthMiddlewareDoesNotSpendTheLuaBudget protects a route with basic
// auth at bcrypt's default cost (50ms and more, ten times that under the race
// detector) under a Lua budget of 20ms: the check runs with the Lua clock
// paused, so the request succeeds.
func TestAuthMiddlewareDoesNotSpendTheLuaBudget(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	cfg := testConfig(nil)
	cfg.PoolSize = 1
	cfg.MaxExecution = 20 * time.Millisecond
	s := e.load(t, cfg, fstest.MapFS{
		"main.lua": {Data: []byte(`
local r = chi.NewRouter()
r:With(keystone.auth.basic{htpasswd_file = "users"}):Get("/", function(w, req) w:Write("in") end)
return r
`)},
		"users": {Data: []byte("bob:" + string(hash) + "\n")},
	}, "main.lua", Options{})
	f := serveScript(t, s)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:pw"))
	if r := f.do(t, "GET", "/", map[string]string{"Authorization": basic}, ""); r.status != 200 || r.body != "in" {
		t.Errorf("status %d body %q, want the handler to run after a slow bcrypt check", r.status, r.body)
	}
}
