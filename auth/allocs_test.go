//go:build !race

package auth

import (
	"crypto/sha256"
	"net/netip"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keystone-gateway/keystone/config"
)

// The race detector allocates on its own; these budgets hold without it.

// TestChecksDoNotAllocate holds the per-request checks to zero
// allocations: a cached JWT with claim headers, an API key from a header
// and from the query, a cached basic credential, the IP filter and the CORS
// headers of an actual request.
func TestChecksDoNotAllocate(t *testing.T) {
	clock := newTestClock()
	tok := sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", jwt.MapClaims{"sub": "u", "exp": clock.Now().Add(time.Hour).Unix()})
	a, err := NewAuthenticator(config.Auth{
		Mode: "any",
		JWT: &config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}, Header: "Authorization",
			ClaimsToHeaders: map[string]string{"sub": "X-User-Id"}},
		APIKeys: &config.APIKeys{Header: "X-API-Key", Keys: []config.APIKey{{Consumer: "p", Hash: sha256.Sum256([]byte("partner-key-0123"))}}},
		Basic:   &config.Basic{Realm: "r", Users: []config.HtpasswdUser{{Name: "bob", Hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}}},
	}, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	q, err := NewAuthenticator(config.Auth{Mode: "any", APIKeys: &config.APIKeys{Query: "k",
		Keys: []config.APIKey{{Consumer: "p", Hash: sha256.Sum256([]byte("partner-key-0123"))}}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		a       *Authenticator
		uri     string
		headers []string
	}{
		{"cached JWT", a, "/x", []string{"Authorization", "Bearer " + tok}},
		{"API key header", a, "/x", []string{"X-API-Key", "partner-key-0123"}},
		{"API key query", q, "/x?k=partner-key-0123", nil},
		{"cached basic", a, "/x", []string{"Authorization", "Basic Ym9iOnBhc3N3b3Jk"}},
	} {
		ctx, tmpl := benchCtx(c.uri, c.headers...)
		run := func() {
			tmpl.Header.CopyTo(&ctx.Request.Header)
			if _, res := c.a.Authenticate(ctx); res != Accepted {
				t.Fatalf("%s: %s", c.name, res)
			}
		}
		run()
		if n := testing.AllocsPerRun(1000, run); n != 0 {
			t.Errorf("%s: %v allocs/op, want 0", c.name, n)
		}
	}
	f := NewIPFilter([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")})
	addr := netip.MustParseAddr("10.2.3.4")
	if n := testing.AllocsPerRun(1000, func() { f.Allowed(addr) }); n != 0 {
		t.Errorf("IP filter: %v allocs/op", n)
	}
	cors := NewCORS(config.CORS{AllowOrigins: []string{"https://*.example.com"}, AllowCredentials: true})
	ctx, _ := benchCtx("/x", "Origin", "https://a.example.com")
	if n := testing.AllocsPerRun(1000, func() { ctx.Response.Header.Reset(); cors.Actual(ctx) }); n != 0 {
		t.Errorf("CORS actual: %v allocs/op", n)
	}
}
