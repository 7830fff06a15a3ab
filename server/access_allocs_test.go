//go:build !race

package server

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestProxyHandlerWithAuthDoesNotAllocate holds the proxy path with a
// tenant's access control on (ip rules, a cached JWT with a claim header,
// CORS, header rules) to 0 allocs/op, as with auth off.
func TestProxyHandlerWithAuthDoesNotAllocate(t *testing.T) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "user-1",
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(accessSecret))
	if err != nil {
		t.Fatal(err)
	}
	s := newBenchServer(t, `
logging: {access_log: false, level: error}
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://127.0.0.1:2"}]
    ip: {allow: [127.0.0.0/8]}
    auth:
      jwt: {secret: `+accessSecret+`, algorithms: [HS256], claims_to_headers: {sub: X-User-Id}}
      strip_credentials: true
    cors: {allow_origins: ["https://*.example.com"]}
    headers:
      request: {set: {X-Env: prod}}
      response: {remove: [Server]}
`)
	ctx, tmpl := newBenchCtx()
	tmpl.Header.Set("Authorization", "Bearer "+tok)
	tmpl.Header.Set("Origin", "https://app.example.com")
	allocs := handleAllocs(s, ctx, tmpl)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if allocs != 0 {
		t.Errorf("proxy handler with access control: %v allocs/op, want 0", allocs)
	}
}
