package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunServesTLS runs the binary with server.tls: the TLS listener
// serves the tenant over HTTP/2 (ALPN) beside the plain listener, with the
// certificate the config names (made by the test).
func TestRunServesTLS(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keystone test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	write(t, filepath.Join(dir, "cert.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, filepath.Join(dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	addr, tlsAddr := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "gw.yaml")
	write(t, cfg, fmt.Sprintf(`server:
  listen: %q
  tls: {listen: %q, cert_file: cert.pem, key_file: key.pem}
lua:
  scripts_dir: .
tenants:
  - name: hello
    path_prefix: /hello
    script: hello.lua
`, addr, tlsAddr))
	write(t, filepath.Join(dir, "hello.lua"), `local r = chi.NewRouter()
r:Get("/", function(w, req) w:Write("hello over " .. (req.TLS and ("TLS " .. req.TLS.Version) or "plain")) end)
return r
`)
	startGateway(t, bin, "http://"+addr+"/admin/health", "", "run", cfg)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
	}}
	var resp *http.Response
	for i := 0; i < 50; i++ { // the TLS listener starts beside the plain one
		if resp, err = c.Get("https://" + tlsAddr + "/hello"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.HasPrefix(string(body), "hello over TLS 1.") {
		t.Errorf("GET over TLS: %s %d %q, want HTTP/2 200 \"hello over TLS 1.x\"", resp.Proto, resp.StatusCode, body)
	}
}
