package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// writePair writes a self-signed certificate and its key as PEM files in
// dir, named name.pem and name-key.pem; made by the test, never committed.
func writePair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name + ".example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestTLSDefaultsAndRelativePaths loads a TLS config written with paths
// relative to the config file and the defaults left out.
func TestTLSDefaultsAndRelativePaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writePair(t, dir, "default")
	writePair(t, dir, "api")
	path := filepath.Join(dir, "keystone.yaml")
	if err := os.WriteFile(path, []byte(`
server:
  tls: {cert_file: default.pem, key_file: default-key.pem}
tenants:
  - name: api
    domains: [api.example.com]
    tls: {cert_file: api.pem, key_file: api-key.pem}
    upstreams: [{url: https://10.0.0.1}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tl := c.Server.TLS
	if tl.Listen != ":8443" || tl.MinVersion != "1.2" || tl.ClientAuth != "require" || !tl.HTTP2.Enabled ||
		tl.HTTP2.MaxConcurrentStreams != 250 || tl.RedirectHTTP || tl.HSTS.MaxAge != 0 {
		t.Errorf("defaults: %+v", *tl)
	}
	if tl.CertFile != filepath.Join(dir, "default.pem") || c.Tenants[0].TLS.KeyFile != filepath.Join(dir, "api-key.pem") {
		t.Errorf("paths not resolved against the config's directory: %q, %q", tl.CertFile, c.Tenants[0].TLS.KeyFile)
	}
	if c.Tenants[0].UpstreamTLS != nil || c.Tenants[0].Upstreams[0].TLS != nil {
		t.Errorf("upstream tls blocks set without being written")
	}
	// Files lists what was read, each once, for reload.watch.
	want := []string{"default.pem", "default-key.pem", "api.pem", "api-key.pem"}
	for i := range want {
		want[i] = filepath.Join(dir, want[i])
	}
	if !slices.Equal(c.Files, want) {
		t.Errorf("Files = %q, want %q", c.Files, want)
	}
}

// TestTLSErrors checks that unreadable files, mismatched pairs and bad
// values are refused, each at its position.
func TestTLSErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	aCert, aKey := writePair(t, dir, "a")
	_, bKey := writePair(t, dir, "b")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN NOTHING-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := strings.NewReplacer("A_CERT", aCert, "A_KEY", aKey, "B_KEY", bKey, "GARBAGE", garbage, "DIR", dir).Replace(`
server:
  listen: ":8080"
  tls:
    listen: ":8080"
    cert_file: A_CERT
    key_file: B_KEY
    min_version: "1.1"
    client_auth: sometimes
    client_cert_headers: true
    hsts: {max_age: -1s}
    http2: {max_concurrent_streams: 0}
tenants:
  - name: api
    domains: [api.example.com]
    tls: {cert_file: DIR/missing.pem, key_file: A_KEY}
    upstreams: [{url: http://10.0.0.1, tls: {ca_file: GARBAGE}}]
    upstream_tls: {server_name: "bad name", cert_file: A_CERT}
  - name: nodomain
    path_prefix: /x
    tls: {cert_file: A_CERT, key_file: A_KEY}
    upstreams: [{url: https://10.0.0.2}]
`)
	_, err := config.Parse(filepath.Join(dir, "x.yaml"), []byte(yaml))
	if err == nil {
		t.Fatal("loaded")
	}
	got := err.Error()
	for _, want := range []string{
		`x.yaml:5:13: server.tls.listen: expected an address other than server.listen (":8080"), got the same`,
		`x.yaml:6:16: server.tls.cert_file: certificate "` + aCert + `" and key "` + bKey + `" do not make a pair: tls: private key does not match public key`,
		`x.yaml:8:18: server.tls.min_version: expected 1.2 or 1.3, got "1.1" (did you mean "1.2"?)`,
		`x.yaml:9:18: server.tls.client_auth: expected require or verify_if_given, got "sometimes"`,
		`x.yaml:10:26: server.tls.client_cert_headers: expected client_ca_file to be set`,
		`x.yaml:11:21: server.tls.hsts.max_age: expected a duration of 0 or more, got -1s`,
		`x.yaml:12:37: server.tls.http2.max_concurrent_streams: expected a value between 1 and 10000, got 0`,
		`x.yaml:16:22: tenants[0].tls.cert_file: cannot read "` + dir + `/missing.pem": no such file or directory`,
		`x.yaml:17:45: tenants[0].upstreams[0].tls: expected an https:// url for tls settings, got "http://10.0.0.1"`,
		`x.yaml:17:55: tenants[0].upstreams[0].tls.ca_file: expected PEM certificates in "` + garbage + `", found none`,
		`x.yaml:18:19: tenants[0].upstream_tls: missing required field "key_file"`,
		`x.yaml:18:33: tenants[0].upstream_tls.server_name: expected a host name such as "api.internal", got "bad name"`,
		`x.yaml:21:10: tenants[1].tls: expected domains: a tenant certificate is chosen by the SNI name of one of them`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing error:\n%s\ngot:\n%s", want, got)
		}
	}
}

// TestTenantTLSNeedsServerTLS refuses a tenant certificate without the
// TLS listener.
func TestTenantTLSNeedsServerTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, k := writePair(t, dir, "a")
	_, err := config.Parse("x.yaml", []byte(`
tenants:
  - name: api
    domains: [api.example.com]
    tls: {cert_file: `+c+`, key_file: `+k+`}
    upstreams: [{url: http://10.0.0.1}]
`))
	if err == nil || !strings.Contains(err.Error(), "x.yaml:5:10: tenants[0].tls: expected server.tls to be configured") {
		t.Errorf("got %v", err)
	}
}

// TestACMEConfig checks the acme block's defaults and its errors.
func TestACMEConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, k := writePair(t, dir, "a")
	ok, err := config.Parse(filepath.Join(dir, "x.yaml"), []byte(`
server:
  tls: {cert_file: `+c+`, key_file: `+k+`, acme: {enabled: true, agreed: true}}
tenants:
  - {name: api, domains: [api.example.com], upstreams: [{url: http://10.0.0.1}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	a := ok.Server.TLS.ACME
	if a.CA != config.LetsEncryptURL || a.Storage != filepath.Join(dir, "acme") || a.RenewBefore.D() != 720*time.Hour {
		t.Errorf("defaults: %+v", a)
	}
	_, err = config.Parse("x.yaml", []byte(`
server:
  tls:
    cert_file: `+c+`
    key_file: `+k+`
    acme: {enabled: true, ca: "http://ca.example/dir", renew_before: 0s, storage: ""}
tenants:
  - {name: api, domains: [api.example.com], upstreams: [{url: http://10.0.0.1}]}
`))
	for _, want := range []string{
		`x.yaml:6:11: server.tls.acme.agreed: expected true: ACME needs the CA's terms of service accepted`,
		`x.yaml:6:31: server.tls.acme.ca: expected an https:// ACME directory URL, got "http://ca.example/dir"`,
		`x.yaml:6:83: server.tls.acme.storage: expected a directory, got ""`,
		`x.yaml:6:70: server.tls.acme.renew_before: expected a duration greater than 0, got 0s`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing error:\n%s\ngot:\n%v", want, err)
		}
	}
}
