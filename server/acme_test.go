package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// loopbackDNS answers every A query with 127.0.0.1 and every other query
// with no records, over TCP (pebble's validation authority asks its
// -dnsserver over TCP): the tenant's domain resolves to the gateway. It
// returns its address.
func loopbackDNS(t *testing.T) string {
	t.Helper()
	return serveConns(t, func(c net.Conn) {
		for {
			// RFC 1035 4.2.2: a two-byte length, then the message.
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return
			}
			msg := make([]byte, int(l[0])<<8|int(l[1]))
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			out := dnsAnswer(msg)
			if out == nil {
				return
			}
			if _, err := c.Write(append([]byte{byte(len(out) >> 8), byte(len(out))}, out...)); err != nil {
				return
			}
		}
	})
}

// dnsAnswer answers one query: A 127.0.0.1, or no records.
func dnsAnswer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	if q.Type == dnsmessage.TypeA {
		_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
			dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}

// freePort returns a loopback port nothing listens on (for pebble's own
// listeners, which it binds itself).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPebble runs Let's Encrypt's pebble ACME server on loopback, its
// HTTPS certificate issued by ca, validating challenges for real against
// tlsPort and httpPort on the addresses dns gives. Its certificates are
// valid for validity. It returns the directory URL and the management
// address (for the issuing root).
func startPebble(t *testing.T, ca *testCA, dns string, httpPort, tlsPort int, validity time.Duration) (dir, mgmt string) {
	t.Helper()
	pebble := externalTool(t, "pebble")
	cert, key := ca.issue("pebble", false, "localhost", "127.0.0.1")
	listen, mgmtPort := freePort(t), freePort(t)
	conf := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`{"pebble": {
  "listenAddress": "127.0.0.1:%d", "managementListenAddress": "127.0.0.1:%d",
  "certificate": %q, "privateKey": %q, "httpPort": %d, "tlsPort": %d,
  "ocspResponderURL": "", "externalAccountBindingRequired": false,
  "profiles": {"default": {"description": "test", "validityPeriod": %d}}}}`,
		listen, mgmtPort, cert, key, httpPort, tlsPort, int(validity.Seconds()))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pebble, "-config", conf, "-dnsserver", dns)
	// Real validation, no artificial sleeps or nonce rejections.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble:\n%s", logs.String())
		}
	})
	dir = fmt.Sprintf("https://127.0.0.1:%d/dir", listen)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	eventually(t, 20*time.Second, "pebble to serve its directory", func() bool {
		resp, err := c.Get(dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return dir, fmt.Sprintf("127.0.0.1:%d", mgmtPort)
}

// TestACMEWithPebble obtains a certificate for a tenant's domain from a
// real ACME server (pebble, validating the TLS-ALPN-01 challenge against
// the gateway's TLS listener through a test DNS responder), serves it,
// answers HTTP-01 challenge paths on the plain listener, and renews it.
func TestACMEWithPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pebble")
	}
	ca := newTestCA(t)
	up := startEcho(t, "up")
	defCert, defKey := ca.issue("default", false, "localhost")
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Certificates valid 60s, renewed 50s (less up to 5s of jitter)
	// before they expire: the first is renewed 10 to 15s after it was
	// issued.
	// autocert tries TLS-ALPN-01 first and pebble validates it; HTTP-01
	// is not reached, so pebble's HTTP port is a closed one.
	dir, mgmt := startPebble(t, ca, loopbackDNS(t), freePort(t),
		tlsLn.Addr().(*net.TCPAddr).Port, time.Minute)
	storage := t.TempDir()
	cfg := loadConfig(t, yamlf(`
server:
  tls:
    cert_file: %q
    key_file: %q
    redirect_http: true
    acme: {enabled: true, agreed: true, email: ops@example.com, ca: %q, ca_file: %q, storage: %q, renew_before: 50s}
tenants:
  - name: shop
    domains: [shop.example.com]
    upstreams: [{url: %q}]
`, defCert, defKey, dir, ca.file, storage, up.url()))
	g := startGatewayConfig(t, cfg)
	go g.srv.ServeTLS(tlsLn) //nolint:errcheck
	addr := tlsLn.Addr().String()

	roots := pebbleRoots(t, ca, mgmt)

	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "shop.example.com"})
		if err != nil {
			t.Fatalf("handshake for shop.example.com: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial() // the first handshake obtains the certificate
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	r, err := c.Get("https://shop.example.com/items")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(body), `"id":"up"`) {
		t.Errorf("GET over the ACME certificate: %d %q", r.StatusCode, body)
	}
	// The plain listener answers challenge paths itself (an unknown
	// token is 404), not with the redirect or the tenant.
	pr := g.do("GET", "shop.example.com", "/.well-known/acme-challenge/unknown-token", nil)
	if pr.StatusCode() != 404 || up.requests.Load() != 1 {
		t.Errorf("HTTP-01 path on the plain listener: %d, upstream requests %d", pr.StatusCode(), up.requests.Load())
	}
	// A domain that is not a tenant's gets the default certificate.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	eventually(t, 45*time.Second, "the certificate to be renewed", func() bool { return serial() != first })
	entries, _ := os.ReadDir(storage)
	found := false
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(storage, e.Name())); err == nil && strings.Contains(e.Name(), "shop.example.com") {
			found = bytesHasPEM(b)
		}
	}
	if !found {
		t.Errorf("no certificate for shop.example.com stored in %s: %v", storage, entries)
	}
}

func bytesHasPEM(b []byte) bool {
	blk, _ := pem.Decode(b)
	return blk != nil
}

// pebbleRoots fetches the root pebble issues under, to verify what the
// gateway serves.
func pebbleRoots(t *testing.T, ca *testCA, mgmt string) *x509.CertPool {
	t.Helper()
	mc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}
	resp, err := mc.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble root: %q", rootPEM)
	}
	return roots
}

// TestACMEHTTP01WithPebble makes pebble's TLS-ALPN-01 validation fail (its
// TLS port is a closed one) so that the certificate is obtained by HTTP-01,
// validated for real on the gateway's plain listener, whose redirect_http
// leaves challenge paths alone.
func TestACMEHTTP01WithPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pebble")
	}
	ca := newTestCA(t)
	up := startEcho(t, "up")
	defCert, defKey := ca.issue("default", false, "localhost")
	// pebble needs the plain port before the gateway exists: a relay on
	// a port of our own forwards to the gateway's plain listener.
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	plainAddr := make(chan string, 1)
	go func() {
		to := <-plainAddr
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	dir, mgmt := startPebble(t, ca, loopbackDNS(t), relay.Addr().(*net.TCPAddr).Port, freePort(t), time.Hour)
	cfg := loadConfig(t, yamlf(`
server:
  tls:
    cert_file: %q
    key_file: %q
    redirect_http: true
    acme: {enabled: true, agreed: true, ca: %q, ca_file: %q, storage: %q}
tenants:
  - name: shop
    domains: [shop.example.com]
    upstreams: [{url: %q}]
`, defCert, defKey, dir, ca.file, t.TempDir(), up.url()))
	g := startGatewayConfig(t, cfg)
	plainAddr <- g.addr
	addr := g.serveTLS()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pebbleRoots(t, ca, mgmt), ServerName: "shop.example.com"})
	if err != nil {
		t.Fatalf("handshake for shop.example.com: %v", err)
	}
	names := conn.ConnectionState().PeerCertificates[0].DNSNames
	conn.Close()
	if len(names) != 1 || names[0] != "shop.example.com" {
		t.Errorf("certificate for %v, want [shop.example.com]", names)
	}
	challenged := false
	for _, l := range g.accessLines() {
		if p, _ := l["path"].(string); strings.HasPrefix(p, "/.well-known/acme-challenge/") && l["status"] == float64(200) {
			challenged = true
		}
	}
	if !challenged {
		t.Errorf("no HTTP-01 challenge answered 200 on the plain listener")
	}
	if up.requests.Load() != 0 {
		t.Errorf("the challenge reached the upstream")
	}
}
