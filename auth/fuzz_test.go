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
