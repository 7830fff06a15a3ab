//go:build !race

package server

import "testing"

func TestNegotiateDoesNotAllocate(t *testing.T) {
	ae := []byte("gzip;q=0.8, deflate, br;q=1.0, zstd;q=0.9, *;q=0.1, identity;q=0.5")
	offered := []coding{codingBr, codingZstd, codingGzip}
	if allocs := testing.AllocsPerRun(1000, func() { negotiate(ae, offered) }); allocs != 0 {
		t.Errorf("negotiate: %v allocs/op, want 0", allocs)
	}
}

// TestProxyHandlerCompressionOnDoesNotAllocate is the proxy path with
// compression on and an answer under min_size: the stage's checks, Vary
// and negotiation cost no allocation.
func TestProxyHandlerCompressionOnDoesNotAllocate(t *testing.T) {
	s := newBenchServer(t, `
logging: {access_log: false, level: error}
server: {compression: {enabled: true, types: [text/plain]}}
tenants:
  - {name: api, domains: [api.example.com], path_prefix: /api, strip_prefix: true, upstreams: [{url: "http://127.0.0.1:2"}]}
`)
	ctx, tmpl := newBenchCtx()
	tmpl.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	allocs := handleAllocs(s, ctx, tmpl)
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Vary")) != "Accept-Encoding" {
		t.Fatalf("status %d, Vary %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Vary"))
	}
	if allocs != 0 {
		t.Errorf("proxy handler with compression on: %v allocs/op, want 0", allocs)
	}
}
