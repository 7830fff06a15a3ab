//go:build !race

package server

import "testing"

// TestPlainPathWithTLSConfiguredDoesNotAllocate holds the plain listener's
// proxy path at 0 allocs/op when server.tls is configured too (with
// client_cert_headers, whose names are deleted from every request, and
// HSTS, checked on every answer).
func TestPlainPathWithTLSConfiguredDoesNotAllocate(t *testing.T) {
	ca := newTestCA(t)
	cert, key := ca.issue("default", false, "api.example.com")
	s := newBenchServer(t, yamlf(`
server:
  tls: {cert_file: %q, key_file: %q, client_ca_file: %q, client_cert_headers: true, hsts: {max_age: 1h}}
logging: {access_log: false, level: error}
tenants:
  - name: api
    domains: [api.example.com]
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://127.0.0.1:2"}]
`, cert, key, ca.file))
	ctx, tmpl := newBenchCtx()
	allocs := handleAllocs(s, ctx, tmpl)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if allocs != 0 {
		t.Errorf("plain proxy path with server.tls: %v allocs/op, want 0", allocs)
	}
}
