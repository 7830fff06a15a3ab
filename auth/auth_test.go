package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/bcrypt"
)

func TestIPFilter(t *testing.T) {
	t.Parallel()
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s).Masked())
		}
		return out
	}
	f := NewIPFilter(pfx("10.0.0.0/8", "2001:db8::/32"), pfx("10.1.2.3/32", "2001:db8:bad::/48"))
	deny := NewIPFilter(nil, pfx("192.0.2.0/24"))
	for _, c := range []struct {
		f    *IPFilter
		addr string
		want bool
	}{
		{f, "10.9.8.7", true},
		{f, "10.1.2.3", false},
		{f, "::ffff:10.1.2.3", false}, // IPv4-mapped is compared as IPv4
		{f, "::ffff:10.9.8.7", true},
		{f, "11.0.0.1", false},
		{f, "2001:db8::1", true},
		{f, "2001:db8:bad::1", false},
		{f, "2001:db9::1", false},
		{f, "fe80::1%eth0", false},
		{deny, "192.0.2.55", false},
		{deny, "198.51.100.1", true},
		{deny, "::1", true},
	} {
		if got := c.f.Allowed(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Allowed(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
	if f.Allowed(netip.Addr{}) {
		t.Error("an unknown address passes an allow list")
	}
}

func TestCORSOrigins(t *testing.T) {
	t.Parallel()
	c := NewCORS(config.CORS{AllowOrigins: []string{"https://app.example.com", "https://*.example.com", "http://*.dev.test:8080"}})
	for _, c2 := range []struct {
		origin string
		want   bool
	}{
		{"https://app.example.com", true},
		{"https://a.example.com", true},
		{"https://a-b1.example.com", true},
		{"https://example.com", false},        // the apex is not a subdomain
		{"https://a.b.example.com", false},    // one label only
		{"https://.example.com", false},       // empty label
		{"http://a.example.com", false},       // other scheme
		{"https://a.example.com:8443", false}, // other port
		{"https://evilexample.com", false},    // not a label boundary
		{"https://a.example.com.evil.com", false},
		{"http://x.dev.test:8080", true},
		{"http://x.dev.test", false},
		{"null", false},
		{"", false},
	} {
		if got := c.OriginAllowed([]byte(c2.origin)); got != c2.want {
			t.Errorf("OriginAllowed(%q) = %v, want %v", c2.origin, got, c2.want)
		}
	}
}

func TestCORSPreflightAndActual(t *testing.T) {
	t.Parallel()
	c := NewCORS(config.CORS{AllowOrigins: []string{"https://app.example.com"}, AllowMethods: []string{"GET", "PUT"},
		AllowHeaders: []string{"Authorization", "X-Trace"}, ExposeHeaders: []string{"X-Request-ID"},
		AllowCredentials: true, MaxAge: config.Duration(10 * time.Minute)})
	ctx := newCtx("OPTIONS", "/x", "Origin", "https://app.example.com", "Access-Control-Request-Method", "PUT",
		"Access-Control-Request-Headers", "authorization, x-trace")
	if !IsPreflight(&ctx.Request.Header) || !c.Preflight(ctx) {
		t.Fatal("allowed preflight refused")
	}
	rh := &ctx.Response.Header
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":      "https://app.example.com",
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Allow-Methods":     "GET, PUT",
		"Access-Control-Allow-Headers":     "Authorization, X-Trace",
		"Access-Control-Max-Age":           "600",
	} {
		if got := string(rh.Peek(k)); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if ctx.Response.StatusCode() != 204 || !strings.Contains(string(rh.Peek("Vary")), "Origin") {
		t.Errorf("status %d, Vary %q", ctx.Response.StatusCode(), rh.Peek("Vary"))
	}
	for _, h := range [][]string{
		{"Origin", "https://evil.example.com", "Access-Control-Request-Method", "GET"},
		{"Origin", "https://app.example.com", "Access-Control-Request-Method", "DELETE"},
		{"Origin", "https://app.example.com", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "X-Other"},
	} {
		if c.Preflight(newCtx("OPTIONS", "/x", h...)) {
			t.Errorf("preflight %q allowed", h)
		}
	}
	ctx = newCtx("GET", "/x", "Origin", "https://app.example.com")
	c.Actual(ctx)
	if string(rh2(ctx, "Access-Control-Allow-Origin")) != "https://app.example.com" ||
		string(rh2(ctx, "Access-Control-Expose-Headers")) != "X-Request-ID" || string(rh2(ctx, "Vary")) != "Origin" {
		t.Errorf("actual response headers:\n%s", ctx.Response.Header.String())
	}
	ctx = newCtx("GET", "/x", "Origin", "https://evil.example.com")
	c.Actual(ctx)
	if len(rh2(ctx, "Access-Control-Allow-Origin")) != 0 || string(rh2(ctx, "Vary")) != "Origin" {
		t.Errorf("refused origin got:\n%s", ctx.Response.Header.String())
	}
}

func rh2(ctx *fasthttp.RequestCtx, k string) []byte { return ctx.Response.Header.Peek(k) }

func TestHeaderRules(t *testing.T) {
	t.Parallel()
	r := NewHeaderRules(config.HeaderRules{
		Request: config.RequestHeaderRules{Set: map[string]string{"x-env": "prod"}, Add: map[string]string{"X-Via": "keystone"},
			Remove: []string{"x-debug"}},
		Response: config.ResponseHeaderRules{Set: map[string]string{"X-Content-Type-Options": "nosniff"}, Remove: []string{"Server"}},
	})
	ctx := newCtx("GET", "/", "X-Env", "dev", "X-Debug", "1", "X-Via", "client")
	r.Request(&ctx.Request.Header)
	h := &ctx.Request.Header
	if string(h.Peek("X-Env")) != "prod" || len(h.Peek("X-Debug")) != 0 || len(h.PeekAll("X-Via")) != 2 {
		t.Errorf("request headers:\n%s", h.String())
	}
	ctx.Response.Header.Set("Server", "nginx")
	r.Response(&ctx.Response.Header)
	if len(rh2(ctx, "Server")) != 0 || string(rh2(ctx, "X-Content-Type-Options")) != "nosniff" {
		t.Errorf("response headers:\n%s", ctx.Response.Header.String())
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	k := NewAPIKeys(config.APIKeys{Header: "x-api-key", Keys: []config.APIKey{
		{Consumer: "a", Hash: sha256.Sum256([]byte("key-of-partner-a"))},
		{Consumer: "b", Hash: sha256.Sum256([]byte("key-of-partner-b"))},
	}})
	if id := k.Verify([]byte("key-of-partner-b")); id == nil || id.Consumer != "b" || id.Method != MethodAPIKey {
		t.Errorf("Verify(b) = %+v", id)
	}
	for _, bad := range []string{"", "key-of-partner-", "key-of-partner-bb", "KEY-OF-PARTNER-B"} {
		if id := k.Verify([]byte(bad)); id != nil {
			t.Errorf("Verify(%q) = %+v", bad, id)
		}
	}
	ctx := newCtx("GET", "/", "X-Api-Key", "key-of-partner-a")
	if string(k.credential(ctx)) != "key-of-partner-a" {
		t.Error("key not read from the header")
	}
	q := NewAPIKeys(config.APIKeys{Query: "api_key"})
	ctx = newCtx("GET", "/x?a=1&api_key=k&b=2")
	if string(q.credential(ctx)) != "k" {
		t.Error("key not read from the query")
	}
	q.strip(ctx)
	if got := string(ctx.URI().RequestURI()); got != "/x?a=1&b=2" {
		t.Errorf("stripped URI %q", got)
	}
}

func TestBasic(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	b := NewBasic(config.Basic{Realm: "api", Users: []config.HtpasswdUser{
		{Name: "alice", Hash: string(hash)},
		{Name: "bob", Hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}, // "password"
	}}, clock.Now)
	enc := func(s string) []byte { return []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(s))) }
	for _, c := range []struct {
		v    []byte
		want string
	}{
		{enc("alice:s3cret"), "alice"},
		{[]byte("basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))), "alice"},
		{enc("bob:password"), "bob"},
		{enc("alice:wrong"), ""},
		{enc("bob:Password"), ""},
		{enc("carol:s3cret"), ""},
		{enc("alice"), ""},
		{enc(":s3cret"), ""},
		{[]byte("Basic !!!"), ""},
		{[]byte("Bearer x"), ""},
		{[]byte("Basic " + strings.Repeat("A", 2000)), ""},
	} {
		id := b.Verify(c.v)
		got := ""
		if id != nil {
			got = id.Consumer
		}
		if got != c.want {
			t.Errorf("Verify(%q) = %q, want %q", c.v, got, c.want)
		}
	}
	if b.cache.len() != 2 {
		t.Errorf("cache holds %d credentials, want the 2 accepted", b.cache.len())
	}
	if string(b.challenge) != `Basic realm="api", charset="UTF-8"` {
		t.Errorf("challenge %q", b.challenge)
	}
}

// TestAuthenticator runs the modes, exclusions, stripping and claim
// headers through Authenticate.
func TestAuthenticator(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	cfg := config.Auth{
		Mode:         "any",
		ExcludePaths: []string{"/health", "/public/*"},
		JWT: &config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}, Header: "Authorization",
			ClaimsToHeaders: map[string]string{"sub": "X-User-Id"}},
		APIKeys:          &config.APIKeys{Header: "X-API-Key", Keys: []config.APIKey{{Consumer: "p", Hash: sha256.Sum256([]byte("partner-key-0123"))}}},
		StripCredentials: true,
	}
	a, err := NewAuthenticator(cfg, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", jwt.MapClaims{"sub": "user-7", "exp": clock.Now().Add(time.Hour).Unix()})
	bad := sign(t, jwt.SigningMethodHS256, []byte(hsSecret+"x"), "", jwt.MapClaims{"sub": "user-7"})
	for _, c := range []struct {
		name     string
		path     string
		headers  []string
		want     Result
		consumer string
	}{
		{"a valid token", "/x", []string{"Authorization", "Bearer " + tok}, Accepted, "user-7"},
		{"a valid key", "/x", []string{"X-API-Key", "partner-key-0123"}, Accepted, "p"},
		{"a bad token and a valid key (any)", "/x", []string{"Authorization", "Bearer " + bad, "X-API-Key", "partner-key-0123"}, Accepted, "p"},
		{"no credential", "/x", nil, Missing, ""},
		{"a bad token", "/x", []string{"Authorization", "Bearer " + bad}, InvalidToken, ""},
		{"a bad key", "/x", []string{"X-API-Key", "nope"}, Invalid, ""},
		{"another scheme", "/x", []string{"Authorization", "Basic YTpi"}, Missing, ""},
		{"an excluded path", "/health", nil, Excluded, ""},
		{"an excluded subtree", "/public/a/b", nil, Excluded, ""},
		{"the subtree root is not excluded", "/public", nil, Missing, ""},
		{"a longer path is not excluded", "/healthz", nil, Missing, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := newCtx("GET", c.path, append([]string{"X-User-Id", "spoofed"}, c.headers...)...)
			id, res := a.Authenticate(ctx)
			if res != c.want {
				t.Fatalf("result %s, want %s", res, c.want)
			}
			h := &ctx.Request.Header
			if got := string(h.Peek("X-User-Id")); got == "spoofed" {
				t.Error("the client's X-User-Id reached the upstream")
			}
			if res != Accepted {
				return
			}
			if id.Consumer != c.consumer {
				t.Errorf("consumer %q, want %q", id.Consumer, c.consumer)
			}
			if len(h.Peek("Authorization")) != 0 || len(h.Peek("X-API-Key")) != 0 {
				t.Errorf("credentials not stripped:\n%s", h.String())
			}
			if id.Method == MethodJWT && string(h.Peek("X-User-Id")) != "user-7" {
				t.Errorf("X-User-Id = %q", h.Peek("X-User-Id"))
			}
		})
	}

	cfg.Mode = "all"
	all, err := NewAuthenticator(cfg, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		headers []string
		want    Result
	}{
		{[]string{"Authorization", "Bearer " + tok, "X-API-Key", "partner-key-0123"}, Accepted},
		{[]string{"Authorization", "Bearer " + tok}, Invalid},
		{[]string{"Authorization", "Bearer " + bad, "X-API-Key", "partner-key-0123"}, InvalidToken},
		{nil, Missing},
	} {
		if _, res := all.Authenticate(newCtx("GET", "/x", c.headers...)); res != c.want {
			t.Errorf("mode all with %d headers: %s, want %s", len(c.headers)/2, res, c.want)
		}
	}
}
