package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a certificate authority made by a test; no key material is
// committed. Its certificates are written as PEM files in dir.
type testCA struct {
	t      testing.TB
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	file   string // the CA certificate, PEM
	serial atomic.Int64
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Keystone Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.serial.Store(1)
	ca.file = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue makes a certificate for names (DNS names or IP addresses), server
// or client, and returns its PEM certificate and key files, named name.
func (ca *testCA) issue(name string, client bool, names ...string) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Keystone Tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, name+".pem")
	keyFile = filepath.Join(ca.dir, name+"-key.pem")
	writePEM(ca.t, certFile+".tmp", "CERTIFICATE", der)
	writePEM(ca.t, keyFile+".tmp", "EC PRIVATE KEY", kder)
	// Renamed into place, as certificate tools do, so a watcher never
	// reads half a pair... of one file at least.
	for _, f := range []string{certFile, keyFile} {
		if err := os.Rename(f+".tmp", f); err != nil {
			ca.t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// pair loads a certificate for a client to present.
func (ca *testCA) pair(name string, names ...string) tls.Certificate {
	ca.t.Helper()
	cf, kf := ca.issue(name, true, names...)
	c, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		ca.t.Fatal(err)
	}
	return c
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// serveTLS starts the gateway's TLS listener on a loopback port and
// returns its address. The gateway's cleanup shuts it down.
func (g *gateway) serveTLS() string {
	g.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.t.Fatal(err)
	}
	go g.srv.ServeTLS(ln) //nolint:errcheck
	return ln.Addr().String()
}

// tlsClient returns an HTTP/1.1 client trusting ca that dials addr
// whatever the URL's host, sending serverName as SNI.
func tlsClient(ca *testCA, addr, serverName string, certs ...tls.Certificate) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.pool(), ServerName: serverName, Certificates: certs},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
			ForceAttemptHTTP2: false,
			TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		},
	}
}

// httpsGet sends GET url through c and returns status, headers and body.
func httpsGet(t *testing.T, c *http.Client, url string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// tlsTenants is a config with a default certificate for localhost and
// 127.0.0.1, tenant a with its own certificate, tenant w with a wildcard
// one, and tenant b on the default certificate.
func tlsTenants(t *testing.T, ca *testCA, extra string, a, b, w *echo) string {
	defCert, defKey := ca.issue("default", false, "localhost", "127.0.0.1", "b.example.com")
	aCert, aKey := ca.issue("a", false, "a.example.com")
	wCert, wKey := ca.issue("w", false, "*.w.example.com")
	return yamlf(`
server:
  tls:
    listen: "127.0.0.1:0"
    cert_file: %q
    key_file: %q
%s
tenants:
  - name: a
    domains: [a.example.com]
    tls: {cert_file: %q, key_file: %q}
    upstreams: [{url: %q}]
  - name: b
    domains: [b.example.com]
    upstreams: [{url: %q}]
  - name: w
    domains: ["*.w.example.com"]
    tls: {cert_file: %q, key_file: %q}
    upstreams: [{url: %q}]
`, defCert, defKey, extra, aCert, aKey, a.url(), b.url(), wCert, wKey, w.url())
}

// TestTLSCertificateBySNI checks that the certificate is chosen by SNI
// (exact, then wildcard, then the default) and that requests over TLS
// reach the tenant with X-Forwarded-Proto https.
func TestTLSCertificateBySNI(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	a, b, w := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "w")
	g := startGateway(t, tlsTenants(t, ca, "", a, b, w))
	addr := g.serveTLS()

	for _, tc := range []struct {
		sni, wantCN, wantFrom string
	}{
		{"a.example.com", "a", "a"},
		{"A.Example.COM", "a", "a"},
		{"x.w.example.com", "w", "w"},
		{"b.example.com", "default", "b"},
		{"localhost", "default", ""},
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool(), ServerName: tc.sni})
		if err != nil {
			t.Fatalf("SNI %q: %v", tc.sni, err)
		}
		cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
		conn.Close()
		if cn != tc.wantCN {
			t.Errorf("SNI %q: served certificate %q, want %q", tc.sni, cn, tc.wantCN)
		}
		if tc.wantFrom == "" {
			continue
		}
		c := tlsClient(ca, addr, tc.sni)
		resp, body := httpsGet(t, c, "https://"+strings.ToLower(tc.sni)+"/p?q=1")
		var e echoed
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.ID != tc.wantFrom {
			t.Fatalf("SNI %q: status %d body %q, want an answer from %q", tc.sni, resp.StatusCode, body, tc.wantFrom)
		}
		if got := e.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "https" {
			t.Errorf("SNI %q: upstream saw X-Forwarded-Proto %v, want [https]", tc.sni, got)
		}
		if resp.TLS == nil || resp.ProtoMajor != 1 {
			t.Errorf("SNI %q: proto %s, want HTTP/1.1 over TLS", tc.sni, resp.Proto)
		}
	}
}

// TestTLSMisdirectedRequest sends, on a connection made for tenant a's
// certificate, a request whose Host is tenant b: it gets 421 and b sees
// nothing.
func TestTLSMisdirectedRequest(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	a, b, w := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "w")
	g := startGateway(t, tlsTenants(t, ca, "", a, b, w))
	addr := g.serveTLS()

	c := tlsClient(ca, addr, "a.example.com")
	for _, host := range []string{"b.example.com", "x.w.example.com", "a.example.com.evil"} {
		req, _ := http.NewRequest("GET", "https://a.example.com/x", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(body), `"misdirected_request"`) ||
			!strings.Contains(string(body), resp.Header.Get("X-Request-Id")) {
			t.Errorf("Host %q on a's connection: %d %q, want 421 misdirected_request with the request id", host, resp.StatusCode, body)
		}
	}
	// The same Host with a port is covered.
	req, _ := http.NewRequest("GET", "https://a.example.com/x", nil)
	req.Host = "A.example.com:443"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("Host A.example.com:443 on a's connection: %d, want 200", resp.StatusCode)
	}
	if n := b.requests.Load() + w.requests.Load(); n != 0 {
		t.Errorf("other tenants' upstreams saw %d requests, want 0", n)
	}
}

// TestTLSRedirectAndHSTS checks redirect_http (308 to https on the TLS
// port, admin excepted) and the HSTS header (over TLS only).
func TestTLSRedirectAndHSTS(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	a, b, w := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "w")
	g := startGateway(t, tlsTenants(t, ca, "    redirect_http: true\n    hsts: {max_age: 8760h, include_subdomains: true}", a, b, w))
	addr := g.serveTLS()
	_, port, _ := net.SplitHostPort(addr)

	resp := g.do("GET", "a.example.com", "/p/q?x=1&y=%20", nil)
	if resp.StatusCode() != 308 || string(resp.Header.Peek("Location")) != "https://a.example.com:"+port+"/p/q?x=1&y=%20" {
		t.Errorf("plain GET: %d Location %q, want 308 to https://a.example.com:%s/p/q?x=1&y=%%20", resp.StatusCode(), resp.Header.Peek("Location"), port)
	}
	if len(resp.Header.Peek("Strict-Transport-Security")) != 0 {
		t.Errorf("HSTS sent over plain HTTP")
	}
	resp = g.do("POST", "a.example.com:8080", "/form", []byte("a=1"))
	if resp.StatusCode() != 308 || string(resp.Header.Peek("Location")) != "https://a.example.com:"+port+"/form" {
		t.Errorf("plain POST: %d Location %q", resp.StatusCode(), resp.Header.Peek("Location"))
	}
	if a.requests.Load() != 0 {
		t.Errorf("a redirected request reached the upstream")
	}
	if resp := g.get("/admin/health"); resp.StatusCode() != 200 {
		t.Errorf("admin over plain HTTP: %d, want 200 (not redirected)", resp.StatusCode())
	}

	c := tlsClient(ca, addr, "a.example.com")
	r, _ := httpsGet(t, c, "https://a.example.com/x")
	if r.StatusCode != 200 || r.Header.Get("Strict-Transport-Security") != "max-age=31536000; includeSubDomains" {
		t.Errorf("over TLS: %d HSTS %q, want 200 with max-age=31536000; includeSubDomains", r.StatusCode, r.Header.Get("Strict-Transport-Security"))
	}
}

// TestTLSClientCertificates checks mTLS: a client without a certificate
// fails the handshake, a verified one reaches the upstream with the
// gateway's client-certificate headers (a client's own are dropped, on
// either listener) and the script sees req.TLS.
func TestTLSClientCertificates(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	up := startEcho(t, "up")
	defCert, defKey := ca.issue("default", false, "localhost", "api.example.com")
	g := startGateway(t, yamlf(`
server:
  tls:
    listen: "127.0.0.1:0"
    cert_file: %q
    key_file: %q
    client_ca_file: %q
    client_auth: verify_if_given
    client_cert_headers: true
lua:
  scripts_dir: scripts
tenants:
  - name: api
    domains: [api.example.com]
    script: api.lua
    upstreams: [{url: %q}]
`, defCert, defKey, ca.file, up.url()), "scripts/api.lua", `
local r = chi.NewRouter()
r:Get("/whoami", function(w, req)
  local t = req.TLS
  if t == nil then return w:JSON(200, {tls = false}) end
  local c = t.Client
  w:JSON(200, {tls = true, version = t.Version, sni = t.ServerName,
    subject = c and c.Subject or "", san = c and c.SANs[1] or "", fp = c and c.Fingerprint or ""})
end)
r:Handle("/*", keystone.Proxy("api"))
return r
`)
	addr := g.serveTLS()

	alice := ca.pair("alice", "alice.clients.example.com")
	sum := sha256.Sum256(alice.Certificate[0])
	fp := hex.EncodeToString(sum[:])

	c := tlsClient(ca, addr, "api.example.com", alice)
	_, body := httpsGet(t, c, "https://api.example.com/whoami")
	var who map[string]any
	_ = json.Unmarshal([]byte(body), &who)
	if who["tls"] != true || who["subject"] != "CN=alice,O=Keystone Tests" || who["san"] != "alice.clients.example.com" ||
		who["fp"] != fp || who["sni"] != "api.example.com" || who["version"] != "1.3" {
		t.Errorf("req.TLS in the script: %s", body)
	}
	_, body = httpsGet(t, c, "https://api.example.com/up", "X-Client-Cert-Subject", "CN=admin")
	e := echoed{}
	_ = json.Unmarshal([]byte(body), &e)
	if got := e.Headers["X-Client-Cert-Subject"]; len(got) != 1 || got[0] != "CN=alice,O=Keystone Tests" {
		t.Errorf("upstream saw X-Client-Cert-Subject %v, want the verified subject only", got)
	}
	if got := e.Headers["X-Client-Cert-Fingerprint"]; len(got) != 1 || got[0] != fp {
		t.Errorf("upstream saw X-Client-Cert-Fingerprint %v, want [%s]", got, fp)
	}
	if got := e.Headers["X-Client-Cert-Sans"]; len(got) != 1 || got[0] != "alice.clients.example.com" {
		t.Errorf("upstream saw X-Client-Cert-Sans %v", got)
	}

	// verify_if_given: no certificate is allowed, and a forged header
	// does not pass.
	anon := tlsClient(ca, addr, "api.example.com")
	_, body = httpsGet(t, anon, "https://api.example.com/up", "X-Client-Cert-Subject", "CN=admin", "X-Client-Cert-Fingerprint", "00")
	e = echoed{}
	_ = json.Unmarshal([]byte(body), &e)
	if _, forged := e.Headers["X-Client-Cert-Subject"]; forged || e.Headers["X-Client-Cert-Fingerprint"] != nil {
		t.Errorf("a client's own certificate headers reached the upstream: %v", e.Headers)
	}
	resp := g.do("GET", "api.example.com", "/up", nil, "X-Client-Cert-Subject", "CN=admin")
	e = decodeEcho(t, resp)
	if _, forged := e.Headers["X-Client-Cert-Subject"]; forged {
		t.Errorf("plain listener: a client's X-Client-Cert-Subject reached the upstream")
	}
	// A certificate from another CA fails the handshake.
	other := newTestCA(t).pair("mallory", "mallory.example.com")
	if _, err := tlsClient(ca, addr, "api.example.com", other).Get("https://api.example.com/up"); err == nil {
		t.Errorf("a certificate from an unknown CA was accepted")
	}
}

// TestTLSClientCertificateRequired checks client_auth: require.
func TestTLSClientCertificateRequired(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	up := startEcho(t, "up")
	defCert, defKey := ca.issue("default", false, "localhost")
	g := startGateway(t, oneTenant("api", yamlf(`
server:
  tls: {listen: "127.0.0.1:0", cert_file: %q, key_file: %q, client_ca_file: %q}
`, defCert, defKey, ca.file), "", up.url()))
	addr := g.serveTLS()
	if _, err := tlsClient(ca, addr, "localhost").Get("https://localhost/x"); err == nil {
		t.Fatal("a client without a certificate got an answer")
	}
	resp, _ := httpsGet(t, tlsClient(ca, addr, "localhost", ca.pair("bob")), "https://localhost/x")
	if resp.StatusCode != 200 {
		t.Errorf("with a certificate: %d, want 200", resp.StatusCode)
	}
	if up.requests.Load() != 1 {
		t.Errorf("upstream saw %d requests, want 1", up.requests.Load())
	}
}

// TestTLSCertificateReload replaces a tenant's certificate files: the
// watcher (and ReloadCertificates) serve the new certificate to new
// connections without restarting.
func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	a, b, w := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "w")
	g := startGateway(t, tlsTenants(t, ca, "", a, b, w))
	addr := g.serveTLS()
	serial := func() int64 {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool(), ServerName: "a.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	old := serial()
	// Keep a connection open across the reload: it must keep working.
	c := tlsClient(ca, addr, "a.example.com")
	if r, _ := httpsGet(t, c, "https://a.example.com/"); r.StatusCode != 200 {
		t.Fatal(r.Status)
	}
	// Modification times must differ from the first files'.
	time.Sleep(10 * time.Millisecond)
	ca.issue("a", false, "a.example.com")
	eventually(t, 10*time.Second, "the watcher to serve the new certificate", func() bool { return serial() != old })
	if r, _ := httpsGet(t, c, "https://a.example.com/"); r.StatusCode != 200 {
		t.Errorf("the connection open across the reload: %s", r.Status)
	}

	// A broken file keeps the certificate in use.
	cur := serial()
	aCert := filepath.Join(ca.dir, "a.pem")
	if err := os.WriteFile(aCert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.srv.ReloadCertificates(); err == nil {
		t.Error("ReloadCertificates accepted a broken certificate file")
	}
	if got := serial(); got != cur {
		t.Errorf("after a failed reload the served certificate changed: %d, want %d", got, cur)
	}
}

// TestHTTPSUpstreamVerification checks upstream_tls: the upstream's
// certificate is verified against ca_file and server_name (and not without
// them), insecure_skip_verify turns that off, and the gateway presents a
// client certificate to an upstream that requires one.
func TestHTTPSUpstreamVerification(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	upCert, upKey := ca.issue("upstream", false, "svc.internal")
	pair, err := tls.LoadX509KeyPair(upCert, upKey)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := ""
		if len(r.TLS.PeerCertificates) > 0 {
			peer = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = io.WriteString(w, "peer="+peer)
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	gwCert, gwKey := ca.issue("gateway-client", true, "gateway.internal")

	g := startGateway(t, yamlf(`
tenants:
  - name: verified
    path_prefix: /verified
    strip_prefix: true
    upstreams: [{url: %q}]
    upstream_tls: {ca_file: %q, server_name: svc.internal, cert_file: %q, key_file: %q}
  - name: wrongname
    path_prefix: /wrongname
    upstreams: [{url: %q, tls: {ca_file: %q, server_name: other.internal}}]
  - name: systemroots
    path_prefix: /systemroots
    upstreams: [{url: %q}]
  - name: insecure
    path_prefix: /insecure
    strip_prefix: true
    upstream_tls: {insecure_skip_verify: true}
    upstreams: [{url: %q}]
`, ts.URL, ca.file, gwCert, gwKey, ts.URL, ca.file, ts.URL, ts.URL))
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/verified/x", 200, "peer=gateway-client"},
		{"/wrongname/x", 502, ""},
		{"/systemroots/x", 502, ""},
		{"/insecure/x", 200, "peer="},
	} {
		resp := g.get(tc.path)
		if resp.StatusCode() != tc.status || (tc.body != "" && string(resp.Body()) != tc.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode(), resp.Body(), tc.status, tc.body)
		}
	}
}

// TestTLSHandshakeTimeout opens a connection to the TLS listener and sends
// nothing: it is closed after header_timeout, and does not hold up other
// clients' handshakes meanwhile.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	up := startEcho(t, "up")
	cert, key := ca.issue("default", false, "localhost")
	g := startGateway(t, oneTenant("api", yamlf(`
server:
  header_timeout: 300ms
  tls: {listen: "127.0.0.1:0", cert_file: %q, key_file: %q}
`, cert, key), "", up.url()))
	addr := g.serveTLS()
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if r, _ := httpsGet(t, tlsClient(ca, addr, "localhost"), "https://localhost/x"); r.StatusCode != 200 {
		t.Errorf("a client behind an idle one: %d", r.StatusCode)
	}
	// A read deadline far beyond header_timeout: ReadAll ends with
	// io.EOF (nil) when the gateway closes, a timeout error otherwise.
	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(idle); err != nil {
		t.Errorf("the silent connection was not closed: %v", err)
	}
}

// FuzzHostCoveredByCertificate feeds hostile Host values to the 421 check:
// it never panics, and a host is covered exactly when it names the
// certificate's exact name or one label under its wildcard, whatever the
// case, port or brackets.
func FuzzHostCoveredByCertificate(f *testing.F) {
	for _, s := range []string{"a.example.com", "A.EXAMPLE.COM:443", "x.w.example.com", "w.example.com", ".w.example.com",
		"[::1]:8443", "[::1", "::1", "a.example.com:", ":", "", "x.y.w.example.com", "a.example.com.", "\x00.w.example.com",
		"[a.example.com]:1", "a.example.com:443:1"} {
		f.Add(s)
	}
	e := &certEntry{names: map[string]struct{}{"a.example.com": {}, "::1": {}}, wild: map[string]struct{}{"w.example.com": {}}}
	f.Fuzz(func(t *testing.T, host string) {
		var buf [256]byte
		h := hostOnly(buf[:0], []byte(host))
		if bytes.ContainsFunc(h, func(r rune) bool { return 'A' <= r && r <= 'Z' }) {
			t.Fatalf("hostOnly(%q) = %q, not lowercase", host, h)
		}
		got := e.covers(h)
		want := false
		switch s := string(h); {
		case s == "a.example.com" || s == "::1":
			want = true
		default:
			if i := strings.IndexByte(s, '.'); i > 0 && s[i+1:] == "w.example.com" {
				want = true
			}
		}
		if got != want {
			t.Fatalf("covers(%q from %q) = %v, want %v", h, host, got, want)
		}
	})
}
