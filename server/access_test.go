package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/bcrypt"
)

// The access-control tests run the real gateway against echo upstreams
// with keys generated here; no key material is committed.

const accessSecret = "0123456789abcdef0123456789abcdef"

var (
	accessKeysOnce      sync.Once
	accessRSA, accessR2 *rsa.PrivateKey
	accessEC            *ecdsa.PrivateKey
)

func accessKeys(t testing.TB) {
	t.Helper()
	accessKeysOnce.Do(func() {
		var err error
		if accessRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if accessR2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if accessEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func signToken(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemPublic(t testing.TB, k any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// jwksEndpoint is an identity provider's JWKS document at url, served by
// an echo upstream (whose requests counts the fetches) answering the keys
// last set, or 503 while down.
type jwksEndpoint struct {
	*echo
	url  string // shadows echo.url: the document's URL, not the server's
	mu   sync.Mutex
	doc  []byte
	down atomic.Bool // answer 503
}

func serveJWKS(t *testing.T, keys map[string]any) *jwksEndpoint {
	t.Helper()
	e := &jwksEndpoint{echo: startEcho(t, "jwks")}
	e.url = e.echo.url() + "/.well-known/jwks.json"
	e.set(keys)
	e.setHandler(func(ctx *fasthttp.RequestCtx) {
		if e.down.Load() {
			ctx.Error("identity provider down", fasthttp.StatusServiceUnavailable)
			return
		}
		e.mu.Lock()
		doc := e.doc
		e.mu.Unlock()
		ctx.SetContentType("application/json")
		ctx.SetBody(doc)
	})
	return e
}

func (e *jwksEndpoint) set(keys map[string]any) {
	b64 := base64.RawURLEncoding.EncodeToString
	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			doc.Keys = append(doc.Keys, map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256",
				"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PublicKey:
			raw, _ := k.Bytes()
			doc.Keys = append(doc.Keys, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
				"x": b64(raw[1:33]), "y": b64(raw[33:])})
		}
	}
	b, _ := json.Marshal(doc)
	e.mu.Lock()
	e.doc = b
	e.mu.Unlock()
}

// unauthorized checks a 401: JSON body, request id, challenge, and a
// message that says nothing about what was wrong.
func unauthorized(t *testing.T, resp *fasthttp.Response, challenge string) {
	t.Helper()
	m := errorBody(t, resp, 401, "unauthorized")
	if m["message"] != "missing or invalid credentials" {
		t.Errorf("message %q gives a hint", m["message"])
	}
	var got []string
	for _, v := range resp.Header.PeekAll("WWW-Authenticate") {
		got = append(got, string(v))
	}
	if strings.Join(got, " | ") != challenge {
		t.Errorf("WWW-Authenticate = %q, want %q", got, challenge)
	}
}

// TestJWTThroughTheGateway sends good and bad HS256 tokens through the
// gateway: only good ones reach the upstream, which gets the claim
// headers (never the client's) and not the token.
func TestJWTThroughTheGateway(t *testing.T) {
	accessKeys(t)
	up := startEcho(t, "up")
	g := startGateway(t, oneTenant("api", "", yamlf(`
auth:
  exclude_paths: [/health, /public/*]
  jwt:
    secret: %s
    algorithms: [HS256]
    issuer: https://idp.example.com
    audience: [api]
    required_claims: [sub]
    leeway: 5s
    claims_to_headers: {sub: X-User-Id, role: X-Role}
  strip_credentials: true
`, accessSecret), up.url()))
	now := time.Now()
	claims := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "user-42", "role": "admin", "iss": "https://idp.example.com", "aud": []string{"api"},
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		if k != "" {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	good := signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", claims("", nil))

	resp := g.get("/orders", "Authorization", "Bearer "+good, "X-User-Id", "someone-else", "X-Role", "root")
	e := decodeEcho(t, resp)
	if got := e.Headers["X-User-Id"]; len(got) != 1 || got[0] != "user-42" {
		t.Errorf("upstream X-User-Id = %v, want only the claim", got)
	}
	if got := e.Headers["X-Role"]; len(got) != 1 || got[0] != "admin" {
		t.Errorf("upstream X-Role = %v", got)
	}
	if _, ok := e.Headers["Authorization"]; ok {
		t.Error("the upstream got the stripped token")
	}

	parts := strings.Split(good, ".")
	rsaPEMSecret := []byte(pemPublic(t, &accessRSA.PublicKey))
	for _, c := range []struct{ name, tok string }{
		{"expired", signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", claims("exp", now.Add(-time.Minute).Unix()))},
		{"not yet valid", signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", claims("nbf", now.Add(time.Hour).Unix()))},
		{"wrong issuer", signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", claims("iss", "https://evil.example.com"))},
		{"wrong audience", signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", claims("aud", "billing"))},
		{"missing sub", signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", claims("sub", nil))},
		{"alg none", signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims("", nil))},
		{"RS256", signToken(t, jwt.SigningMethodRS256, accessRSA, "", claims("", nil))},
		{"HS256 signed with a public key", signToken(t, jwt.SigningMethodHS256, rsaPEMSecret, "", claims("", nil))},
		{"bad signature", parts[0] + "." + parts[1] + "." + strings.Repeat("x", len(parts[2]))},
		{"malformed base64", parts[0] + ".e30*." + parts[2]},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := up.requests.Load()
			unauthorized(t, g.get("/orders", "Authorization", "Bearer "+c.tok), `Bearer error="invalid_token"`)
			if up.requests.Load() != before {
				t.Error("a refused request reached the upstream")
			}
		})
	}
	unauthorized(t, g.get("/orders"), "Bearer")
	unauthorized(t, g.get("/orders", "Authorization", "Basic dTpw"), "Bearer")
	if resp := g.get("/health"); resp.StatusCode() != 200 {
		t.Errorf("excluded /health: %d", resp.StatusCode())
	}
	e = decodeEcho(t, g.get("/public/logo.png", "X-User-Id", "spoofed"))
	if _, ok := e.Headers["X-User-Id"]; ok {
		t.Error("a client's X-User-Id reached the upstream on an excluded path")
	}

	eventually(t, 2*time.Second, "the access lines", func() bool { return len(g.accessLines()) >= 14 })
	first := g.accessLines()[0]
	if first["consumer"] != "user-42" || first["auth_method"] != "jwt" {
		t.Errorf("access line consumer %v auth_method %v", first["consumer"], first["auth_method"])
	}
	if l := g.accessLines()[1]; l["error"] != "unauthorized" || l["consumer"] != "" {
		t.Errorf("refused access line: %v", l)
	}
}

// TestJWKSThroughTheGateway verifies RS256 and ES256 tokens against keys
// from a JWKS endpoint and rotates to a new kid while clients keep
// sending requests: none fails.
func TestJWKSThroughTheGateway(t *testing.T) {
	accessKeys(t)
	up := startEcho(t, "up")
	idp := serveJWKS(t, map[string]any{"rsa-1": &accessRSA.PublicKey, "ec-1": &accessEC.PublicKey})
	g := startGateway(t, oneTenant("api", "", yamlf(`
auth:
  jwt:
    jwks_url: %s
    algorithms: [RS256, ES256]
    jwks_refresh: 10m
`, idp.url), up.url()))
	exp := time.Now().Add(time.Hour).Unix()
	rs1 := signToken(t, jwt.SigningMethodRS256, accessRSA, "rsa-1", jwt.MapClaims{"sub": "rs", "exp": exp})
	es1 := signToken(t, jwt.SigningMethodES256, accessEC, "ec-1", jwt.MapClaims{"sub": "es", "exp": exp})
	for _, tok := range []string{rs1, es1} {
		if resp := g.get("/x", "Authorization", "Bearer "+tok); resp.StatusCode() != 200 {
			t.Fatalf("JWKS token refused: %d %s", resp.StatusCode(), resp.Body())
		}
	}
	// HS256 signed with the RSA modulus as the secret: key confusion.
	confused := signToken(t, jwt.SigningMethodHS256, accessRSA.PublicKey.N.Bytes(), "rsa-1", jwt.MapClaims{"sub": "x", "exp": exp})
	unauthorized(t, g.get("/x", "Authorization", "Bearer "+confused), `Bearer error="invalid_token"`)

	// Clients keep using the old key while the identity provider
	// publishes a new one, then sign with it.
	var failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if g.get("/x", "Authorization", "Bearer "+rs1).StatusCode() != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	fetched := idp.requests.Load()
	idp.set(map[string]any{"rsa-1": &accessRSA.PublicKey, "rsa-2": &accessR2.PublicKey, "ec-1": &accessEC.PublicKey})
	rs2 := signToken(t, jwt.SigningMethodRS256, accessR2, "rsa-2", jwt.MapClaims{"sub": "rotated", "exp": exp})
	var rotWG sync.WaitGroup
	for range 8 {
		rotWG.Add(1)
		go func() {
			defer rotWG.Done()
			if resp := g.get("/x", "Authorization", "Bearer "+rs2); resp.StatusCode() != 200 {
				failed.Add(1)
			}
		}()
	}
	rotWG.Wait()
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the rotation", n)
	}
	if n := idp.requests.Load() - fetched; n != 1 {
		t.Errorf("the new kid caused %d JWKS fetches, want 1", n)
	}
	// An unknown kid right after is refused without another fetch.
	bogus := signToken(t, jwt.SigningMethodRS256, accessR2, "nope", jwt.MapClaims{"sub": "x", "exp": exp})
	unauthorized(t, g.get("/x", "Authorization", "Bearer "+bogus), `Bearer error="invalid_token"`)
	if n := idp.requests.Load() - fetched; n != 1 {
		t.Errorf("an unknown kid within the rate limit caused a fetch (%d in all)", n)
	}
}

// TestAPIKeysAndBasicThroughTheGateway accepts API keys by header and by
// query and htpasswd bcrypt users; the upstream sees none of them.
func TestAPIKeysAndBasicThroughTheGateway(t *testing.T) {
	up := startEcho(t, "up")
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, yamlf(`
tenants:
  - name: keys
    path_prefix: /keys
    upstreams: [{url: %[1]q}]
    auth:
      api_keys:
        keys:
          - {consumer: partner-a, key: partner-a-key-0123456789}
          - {consumer: partner-b, sha256: "%[2]x"}
      strip_credentials: true
  - name: query
    path_prefix: /query
    upstreams: [{url: %[1]q}]
    auth:
      api_keys: {query: api_key, keys: [{consumer: partner-q, key: partner-q-key-0123456789}]}
      strip_credentials: true
  - name: basic
    path_prefix: /basic
    upstreams: [{url: %[1]q}]
    auth:
      basic: {htpasswd_file: users.htpasswd, realm: staff}
      strip_credentials: true
`, up.url(), sha256Sum("partner-b-key-0123456789")), "users.htpasswd", "alice:"+string(hash)+"\n")

	e := decodeEcho(t, g.get("/keys/x", "X-API-Key", "partner-a-key-0123456789"))
	if _, ok := e.Headers["X-Api-Key"]; ok {
		t.Error("the upstream got the API key")
	}
	if resp := g.get("/keys/x", "X-API-Key", "partner-b-key-0123456789"); resp.StatusCode() != 200 {
		t.Errorf("sha256 key refused: %d", resp.StatusCode())
	}
	unauthorized(t, g.get("/keys/x", "X-API-Key", "partner-a-key-012345678"), "")
	unauthorized(t, g.get("/keys/x"), "")

	e = decodeEcho(t, g.get("/query/x?a=1&api_key=partner-q-key-0123456789&b=2"))
	if e.URI != "/query/x?a=1&b=2" {
		t.Errorf("upstream URI %q, want the key removed", e.URI)
	}
	unauthorized(t, g.get("/query/x?api_key=wrong"), "")

	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	e = decodeEcho(t, g.get("/basic/x", "Authorization", basic("alice", "correct horse")))
	if _, ok := e.Headers["Authorization"]; ok {
		t.Error("the upstream got the basic credentials")
	}
	unauthorized(t, g.get("/basic/x", "Authorization", basic("alice", "wrong")), `Basic realm="staff", charset="UTF-8"`)
	unauthorized(t, g.get("/basic/x", "Authorization", basic("mallory", "correct horse")), `Basic realm="staff", charset="UTF-8"`)
	unauthorized(t, g.get("/basic/x"), `Basic realm="staff", charset="UTF-8"`)

	eventually(t, 2*time.Second, "access lines", func() bool { return len(g.accessLines()) >= 10 })
	consumers := map[string]string{}
	for _, l := range g.accessLines() {
		if c, _ := l["consumer"].(string); c != "" {
			consumers[c], _ = l["auth_method"].(string)
		}
	}
	for c, m := range map[string]string{"partner-a": "api_key", "partner-b": "api_key", "partner-q": "api_key", "alice": "basic"} {
		if consumers[c] != m {
			t.Errorf("access log: consumer %q auth_method %q, want %q", c, consumers[c], m)
		}
	}
}

func sha256Sum(s string) []byte {
	h := sha256Hash([]byte(s))
	return h[:]
}

// TestIPRulesThroughTheGateway applies allow/deny to the trusted client
// IP: behind a trusted proxy the forwarded address counts, IPv4 and IPv6;
// a client that is not a trusted proxy cannot spoof X-Forwarded-For.
func TestIPRulesThroughTheGateway(t *testing.T) {
	up := startEcho(t, "up")
	tenants := oneTenant("api", "", `ip: {allow: [10.0.0.0/8, "2001:db8::/32"], deny: [10.1.2.3/32, "2001:db8:bad::/48"]}`, up.url())
	behind := startGateway(t, "server: {trusted_proxies: [127.0.0.1]}\n"+tenants)
	for _, c := range []struct {
		xff    string
		status int
	}{
		{"10.9.8.7", 200},
		{"10.1.2.3", 403},
		{"192.0.2.1", 403},
		{"2001:db8::7", 200},
		{"2001:db8:bad::7", 403},
		{"2001:db9::1", 403},
		{"10.9.8.7, 10.1.2.3", 403}, // the rightmost untrusted address is the client
	} {
		resp := behind.get("/x", "X-Forwarded-For", c.xff)
		if resp.StatusCode() != c.status {
			t.Errorf("X-Forwarded-For %q: status %d, want %d", c.xff, resp.StatusCode(), c.status)
		}
		if c.status == 403 {
			errorBody(t, resp, 403, "forbidden")
		}
	}
	direct := startGateway(t, tenants)
	before := up.requests.Load()
	errorBody(t, direct.get("/x", "X-Forwarded-For", "10.9.8.7"), 403, "forbidden")
	if up.requests.Load() != before {
		t.Error("a denied request reached the upstream")
	}
}

// TestCORSThroughTheGateway answers preflights at the gateway (no auth,
// no upstream) and adds CORS headers to actual requests, also to 401s.
func TestCORSThroughTheGateway(t *testing.T) {
	up := startEcho(t, "up")
	g := startGateway(t, oneTenant("api", "", `
auth:
  api_keys: {keys: [{consumer: web, key: web-key-0123456789abcdef}]}
cors:
  allow_origins: [https://app.example.com, "https://*.example.com"]
  allow_methods: [GET, POST, DELETE]
  allow_headers: [X-API-Key, Content-Type]
  expose_headers: [X-Request-ID]
  allow_credentials: true
  max_age: 10m
ip: {deny: [192.0.2.0/24]}
headers:
  response: {set: {X-Frame-Options: DENY}}
`, up.url()))
	resp := g.do("OPTIONS", "", "/items", nil, "Origin", "https://shop.example.com",
		"Access-Control-Request-Method", "DELETE", "Access-Control-Request-Headers", "x-api-key")
	if resp.StatusCode() != 204 {
		t.Fatalf("preflight: %d %s", resp.StatusCode(), resp.Body())
	}
	if string(resp.Header.Peek("X-Frame-Options")) != "DENY" {
		t.Error("response header rules not applied to the preflight answer")
	}
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":      "https://shop.example.com",
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Allow-Methods":     "GET, POST, DELETE",
		"Access-Control-Allow-Headers":     "X-API-Key, Content-Type",
		"Access-Control-Max-Age":           "600",
	} {
		if got := string(resp.Header.Peek(k)); got != want {
			t.Errorf("preflight %s = %q, want %q", k, got, want)
		}
	}
	for _, h := range [][]string{
		{"Origin", "https://evil.test", "Access-Control-Request-Method", "GET"},
		{"Origin", "https://a.b.example.com", "Access-Control-Request-Method", "GET"},
		{"Origin", "https://app.example.com", "Access-Control-Request-Method", "PATCH"},
	} {
		errorBody(t, g.do("OPTIONS", "", "/items", nil, h...), 403, "forbidden")
	}
	if n := up.requests.Load(); n != 0 {
		t.Errorf("preflights reached the upstream %d times", n)
	}

	resp = g.get("/items", "Origin", "https://app.example.com", "X-API-Key", "web-key-0123456789abcdef")
	if resp.StatusCode() != 200 || string(resp.Header.Peek("Access-Control-Allow-Origin")) != "https://app.example.com" ||
		string(resp.Header.Peek("Access-Control-Expose-Headers")) != "X-Request-ID" ||
		!strings.Contains(string(resp.Header.Peek("Vary")), "Origin") {
		t.Errorf("actual request: %d\n%s", resp.StatusCode(), resp.Header.String())
	}
	resp = g.get("/items", "Origin", "https://app.example.com")
	unauthorized(t, resp, "")
	if string(resp.Header.Peek("Access-Control-Allow-Origin")) != "https://app.example.com" {
		t.Error("a 401 lacks CORS headers: the browser cannot read it")
	}
	if string(resp.Header.Peek("X-Frame-Options")) != "DENY" {
		t.Error("response header rules not applied to the gateway's 401")
	}
	resp = g.get("/items", "Origin", "https://evil.test", "X-API-Key", "web-key-0123456789abcdef")
	if resp.StatusCode() != 200 || len(resp.Header.Peek("Access-Control-Allow-Origin")) != 0 {
		t.Errorf("refused origin: %d\n%s", resp.StatusCode(), resp.Header.String())
	}
}

// TestHeaderRulesThroughTheGateway sets, adds and removes request headers
// for the upstream and response headers for the client.
func TestHeaderRulesThroughTheGateway(t *testing.T) {
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Server", "leaky/1.0")
		ctx.Response.Header.Set("X-Powered-By", "php")
		ctx.SetBodyString(string(ctx.Request.Header.Peek("X-Env")) + "|" + string(ctx.Request.Header.Peek("X-Debug")) +
			"|" + strings.Join(peekAll(&ctx.Request.Header, "X-Via"), ","))
	})
	g := startGateway(t, oneTenant("api", "", `
headers:
  request: {set: {X-Env: prod}, add: {X-Via: keystone}, remove: [X-Debug]}
  response: {set: {X-Content-Type-Options: nosniff}, remove: [Server, X-Powered-By]}
`, up.url()))
	resp := g.get("/x", "X-Env", "dev", "X-Debug", "1", "X-Via", "client")
	if got := string(resp.Body()); got != "prod||client,keystone" {
		t.Errorf("upstream saw %q", got)
	}
	if len(resp.Header.Peek("Server")) != 0 || len(resp.Header.Peek("X-Powered-By")) != 0 ||
		string(resp.Header.Peek("X-Content-Type-Options")) != "nosniff" {
		t.Errorf("response headers:\n%s", resp.Header.String())
	}
}

func peekAll(h *fasthttp.RequestHeader, k string) []string {
	var out []string
	for _, v := range h.PeekAll(k) {
		out = append(out, string(v))
	}
	return out
}

func sha256Hash(b []byte) [32]byte { return sha256.Sum256(b) }

// BenchmarkProxyHandlerAuth bounds the whole proxy path with each
// authentication method on (steady state: a JWT verified once and cached,
// an API key hashed and compared per request), to set beside
// BenchmarkProxyHandler's figure with auth off.
func BenchmarkProxyHandlerAuth(b *testing.B) {
	accessKeys(b)
	claims := jwt.MapClaims{"sub": "user-1", "exp": time.Now().Add(time.Hour).Unix()}
	sign := func(m jwt.SigningMethod, key any) string { return signToken(b, m, key, "", claims) }
	rsaPEM := pemPublic(b, &accessRSA.PublicKey)
	for _, c := range []struct {
		name, auth, header, value string
	}{
		{"jwt-hs256-cached", "jwt: {secret: " + accessSecret + ", algorithms: [HS256], claims_to_headers: {sub: X-User-Id}}",
			"Authorization", "Bearer " + sign(jwt.SigningMethodHS256, []byte(accessSecret))},
		{"jwt-rs256-cached", "jwt: {public_key_file: rsa.pem, algorithms: [RS256], claims_to_headers: {sub: X-User-Id}}",
			"Authorization", "Bearer " + sign(jwt.SigningMethodRS256, accessRSA)},
		{"api-key", "api_keys: {keys: [{consumer: p, key: partner-key-0123456789}]}", "X-API-Key", "partner-key-0123456789"},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newBenchServer(b, `
logging: {access_log: false, level: error}
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://127.0.0.1:2"}]
    auth:
      strip_credentials: true
      `+c.auth+`
`, "rsa.pem", rsaPEM)
			ctx, tmpl := newBenchCtx()
			tmpl.Header.Set(c.header, c.value)
			b.ReportAllocs()
			for b.Loop() {
				benchRequest(ctx, tmpl)
				s.handle(ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				}
			}
		})
	}
}

// TestLuaAuthMiddleware protects single routes of a script with
// keystone.auth middleware: options left out come from the tenant's auth
// block, req.Auth shows the identity, the access log records it.
func TestLuaAuthMiddleware(t *testing.T) {
	up := startEcho(t, "up")
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-of-bob"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, yamlf(`
tenants:
  - name: app
    path_prefix: /
    script: app.lua
    upstreams: [{url: %q}]
    auth:
      exclude_paths: ["/*"]   # the tenant's jwt settings serve the script's routes
      jwt: {secret: %s, algorithms: [HS256], issuer: https://idp.example.com}
      strip_credentials: true
`, up.url(), accessSecret), "app.lua", `
local r = chi.NewRouter()
r:With(keystone.auth.jwt{audience = "admin"}):Get("/ops/x", function(w, req)
  w:Write(req.Auth.method .. ":" .. req.Auth.consumer .. ":" .. tostring(req.Auth.claims.role))
end)
r:With(keystone.auth.api_key{keys = {{consumer = "ci", key = "ci-key-0123456789abcdef"}}}):Get("/ci", keystone.Proxy())
r:With(keystone.auth.basic{htpasswd_file = "users.htpasswd", realm = "staff"}):Get("/staff", function(w, req)
  w:Write(req.Auth.consumer)
end)
r:Get("/open", function(w, req) w:Write(tostring(req.Auth)) end)
return r
`, "users.htpasswd", "bob:"+string(hash)+"\n")

	exp := time.Now().Add(time.Hour).Unix()
	admin := signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "",
		jwt.MapClaims{"sub": "ann", "role": "owner", "aud": "admin", "iss": "https://idp.example.com", "exp": exp})
	api := signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "",
		jwt.MapClaims{"sub": "ann", "aud": "api", "iss": "https://idp.example.com", "exp": exp})
	otherIss := signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "",
		jwt.MapClaims{"sub": "ann", "aud": "admin", "iss": "https://other.example.com", "exp": exp})

	if resp := g.get("/ops/x", "Authorization", "Bearer "+admin); string(resp.Body()) != "jwt:ann:owner" {
		t.Errorf("ops route: %d %q", resp.StatusCode(), resp.Body())
	}
	unauthorized(t, g.get("/ops/x", "Authorization", "Bearer "+api), `Bearer error="invalid_token"`)
	unauthorized(t, g.get("/ops/x", "Authorization", "Bearer "+otherIss), `Bearer error="invalid_token"`)
	unauthorized(t, g.get("/ops/x"), "Bearer")

	e := decodeEcho(t, g.get("/ci", "X-API-Key", "ci-key-0123456789abcdef"))
	if _, ok := e.Headers["X-Api-Key"]; ok {
		t.Error("the upstream got the key the middleware accepted (strip_credentials is inherited)")
	}
	unauthorized(t, g.get("/ci", "X-API-Key", "nope"), "")

	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:pw-of-bob"))
	if resp := g.get("/staff", "Authorization", basic); string(resp.Body()) != "bob" {
		t.Errorf("staff route: %d %q", resp.StatusCode(), resp.Body())
	}
	unauthorized(t, g.get("/staff"), `Basic realm="staff", charset="UTF-8"`)
	if resp := g.get("/open"); string(resp.Body()) != "nil" {
		t.Errorf("open route req.Auth = %q", resp.Body())
	}
	eventually(t, 2*time.Second, "access lines", func() bool { return len(g.accessLines()) >= 9 })
	if l := g.accessLines()[0]; l["consumer"] != "ann" || l["auth_method"] != "jwt" {
		t.Errorf("access line: %v", l)
	}
}

// TestLuaAuthOptionErrors reports bad middleware options as load errors
// at the line of the call.
func TestLuaAuthOptionErrors(t *testing.T) {
	cfg := loadConfig(t, `
tenants:
  - name: app
    path_prefix: /
    script: bad.lua
`, "bad.lua", `local r = chi.NewRouter()
r:With(keystone.auth.jwt{secret = "`+accessSecret+`", algorithms = {"none"}}):Get("/a", function(w, req) end)
r:With(keystone.auth.jwt{audiance = "x"}):Get("/b", function(w, req) end)
r:With(keystone.auth.jwt{secret = "`+accessSecret+`", algorithms = {"HS256", "RS256"}}):Get("/c", function(w, req) end)
r:With(keystone.auth.basic{htpasswd_file = "../etc/passwd"}):Get("/d", function(w, req) end)
r:With(keystone.auth.api_key{keys = {{consumer = "x", key = "short"}}}):Get("/e", function(w, req) end)
return r
`)
	err := Check(cfg)
	if err == nil {
		t.Fatal("loads, want errors")
	}
	for _, want := range []string{
		`bad.lua:2: keystone.auth.jwt: jwt.algorithms[0]: algorithm "none" is never accepted`,
		`bad.lua:3: keystone.auth.jwt: unknown option "audiance" (did you mean "audience"?)`,
		`bad.lua:4: keystone.auth.jwt: jwt.algorithms: a secret verifies only HS256, HS384 and HS512`,
		`bad.lua:5: keystone.auth.basic: htpasswd_file: expected a path inside the scripts directory, got "../etc/passwd"`,
		`bad.lua:6: keystone.auth.api_key: api_keys.keys[0].key: expected a key of at least 16 characters, got 5`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

// TestIPRulesForAnIPv6Peer serves on [::1] with no trusted proxy: the
// IPv6 TCP peer is the client, allowed or denied by an IPv6 rule whatever
// X-Forwarded-For claims.
func TestIPRulesForAnIPv6Peer(t *testing.T) {
	up := startEcho(t, "up")
	for _, c := range []struct {
		rules  string
		status int
	}{
		{`{allow: ["::1/128"]}`, 200},
		{`{allow: ["2001:db8::/32", 10.0.0.0/8]}`, 403},
		{`{deny: ["::1"]}`, 403},
	} {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Fatalf("IPv6 loopback: %v", err)
		}
		g := startGatewayListener(t, loadConfig(t, oneTenant("api", "", yamlf("ip: %s", c.rules), up.url())), Options{}, ln)
		status := g.get("/x", "X-Forwarded-For", "2001:db8::1").StatusCode()
		if status != c.status {
			t.Errorf("ip %s from [::1]: status %d, want %d", c.rules, status, c.status)
		}
	}
}

// TestJWTFromCookieAndQuery reads tokens from a cookie and from a query
// parameter; strip_credentials removes just that cookie or parameter.
func TestJWTFromCookieAndQuery(t *testing.T) {
	up := startEcho(t, "up")
	g := startGateway(t, yamlf(`
tenants:
  - name: cookie
    path_prefix: /c
    upstreams: [{url: %[1]q}]
    auth:
      jwt: {secret: %[2]s, algorithms: [HS256], cookie: session}
      strip_credentials: true
  - name: query
    path_prefix: /q
    upstreams: [{url: %[1]q}]
    auth:
      jwt: {secret: %[2]s, algorithms: [HS256], query: access_token}
      strip_credentials: true
`, up.url(), accessSecret))
	tok := signToken(t, jwt.SigningMethodHS256, []byte(accessSecret), "", jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()})
	e := decodeEcho(t, g.get("/c/x", "Cookie", "theme=dark; session="+tok+"; lang=en"))
	if got := strings.Join(e.Headers["Cookie"], "; "); strings.Contains(got, "session") || !strings.Contains(got, "theme=dark") || !strings.Contains(got, "lang=en") {
		t.Errorf("upstream Cookie %q, want the other cookies without the session", got)
	}
	unauthorized(t, g.get("/c/x", "Cookie", "session=nope"), `Bearer error="invalid_token"`)
	unauthorized(t, g.get("/c/x", "Authorization", "Bearer "+tok), "Bearer")

	e = decodeEcho(t, g.get("/q/x?access_token="+tok+"&page=2"))
	if e.URI != "/q/x?page=2" {
		t.Errorf("upstream URI %q, want the token removed", e.URI)
	}
	unauthorized(t, g.get("/q/x?access_token=x.y.z"), `Bearer error="invalid_token"`)
}

// TestJWKSDownKeepsTheLastGoodKeys refreshes every second from an identity
// provider that goes down: tokens keep verifying with the keys it served
// before, and the failures are logged.
func TestJWKSDownKeepsTheLastGoodKeys(t *testing.T) {
	accessKeys(t)
	up := startEcho(t, "up")
	idp := serveJWKS(t, map[string]any{"ec-1": &accessEC.PublicKey})
	g := startGateway(t, oneTenant("api", "", yamlf(`
auth:
  jwt: {jwks_url: %s, algorithms: [ES256], jwks_refresh: 1s}
`, idp.url), up.url()))
	exp := time.Now().Add(time.Hour).Unix()
	tok := func(n int) string {
		return signToken(t, jwt.SigningMethodES256, accessEC, "ec-1", jwt.MapClaims{"sub": "u", "n": n, "exp": exp})
	}
	if resp := g.get("/x", "Authorization", "Bearer "+tok(0)); resp.StatusCode() != 200 {
		t.Fatalf("status %d", resp.StatusCode())
	}
	idp.down.Store(true)
	before := idp.requests.Load()
	eventually(t, 10*time.Second, "two failed refreshes", func() bool { return idp.requests.Load() >= before+2 })
	// A token never seen before: verified now, with the kept keys.
	if resp := g.get("/x", "Authorization", "Bearer "+tok(1)); resp.StatusCode() != 200 {
		t.Errorf("with the JWKS down: status %d, want the last good keys used", resp.StatusCode())
	}
	if !strings.Contains(g.logs.String(), "jwks fetch failed; keeping the last good keys") {
		t.Error("the failed fetches were not logged")
	}
}
