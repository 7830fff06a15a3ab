package server

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHTTPSUpstream proxies plain-HTTP clients to an https:// upstream, and
// to an http:// one beside it in the same pool: before, fasthttp refused
// every request to the https one (its URI said http), and clients got 502.
func TestHTTPSUpstream(t *testing.T) {
	t.Parallel()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"tls","uri":"` + r.RequestURI + `"}`))
	}))
	t.Cleanup(ts.Close)
	plain := startEcho(t, "plain")
	g := startGateway(t, yamlf(`
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %q}, {url: %q}]
`, ts.URL, plain.url()))
	// Trust the test server's certificate. The snapshot is stored again
	// so that requests (which load it) see the change.
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	snap := g.srv.snap.Load()
	for _, up := range snap.tenants[0].pool.ups {
		if up.TLS {
			up.client.TLSConfig.RootCAs = roots
		}
	}
	g.srv.snap.Store(snap)

	c := newClient(t, g)
	seen := map[string]int{}
	for i := range 6 {
		r := c.get("/x?i=1")
		if from := r.from(); from == "" {
			t.Fatalf("GET %d: %v", i, r)
		} else {
			seen[from]++
		}
	}
	if seen["tls"] != 3 || seen["plain"] != 3 {
		t.Errorf("answers by upstream: %v, want 3 each", seen)
	}
}
