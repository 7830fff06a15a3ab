package auth

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keystone-gateway/keystone/config"
)

const hsSecret = "0123456789abcdef0123456789abcdef"

func newTestJWT(t *testing.T, c config.JWT, clock *testClock) *JWT {
	t.Helper()
	if c.Header == "" && c.Cookie == "" && c.Query == "" {
		c.Header = "Authorization"
	}
	j, err := NewJWT(c, Options{Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Stop)
	return j
}

// TestJWTVerify covers the token checks one by one with real keys.
func TestJWTVerify(t *testing.T) {
	testKeys(t)
	clock := newTestClock()
	now := clock.Now()
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "user-1", "iss": "https://idp.example.com", "aud": "api",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := valid()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hs := newTestJWT(t, config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}, Issuer: "https://idp.example.com",
		Audience: []string{"api"}, RequiredClaims: []string{"sub"}, Leeway: config.Duration(30 * time.Second)}, clock)
	rs := newTestJWT(t, config.JWT{PublicKey: &rsaKey.PublicKey, Algorithms: []string{"RS256"}}, clock)
	es := newTestJWT(t, config.JWT{PublicKey: &ecKey.PublicKey, Algorithms: []string{"ES256"}}, clock)

	hsTok := sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", valid())
	parts := strings.Split(hsTok, ".")
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", valid())
	// Key confusion: HS256 with the RSA public key (PEM bytes or modulus)
	// as the HMAC secret, sent to a verifier holding that public key.
	confused := sign(t, jwt.SigningMethodHS256, rsaKey.PublicKey.N.Bytes(), "", valid())

	for _, c := range []struct {
		name string
		j    *JWT
		tok  string
		ok   bool
	}{
		{"a valid HS256 token is accepted", hs, hsTok, true},
		{"a valid RS256 token is accepted", rs, sign(t, jwt.SigningMethodRS256, rsaKey, "", valid()), true},
		{"a valid ES256 token is accepted", es, sign(t, jwt.SigningMethodES256, ecKey, "", valid()), true},
		{"an expired token is refused", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("exp", now.Add(-time.Minute).Unix())), false},
		{"a token expired within the leeway is accepted", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("exp", now.Add(-10*time.Second).Unix())), true},
		{"a token not valid yet is refused", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("nbf", now.Add(time.Hour).Unix())), false},
		{"a wrong issuer is refused", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("iss", "https://evil.example.com")), false},
		{"a wrong audience is refused", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("aud", "other")), false},
		{"a missing audience is refused", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("aud", nil)), false},
		{"a missing required claim is refused", hs, sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", with("sub", nil)), false},
		{"alg none is refused", hs, noneTok, false},
		{"HS256 signed with the RSA public key is refused", rs, confused, false},
		{"an RS256 token is refused by an HS256 verifier", hs, sign(t, jwt.SigningMethodRS256, rsaKey, "", valid()), false},
		{"a token signed by another key is refused", rs, sign(t, jwt.SigningMethodRS256, rsaKey2, "", valid()), false},
		{"a bad signature is refused", hs, parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])), false},
		{"a tampered payload is refused", hs, parts[0] + "." + b64u([]byte(`{"sub":"admin","exp":9999999999}`)) + "." + parts[2], false},
		{"malformed base64 is refused", hs, parts[0] + ".!!!." + parts[2], false},
		{"two segments are refused", hs, parts[0] + "." + parts[1], false},
		{"garbage is refused", hs, "not-a-token", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := c.j.Verify([]byte(c.tok))
			if c.ok != (err == nil) {
				t.Fatalf("Verify: err = %v, want ok=%v", err, c.ok)
			}
			if c.ok && (id.Method != MethodJWT || id.Consumer != "user-1") {
				t.Errorf("identity %+v", id)
			}
		})
	}
}

// TestJWTCacheHoldsUntilExp checks that a verified token is served from
// the cache and stops being accepted at its exp.
func TestJWTCacheHoldsUntilExp(t *testing.T) {
	testKeys(t)
	clock := newTestClock()
	j := newTestJWT(t, config.JWT{PublicKey: &rsaKey.PublicKey, Algorithms: []string{"RS256"},
		ClaimsToHeaders: map[string]string{"sub": "x-user-id", "admin": "X-Admin"}}, clock)
	tok := []byte(sign(t, jwt.SigningMethodRS256, rsaKey, "", jwt.MapClaims{"sub": "u", "admin": true,
		"exp": clock.Now().Add(time.Minute).Unix()}))
	id1, err := j.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := j.Verify(tok)
	if err != nil || id2 != id1 {
		t.Fatalf("second Verify: %v, same identity %v; want the cached one", err, id2 == id1)
	}
	if got := len(id1.headers); got != 2 || string(id1.headers[0].key) != "X-Admin" || string(id1.headers[0].value) != "true" ||
		string(id1.headers[1].key) != "X-User-Id" || string(id1.headers[1].value) != "u" {
		t.Errorf("claim headers %q", id1.headers)
	}
	clock.Advance(61 * time.Second)
	if _, err := j.Verify(tok); err == nil {
		t.Fatal("an expired token is still accepted from the cache")
	}
}

// TestJWTCacheIsBounded fills the cache past its bound.
func TestJWTCacheIsBounded(t *testing.T) {
	clock := newTestClock()
	j := newTestJWT(t, config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}}, clock)
	for i := range maxCachedTokens + 500 {
		tok := sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", jwt.MapClaims{"sub": "u", "n": i,
			"exp": clock.Now().Add(time.Hour).Unix()})
		if _, err := j.Verify([]byte(tok)); err != nil {
			t.Fatal(err)
		}
	}
	if n := j.cache.len(); n > maxCachedTokens {
		t.Errorf("cache holds %d tokens, bound %d", n, maxCachedTokens)
	}
}

// TestJWKSRotation serves ES256 and RS256 keys from a real JWKS endpoint
// and rotates to a new kid: the first token with the new kid makes one
// refetch and is accepted; a random kid right after makes none.
func TestJWKSRotation(t *testing.T) {
	testKeys(t)
	clock := newTestClock()
	srv := startJWKS(t, map[string]any{"rsa-1": &rsaKey.PublicKey, "ec-1": &ecKey.PublicKey})
	j := newTestJWT(t, config.JWT{JWKSURL: srv.url, JWKSRefresh: config.Duration(time.Hour),
		Algorithms: []string{"RS256", "ES256"}}, clock)
	j.Start()
	claims := func() jwt.MapClaims { return jwt.MapClaims{"sub": "u", "exp": clock.Now().Add(time.Hour).Unix()} }
	for _, tok := range []string{
		sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", claims()),
		sign(t, jwt.SigningMethodES256, ecKey, "ec-1", claims()),
	} {
		if _, err := j.Verify([]byte(tok)); err != nil {
			t.Fatalf("token from the JWKS refused: %v", err)
		}
	}
	// An ES256 token naming the RSA key's kid must not verify.
	if _, err := j.Verify([]byte(sign(t, jwt.SigningMethodES256, ecKey, "rsa-1", claims()))); err == nil {
		t.Fatal("ES256 token accepted with an RSA kid")
	}
	before := srv.requests.Load()
	srv.setKeys(map[string]any{"rsa-1": &rsaKey.PublicKey, "rsa-2": &rsaKey2.PublicKey})
	if _, err := j.Verify([]byte(sign(t, jwt.SigningMethodRS256, rsaKey2, "rsa-2", claims()))); err != nil {
		t.Fatalf("token with the rotated kid refused: %v", err)
	}
	if got := srv.requests.Load() - before; got != 1 {
		t.Errorf("rotation made %d fetches, want 1", got)
	}
	if _, err := j.Verify([]byte(sign(t, jwt.SigningMethodRS256, rsaKey2, "random-kid", claims()))); err == nil {
		t.Fatal("unknown kid accepted")
	}
	if got := srv.requests.Load() - before; got != 1 {
		t.Errorf("an unknown kid within %s made a fetch (%d in all)", minRefetch, got)
	}
	clock.Advance(minRefetch)
	j.Verify([]byte(sign(t, jwt.SigningMethodRS256, rsaKey2, "random-kid-2", claims())))
	if got := srv.requests.Load() - before; got != 2 {
		t.Errorf("an unknown kid after %s made %d fetches in all, want 2", minRefetch, got)
	}
}

// TestJWKSUnreachableKeepsLastGoodKeys makes the endpoint fail and then
// disappear: tokens keep verifying with the keys fetched before.
func TestJWKSUnreachableKeepsLastGoodKeys(t *testing.T) {
	testKeys(t)
	clock := newTestClock()
	srv := startJWKS(t, map[string]any{"ec-1": &ecKey.PublicKey})
	j := newTestJWT(t, config.JWT{JWKSURL: srv.url, JWKSRefresh: config.Duration(time.Hour),
		Algorithms: []string{"ES256"}}, clock)
	j.Start()
	tok := func() []byte {
		return []byte(sign(t, jwt.SigningMethodES256, ecKey, "ec-1", jwt.MapClaims{"sub": "u", "n": time.Now().UnixNano()}))
	}
	if _, err := j.Verify(tok()); err != nil {
		t.Fatal(err)
	}
	srv.setFailing(true)
	j.jwks.fetchAndSignal()
	srv.srv.Close()
	j.jwks.fetchAndSignal()
	if j.jwks.fetches.Load() < 3 {
		t.Fatalf("fetches = %d, want the failing ones made", j.jwks.fetches.Load())
	}
	if _, err := j.Verify(tok()); err != nil {
		t.Fatalf("after failed fetches: %v", err)
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	testKeys(t)
	doc := `{"keys":[
	 {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
	 {"kty":"RSA","kid":"weak","n":"AQAB","e":"AQAB"},
	 {"kty":"EC","kid":"off-curve","crv":"P-256","x":"` + b64u(make([]byte, 32)) + `","y":"` + b64u(make([]byte, 32)) + `"},
	 {"kty":"oct","kid":"secret","k":"c2VjcmV0"}
	]}`
	if _, err := parseJWKS([]byte(doc)); err == nil {
		t.Fatal("a JWKS of unusable keys parsed")
	}
	mislabeled := `{"keys":[{"kty":"RSA","kid":"r","alg":"ES256","n":"` + b64u(rsaKey.N.Bytes()) + `","e":"AQAB"}]}`
	if _, err := parseJWKS([]byte(mislabeled)); err == nil {
		t.Error("an RSA key labelled ES256 was kept")
	}
	for _, bad := range []string{"", "null", "[]", `{"keys":"x"}`, `{"keys":[{"kty":"RSA"}]}`} {
		if _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestJWKSStopEndsAFetchInFlight stops a key set while its endpoint hangs:
// Stop returns at once rather than after the fetch timeout.
func TestJWKSStopEndsAFetchInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // never answered
		}
	}()
	s := NewJWKS("http://"+ln.Addr().String()+"/jwks", time.Hour, Options{})
	s.Start()
	c := <-accepted
	defer c.Close()
	start := time.Now()
	s.Stop()
	if d := time.Since(start); d >= fetchTimeout/2 {
		t.Errorf("Stop took %s with a fetch hanging: it waited for the fetch timeout (%s) instead of cancelling", d, fetchTimeout)
	}
}

// TestJWTCacheUnderConcurrency verifies 64 distinct tokens from 16
// goroutines at once against a cache bounded below their number: every
// valid token is accepted, every forged one refused, and the bound holds.
func TestJWTCacheUnderConcurrency(t *testing.T) {
	clock := newTestClock()
	j := newTestJWT(t, config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}}, clock)
	j.cache = newCache[uint64](32)
	var good, bad [][]byte
	for i := range 64 {
		c := jwt.MapClaims{"sub": "u", "n": i, "exp": clock.Now().Add(time.Hour).Unix()}
		good = append(good, []byte(sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", c)))
		bad = append(bad, []byte(sign(t, jwt.SigningMethodHS256, []byte(hsSecret+"!"), "", c)))
	}
	var wg sync.WaitGroup
	var accepted, refused atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				k := (g*31 + i) % 64
				if _, err := j.Verify(good[k]); err == nil {
					accepted.Add(1)
				}
				if _, err := j.Verify(bad[k]); err != nil {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != 16*500 || refused.Load() != 16*500 {
		t.Errorf("accepted %d valid and refused %d forged of %d each", accepted.Load(), refused.Load(), 16*500)
	}
	if n := j.cache.len(); n > 32 {
		t.Errorf("cache holds %d tokens, bound 32", n)
	}
}

func TestClaimString(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   any
		want string
		ok   bool
	}{
		{"user-1", "user-1", true},
		{true, "true", true},
		{float64(42), "42", true},
		{1.5, "1.5", true},
		{float64(1e20), "100000000000000000000", true},
		{[]any{"a", "b"}, `["a","b"]`, true},
		{map[string]any{"k": "v"}, `{"k":"v"}`, true},
		{nil, "", false},
		{"a\r\nX-Injected: 1", "", false},
		{"tab\tok", "tab\tok", true},
	} {
		got, ok := claimString(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("claimString(%#v) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestKeySetFind covers tokens without a kid and keys restricted by alg.
func TestKeySetFind(t *testing.T) {
	testKeys(t)
	one := &keySet{byKid: map[string]jwk{}, all: []jwk{{kid: "r", key: &rsaKey.PublicKey}}}
	if _, ok := one.find("", "RS256"); !ok {
		t.Error("a kid-less token was refused by a set of one fitting key")
	}
	if _, ok := one.find("", "ES256"); ok {
		t.Error("a kid-less ES256 token was given an RSA key")
	}
	two := &keySet{byKid: map[string]jwk{}, all: []jwk{{kid: "a", key: &rsaKey.PublicKey}, {kid: "b", key: &rsaKey2.PublicKey}}}
	if _, ok := two.find("", "RS256"); ok {
		t.Error("a kid-less token was given one of two keys")
	}
	ps := jwk{alg: "PS256", key: &rsaKey.PublicKey}
	if ps.fits("RS256") || !ps.fits("PS256") {
		t.Error("a key's alg does not restrict it")
	}
	ec := jwk{key: &ecKey.PublicKey}
	if !ec.fits("ES256") || ec.fits("ES384") || ec.fits("RS256") {
		t.Error("a P-256 key fits the wrong algorithms")
	}
}

func TestChallenge(t *testing.T) {
	t.Parallel()
	a, err := NewAuthenticator(config.Auth{Mode: "any",
		JWT:   &config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}, Header: "Authorization"},
		Basic: &config.Basic{Realm: "staff", Users: []config.HtpasswdUser{{Name: "bob", Hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for res, want := range map[Result]string{
		Missing:      `Bearer | Basic realm="staff", charset="UTF-8"`,
		Invalid:      `Bearer | Basic realm="staff", charset="UTF-8"`,
		InvalidToken: `Bearer error="invalid_token" | Basic realm="staff", charset="UTF-8"`,
	} {
		ctx := newCtx("GET", "/")
		a.Challenge(&ctx.Response.Header, res)
		var got []string
		for _, v := range ctx.Response.Header.PeekAll("WWW-Authenticate") {
			got = append(got, string(v))
		}
		if strings.Join(got, " | ") != want {
			t.Errorf("%s: %q, want %q", res, got, want)
		}
	}
	// A malformed basic credential counts as presented and refused.
	if _, res := a.Authenticate(newCtx("GET", "/", "Authorization", "Basic !!!")); res != Invalid {
		t.Errorf("malformed basic: %s, want invalid", res)
	}
}
