package server

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
	g := startGateway(t, oneTenant("api", "", "", ts.URL, plain.url()))
	trustUpstreams(g, ts.Certificate())

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

// trustUpstreams makes the gateway's https:// upstreams trust cert, before
// any request: the snapshot is stored again so that requests, which load
// it, see the change.
func trustUpstreams(g *gateway, cert *x509.Certificate) {
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	snap := g.srv.snap.Load()
	for _, t := range snap.tenants {
		for _, up := range t.pool.ups {
			if up.TLS {
				up.client.TLSConfig.RootCAs = roots
			}
		}
	}
	g.srv.snap.Store(snap)
}

// TestClosedKeepAliveConnectionsOverTLS is the closed keep-alive connection
// case over TLS: an https:// upstream closing each connection after its
// answer (with a TLS close_notify). Every GET succeeds, sequential and
// concurrent; a POST sent after the upstream closed the previous
// connection goes on a new one; the upstream reads each request once.
func TestClosedKeepAliveConnectionsOverTLS(t *testing.T) {
	t.Parallel()
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	up := startClosingUpstreamTLS(t, 1, true, "", ts.TLS)
	g := startGateway(t, oneTenant("api", "logging: {access_log: false}", "", "https://"+up.addr))
	trustUpstreams(g, ts.Certificate())
	c := newClient(t, g)
	// Fewer than over plain TCP: every request costs a TLS handshake.
	seq, conc, ex := churnLoad(c, 100, "GET", nil)
	t.Logf("failures: %d of 100 sequential, %d of 100 concurrent", seq, conc)
	if seq+conc != 0 {
		t.Fatalf("%d of 200 GETs failed: %s", seq+conc, strings.Join(ex, "; "))
	}
	// Each POST waits for the upstream to close the connection of the one
	// before; that count must not include the GETs' connections still
	// closing, or a POST goes on a connection about to close.
	eventually(t, 5*time.Second, "the upstream to close the GETs' connections", func() bool { return up.closed.Load() == up.conns.Load() })
	before := up.closed.Load()
	for i := range 10 {
		if r := c.do("POST", "/x", []byte("payload")); r.err != nil || r.status != 200 {
			t.Fatalf("POST %d: %v", i, r)
		}
		eventually(t, 5*time.Second, "the upstream to close the connection", func() bool { return up.closed.Load() == before+int64(i+1) })
	}
	if n := up.requests.Load(); n != 210 {
		t.Errorf("the upstream read %d requests, want each of the 210 exactly once", n)
	}
}
