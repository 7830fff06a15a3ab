package auth

import (
	"bytes"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// FuzzCredentials feeds hostile Authorization values, tokens and origins
// to the parsers of untrusted input: none may panic, and nothing but a
// well-formed credential signed with the secret may be accepted.
func FuzzCredentials(f *testing.F) {
	for _, s := range []string{
		"", "Bearer ", "bearer x", "Basic ", "Basic Og==", "Basic YWxpY2U6czNjcmV0", "BASIC !!!!",
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "eyJhbGciOiJIUzI1NiJ9.e30.", "a.b.c", "...", "....",
		"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.!!", "https://a.example.com", "https://.example.com",
		"https://a.b.example.com", "GET, ,PUT,,", "\x00\xff", "Bearer eyJ" + string(bytes.Repeat([]byte("A"), 4096)),
	} {
		f.Add([]byte(s))
	}
	clock := newTestClock()
	j, err := NewJWT(config.JWT{Secret: hsSecret, Algorithms: []string{"HS256"}, Header: "Authorization"}, Options{Clock: clock.Now})
	if err != nil {
		f.Fatal(err)
	}
	b := NewBasic(config.Basic{Realm: "r", Users: []config.HtpasswdUser{{Name: "bob", Hash: "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}}}, time.Now)
	c := NewCORS(config.CORS{AllowOrigins: []string{"https://*.example.com"}, AllowHeaders: []string{"X-A"}})
	f.Fuzz(func(t *testing.T, in []byte) {
		if tok, ok := bearer(in); ok {
			if id, err := j.Verify(tok); err == nil && id == nil {
				t.Fatal("nil identity without error")
			}
		}
		if id, err := j.Verify(in); err == nil {
			// Only a real HS256 signature gets here; the fuzzer cannot
			// forge one.
			t.Fatalf("token %q accepted", in)
		} else if id != nil {
			t.Fatal("identity with an error")
		}
		if id := b.Verify(in); id != nil && id.Consumer != "bob" {
			t.Fatalf("basic %q accepted as %q", in, id.Consumer)
		}
		c.OriginAllowed(in)
		for _, item := range splitList(in) {
			if len(item) == 0 || item[0] == ' ' || item[len(item)-1] == ' ' {
				t.Fatalf("splitList item %q not trimmed", item)
			}
			c.headerAllowed(item)
		}
		claimString(string(in))
	})
}

// FuzzJWKS feeds hostile JWKS documents to the parser: it must not panic,
// and a set it returns holds only keys that fit some algorithm.
func FuzzJWKS(f *testing.F) {
	for _, s := range []string{
		`{"keys":[]}`, `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		`{"keys":[{"kty":"RSA","e":"AQAB","n":"` + string(bytes.Repeat([]byte("A"), 400)) + `"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-521","x":"","y":""}],"x":1}`, `{"keys":null}`, `[`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ks, err := parseJWKS(in)
		if err != nil {
			return
		}
		for _, k := range ks.all {
			if k.alg != "" && !k.fits(k.alg) {
				t.Fatalf("key %q of type %T kept with alg %q", k.kid, k.key, k.alg)
			}
			if k.alg == "" && !k.fits("RS256") && !k.fits("ES256") && !k.fits("ES384") && !k.fits("ES512") && !k.fits("EdDSA") &&
				!k.fits("PS256") && !k.fits("RS512") {
				t.Fatalf("key %q of type %T fits no algorithm", k.kid, k.key)
			}
		}
	})
}
