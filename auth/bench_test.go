package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"net/netip"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/bcrypt"
)

// The benchmarks bound the per-request cost of each check, measured
// through Authenticate on a real RequestCtx where the method reads the
// request (header lookup, parsing, verification, claim headers).

func benchAuth(b *testing.B, a *Authenticator, ctx *fasthttp.RequestCtx, tmpl *fasthttp.Request) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		tmpl.Header.CopyTo(&ctx.Request.Header)
		if _, res := a.Authenticate(ctx); res != Accepted {
			b.Fatalf("result %s", res)
		}
	}
}

func benchCtx(uri string, headers ...string) (*fasthttp.RequestCtx, *fasthttp.Request) {
	ctx := newCtx("GET", uri, headers...)
	tmpl := &fasthttp.Request{}
	ctx.Request.CopyTo(tmpl)
	return ctx, tmpl
}

// BenchmarkJWT bounds token verification per request, for each algorithm,
// with the verified-token cache (the steady state of a client reusing its
// token) and without it (the first request of each token).
func BenchmarkJWT(b *testing.B) {
	testKeys(b)
	for _, c := range []struct {
		name   string
		method jwt.SigningMethod
		sign   any
		cfg    config.JWT
	}{
		{"HS256", jwt.SigningMethodHS256, []byte(hsSecret), config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}}},
		{"RS256", jwt.SigningMethodRS256, rsaKey, config.JWT{PublicKey: &rsaKey.PublicKey, Algorithms: []string{"RS256"}}},
		{"ES256", jwt.SigningMethodES256, ecKey, config.JWT{PublicKey: &ecKey.PublicKey, Algorithms: []string{"ES256"}}},
	} {
		c.cfg.Header = "Authorization"
		c.cfg.ClaimsToHeaders = map[string]string{"sub": "X-User-Id"}
		c.cfg.Issuer = "https://idp.example.com"
		c.cfg.Audience = []string{"api"}
		j, err := NewJWT(c.cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		tok := sign(b, c.method, c.sign, "", jwt.MapClaims{"sub": "user-1", "iss": "https://idp.example.com", "aud": "api",
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "scope": "read write"})
		b.Run(c.name+"/cached", func(b *testing.B) {
			a := &Authenticator{JWT: j, claimHeaders: [][]byte{[]byte("X-User-Id")}}
			ctx, tmpl := benchCtx("/x", "Authorization", "Bearer "+tok)
			benchAuth(b, a, ctx, tmpl)
		})
		b.Run(c.name+"/uncached", func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for b.Loop() {
				if _, _, err := j.verify([]byte(tok), now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJWTCachedParallel bounds the cache's shard locks under load.
func BenchmarkJWTCachedParallel(b *testing.B) {
	j, err := NewJWT(config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}, Header: "Authorization"}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	tok := []byte(sign(b, jwt.SigningMethodHS256, []byte(hsSecret), "", jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := j.Verify(tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAPIKey bounds an API key check (SHA-256 and a constant-time
// compare against each of 10 keys), from a header and from the query.
func BenchmarkAPIKey(b *testing.B) {
	keys := make([]config.APIKey, 10)
	for i := range keys {
		keys[i] = config.APIKey{Consumer: "c", Hash: sha256.Sum256([]byte{byte(i), 'k', 'e', 'y'})}
	}
	keys[9].Hash = sha256.Sum256([]byte("the-partner-key-0123456789"))
	b.Run("header", func(b *testing.B) {
		a := &Authenticator{APIKeys: NewAPIKeys(config.APIKeys{Header: "X-API-Key", Keys: keys})}
		ctx, tmpl := benchCtx("/x", "X-API-Key", "the-partner-key-0123456789")
		benchAuth(b, a, ctx, tmpl)
	})
	b.Run("query", func(b *testing.B) {
		a := &Authenticator{APIKeys: NewAPIKeys(config.APIKeys{Query: "api_key", Keys: keys})}
		ctx, _ := benchCtx("/x?a=1&api_key=the-partner-key-0123456789")
		b.ReportAllocs()
		for b.Loop() {
			if _, res := a.Authenticate(ctx); res != Accepted {
				b.Fatal(res)
			}
		}
	})
}

// BenchmarkBasic bounds basic auth: bcrypt at the default cost on a
// credential's first request, the credential cache after it, and {SHA}.
func BenchmarkBasic(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	users := []config.HtpasswdUser{{Name: "alice", Hash: string(hash)}, {Name: "bob", Hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}}
	basic := NewBasic(config.Basic{Realm: "r", Users: users}, time.Now)
	alice := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	b.Run("bcrypt/cached", func(b *testing.B) {
		a := &Authenticator{Basic: basic}
		ctx, tmpl := benchCtx("/x", "Authorization", alice)
		benchAuth(b, a, ctx, tmpl)
	})
	b.Run("bcrypt/uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if bcrypt.CompareHashAndPassword(hash, []byte("s3cret")) != nil {
				b.Fatal("mismatch")
			}
		}
	})
	b.Run("sha/uncached", func(b *testing.B) {
		bu := basic.users["bob"]
		b.ReportAllocs()
		for b.Loop() {
			basic.cache = newCache[[32]byte](maxCachedCredentials)
			_ = bu
			if basic.verify([]byte("bob"), []byte("password")) == nil {
				b.Fatal("refused")
			}
		}
	})
}

// BenchmarkIPFilter bounds an allow/deny check over 8 prefixes.
func BenchmarkIPFilter(b *testing.B) {
	var allow []netip.Prefix
	for _, s := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "2001:db8::/32", "100.64.0.0/10", "fd00::/8"} {
		allow = append(allow, netip.MustParsePrefix(s))
	}
	f := NewIPFilter(allow, []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("2001:db8:bad::/48")})
	addr := netip.MustParseAddr("2001:db8::42")
	b.ReportAllocs()
	for b.Loop() {
		if !f.Allowed(addr) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkCORSActual bounds the CORS headers of an allowed actual request
// from a wildcard origin.
func BenchmarkCORSActual(b *testing.B) {
	c := NewCORS(config.CORS{AllowOrigins: []string{"https://app.example.com", "https://*.example.com"},
		AllowCredentials: true, ExposeHeaders: []string{"X-Request-ID"}})
	ctx, _ := benchCtx("/x", "Origin", "https://tenant-1.example.com")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Header.Reset()
		c.Actual(ctx)
	}
}
