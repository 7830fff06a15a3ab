package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TLS configures the TLS listener: a second listener beside server.listen
// serving the same tenants over HTTPS, HTTP/1.1 and HTTP/2 chosen by ALPN.
type TLS struct {
	// Listen is the TCP address of the TLS listener. Default ":8443".
	Listen string `yaml:"listen"`

	// CertFile and KeyFile are the PEM certificate chain and private key
	// served when no tenant's certificate matches the client's SNI (or
	// the client sends none). Required. Load resolves them against the
	// config file's directory and refuses a pair that cannot be read or
	// whose key does not match.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	// MinVersion is the lowest TLS version accepted, "1.2" or "1.3".
	// Default "1.2".
	MinVersion string `yaml:"min_version"`

	// ClientCAFile, when set, turns on client certificates (mTLS): PEM
	// CA certificates that client certificates are verified against.
	ClientCAFile string `yaml:"client_ca_file"`

	// ClientAuth is require (a connection without a valid client
	// certificate fails its handshake) or verify_if_given (a client may
	// send none; one it sends must verify). Used only with ClientCAFile.
	// Default require.
	ClientAuth string `yaml:"client_auth"`

	// ClientCertHeaders sends the verified client certificate's subject,
	// SANs and fingerprint to upstreams as X-Client-Cert-Subject,
	// X-Client-Cert-SANs and X-Client-Cert-Fingerprint. Those names are
	// removed from every client request first, on both listeners, so an
	// upstream can trust them. Requires ClientCAFile.
	ClientCertHeaders bool `yaml:"client_cert_headers"`

	// RedirectHTTP makes the plain listener answer 308 to the same URL
	// over https, except for the admin endpoints.
	RedirectHTTP bool `yaml:"redirect_http"`

	// HSTS adds Strict-Transport-Security to answers over TLS.
	HSTS HSTS `yaml:"hsts"`

	// HTTP2 configures HTTP/2 on the TLS listener.
	HTTP2 HTTP2 `yaml:"http2"`

	// ACME obtains and renews certificates automatically for the exact
	// domains of tenants without their own certificate.
	ACME ACME `yaml:"acme"`
}

// ACME configures automatic certificates (RFC 8555), by TLS-ALPN-01 on the
// TLS listener and HTTP-01 on the plain one.
type ACME struct {
	// Enabled turns ACME on. Default false.
	Enabled bool `yaml:"enabled"`

	// Email is the account's contact address; optional.
	Email string `yaml:"email"`

	// CA is the ACME directory URL. Default Let's Encrypt's production
	// directory.
	CA string `yaml:"ca"`

	// CAFile is a PEM file of CA certificates the directory's own
	// HTTPS certificate is verified against (a private or test ACME
	// server). Empty: the system roots.
	CAFile string `yaml:"ca_file"`

	// Storage is the directory the account key and certificates are
	// kept in, resolved against the config file's directory. Default
	// "acme".
	Storage string `yaml:"storage"`

	// Agreed accepts the CA's terms of service; required with Enabled.
	Agreed bool `yaml:"agreed"`

	// RenewBefore renews a certificate this long before it expires
	// (less up to a tenth of it, at most 1h, of random jitter), > 0.
	// Default 720h (30 days).
	RenewBefore Duration `yaml:"renew_before"`
}

// LetsEncryptURL is the default ACME directory.
const LetsEncryptURL = "https://acme-v02.api.letsencrypt.org/directory"

// HSTS configures the Strict-Transport-Security header (RFC 6797).
type HSTS struct {
	// MaxAge is the header's max-age. 0 sends no header. Default 0.
	MaxAge Duration `yaml:"max_age"`

	// IncludeSubdomains adds includeSubDomains.
	IncludeSubdomains bool `yaml:"include_subdomains"`
}

// HTTP2 configures HTTP/2 on the TLS listener.
type HTTP2 struct {
	// Enabled offers h2 by ALPN. Default true.
	Enabled bool `yaml:"enabled"`

	// MaxConcurrentStreams caps the streams one client connection may
	// have open (SETTINGS_MAX_CONCURRENT_STREAMS), 1..10000. Default 250.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
}

// CertPair is a tenant's own certificate, served to clients whose SNI
// names one of the tenant's domains.
type CertPair struct {
	// CertFile and KeyFile are the PEM certificate chain and private
	// key, resolved against the config file's directory. Both required.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// UpstreamTLS configures the TLS client of https:// upstreams.
type UpstreamTLS struct {
	// CAFile is a PEM file of CA certificates the upstream's certificate
	// is verified against. Empty: the system roots.
	CAFile string `yaml:"ca_file"`

	// ServerName is the name verified in the upstream's certificate and
	// sent as SNI. Empty: the upstream URL's host.
	ServerName string `yaml:"server_name"`

	// InsecureSkipVerify accepts any certificate the upstream presents.
	// For tests against self-signed upstreams only. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`

	// CertFile and KeyFile are a client certificate presented to the
	// upstream; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// MinTLSVersion returns MinVersion as a crypto/tls constant.
func (t *TLS) MinTLSVersion() uint16 {
	if t.MinVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

func defaultTLS() TLS {
	return TLS{
		Listen:     ":8443",
		MinVersion: "1.2",
		ClientAuth: "require",
		HTTP2:      HTTP2{Enabled: true, MaxConcurrentStreams: 250},
		ACME:       ACME{CA: LetsEncryptURL, Storage: "acme", RenewBefore: Duration(720 * time.Hour)},
	}
}

// validateTLS checks the TLS settings of the server, the tenants and their
// upstreams, and resolves every file they name against base, reading each
// so that an unreadable file or a mismatched pair is refused at load.
func validateTLS(c *Config, d *decoder, base string) {
	resolve := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	if t := c.Server.TLS; t != nil {
		const p = "server.tls"
		if msg := checkListen(t.Listen); msg != "" {
			d.errorAt(p+".listen", "%s", msg)
		} else if t.Listen == c.Server.Listen && !strings.HasSuffix(t.Listen, ":0") {
			d.errorAt(p+".listen", "expected an address other than server.listen (%q), got the same", c.Server.Listen)
		}
		resolve(&t.CertFile)
		resolve(&t.KeyFile)
		checkPair(d, p, t.CertFile, t.KeyFile, true)
		oneOf(d, p+".min_version", t.MinVersion, "1.2", "1.3")
		oneOf(d, p+".client_auth", t.ClientAuth, "require", "verify_if_given")
		if t.ClientCAFile != "" {
			resolve(&t.ClientCAFile)
			checkCAFile(d, p+".client_ca_file", t.ClientCAFile)
		} else if t.ClientCertHeaders {
			d.errorAt(p+".client_cert_headers", "expected client_ca_file to be set: there is no verified client certificate to send without it")
		}
		if t.HSTS.MaxAge < 0 {
			d.errorAt(p+".hsts.max_age", "expected a duration of 0 or more, got %s", t.HSTS.MaxAge)
		}
		between(d, p+".http2.max_concurrent_streams", t.HTTP2.MaxConcurrentStreams, 1, 10000)
		if a := &t.ACME; a.Enabled {
			if !a.Agreed {
				d.errorAt(p+".acme.agreed", "expected true: ACME needs the CA's terms of service accepted")
			}
			if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
				d.errorAt(p+".acme.ca", "expected an https:// ACME directory URL, got %q", clip(a.CA))
			}
			if a.CAFile != "" {
				resolve(&a.CAFile)
				checkCAFile(d, p+".acme.ca_file", a.CAFile)
			}
			if a.Storage == "" {
				d.errorAt(p+".acme.storage", "expected a directory, got \"\"")
			}
			resolve(&a.Storage)
			positive(d, p+".acme.renew_before", a.RenewBefore)
		}
	}
	for i := range c.Tenants {
		tn := &c.Tenants[i]
		tp := fmt.Sprintf("tenants[%d]", i)
		if tn.TLS != nil {
			switch {
			case c.Server.TLS == nil:
				d.errorAt(tp+".tls", "expected server.tls to be configured: a tenant certificate needs the TLS listener")
			case len(tn.Domains) == 0:
				d.errorAt(tp+".tls", "expected domains: a tenant certificate is chosen by the SNI name of one of them")
			}
			resolve(&tn.TLS.CertFile)
			resolve(&tn.TLS.KeyFile)
			checkPair(d, tp+".tls", tn.TLS.CertFile, tn.TLS.KeyFile, true)
		}
		if u := tn.UpstreamTLS; u != nil {
			validateUpstreamTLS(d, u, tp+".upstream_tls", resolve)
		}
		for j := range tn.Upstreams {
			if u := tn.Upstreams[j].TLS; u != nil {
				up := fmt.Sprintf("%s.upstreams[%d]", tp, j)
				if !strings.HasPrefix(tn.Upstreams[j].URL, "https://") && !d.derived(up+".url") {
					d.errorAt(up+".tls", "expected an https:// url for tls settings, got %q", clip(tn.Upstreams[j].URL))
				}
				validateUpstreamTLS(d, u, up+".tls", resolve)
			}
		}
	}
}

func validateUpstreamTLS(d *decoder, u *UpstreamTLS, p string, resolve func(*string)) {
	if u.CAFile != "" {
		resolve(&u.CAFile)
		checkCAFile(d, p+".ca_file", u.CAFile)
	}
	if u.ServerName != "" {
		if _, err := netip.ParseAddr(u.ServerName); err != nil && !validHostName(u.ServerName, true) {
			d.errorAt(p+".server_name", "expected a host name such as \"api.internal\", got %q", clip(u.ServerName))
		}
	}
	resolve(&u.CertFile)
	resolve(&u.KeyFile)
	checkPair(d, p, u.CertFile, u.KeyFile, false)
}

// checkPair reads a certificate and key pair and reports, at p.cert_file or
// p.key_file, why it cannot serve. With required false, an empty pair is
// fine; one half alone never is.
func checkPair(d *decoder, p, certFile, keyFile string, required bool) {
	if certFile == "" && keyFile == "" && !required {
		return
	}
	ok := true
	for _, f := range []struct{ key, file string }{{"cert_file", certFile}, {"key_file", keyFile}} {
		if f.file == "" {
			d.errorAt(p, "missing required field %q", f.key)
			ok = false
			continue
		}
		if _, err := d.readFile(f.file); err != nil {
			d.errorAt(p+"."+f.key, "cannot read %q: %v", f.file, unwrapPathError(err))
			ok = false
		}
	}
	if !ok {
		return
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		d.errorAt(p+".cert_file", "certificate %q and key %q do not make a pair: %v", certFile, keyFile, unwrapPathError(err))
	}
}

// checkCAFile reads a PEM bundle of CA certificates.
func checkCAFile(d *decoder, p, file string) {
	d.noteFile(file)
	if _, err := LoadCertPool(file); err != nil {
		d.errorAt(p, "%v", err)
	}
}

// LoadCertPool reads a PEM file of CA certificates into a pool.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read %q: %w", file, unwrapPathError(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("expected PEM certificates in %q, found none", file)
	}
	return pool, nil
}
