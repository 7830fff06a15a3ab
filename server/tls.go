package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/http2"
)

// The TLS listener (server.tls) serves the same pipeline as the plain one:
// connections that negotiate h2 by ALPN go to the HTTP/2 adapter (h2.go),
// the rest to the same fasthttp.Server, on tls.Conns, so ctx.IsTLS() holds
// and X-Forwarded-Proto says https.
//
// Certificates live in a certSet built from the files the config names and
// swapped atomically: ReloadCertificates re-reads them, and a watcher does
// when their files change. Handshakes in progress keep the set they loaded.

// Names of the client-certificate headers the gateway sets for upstreams
// (server.tls.client_cert_headers). A client's own are always removed first.
var (
	headerClientCertSubject     = []byte("X-Client-Cert-Subject")
	headerClientCertSANs        = []byte("X-Client-Cert-Sans")
	headerClientCertFingerprint = []byte("X-Client-Cert-Fingerprint")
	headerStrictTransport       = []byte("Strict-Transport-Security")
)

// acmeChallengePath is where HTTP-01 challenges are asked (RFC 8555 8.3).
var acmeChallengePath = []byte("/.well-known/acme-challenge/")

// codeMisdirected is the error code of a 421 answer.
const codeMisdirected = "misdirected_request"

// certWatchInterval is how often the watcher stats the certificate files.
// Stat of a few files every few seconds is cheap; inotify is not portable
// and misses the atomic-rename updates of cert-manager style tools.
const certWatchInterval = 2 * time.Second

// certEntry is one loaded certificate and the names it covers, immutable.
type certEntry struct {
	cert *tls.Certificate
	// names are the certificate's DNS SANs (lowercase) and IP SANs
	// (canonical text); wild holds "example.com" for a "*.example.com"
	// SAN.
	names map[string]struct{}
	wild  map[string]struct{}
}

// covers reports whether the certificate is valid for host (lowercase, no
// port, IPv6 without brackets).
func (e *certEntry) covers(host []byte) bool {
	if _, ok := e.names[string(host)]; ok {
		return true
	}
	if i := bytes.IndexByte(host, '.'); i > 0 {
		_, ok := e.wild[string(host[i+1:])]
		return ok
	}
	return false
}

// certSet is the certificates of one config, immutable once built: the
// default, and the tenants' by their domains.
type certSet struct {
	def   *certEntry
	exact map[string]*certEntry // tenant domain → its certificate
	wild  map[string]*certEntry // "example.com" for a tenant's "*.example.com"
	// conf is the tls.Config handed to each handshake
	// (GetConfigForClient): the set's certificates and client CAs.
	conf *tls.Config
	// files are the files read, with their modification times, for the
	// watcher.
	files map[string]time.Time
	// acme holds the domains whose certificates ACME manages: the
	// exact domains of tenants without a certificate of their own.
	// Nil without server.tls.acme.
	acme map[string]bool
}

// lookup picks the certificate for an SNI name: exact, then wildcard,
// then the default.
func (cs *certSet) lookup(name string) *certEntry {
	if e, ok := cs.exact[name]; ok {
		return e
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if e, ok := cs.wild[name[i+1:]]; ok {
			return e
		}
	}
	return cs.def
}

// edgeTLS is the TLS listener's state; it outlives snapshots.
type edgeTLS struct {
	// certs is the current certificate set. Written by
	// ReloadCertificates (and New), read by every handshake and by the
	// misdirected-request check.
	certs atomic.Pointer[certSet]

	// base is the listener's tls.Config; handshakes get their set's
	// config through GetConfigForClient, session tickets from base.
	base *tls.Config

	// port is the TLS listener's bound port, for redirect_http.
	port atomic.Pointer[string]

	h2    *http2.Server
	h2Cfg *http2Base

	// h2Conns counts the HTTP/2 connections being served; maxH2Conns
	// (server.max_conns) caps them. Written by the handshake goroutines.
	h2Conns    atomic.Int64
	maxH2Conns int64

	// acme obtains and renews the certificates of certSet.acme; nil
	// without server.tls.acme. acmeHTTP answers HTTP-01 challenges.
	acme     *autocert.Manager
	acmeHTTP fasthttp.RequestHandler

	lnMu sync.Mutex
	ln   *tlsListener

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // the watcher and the per-connection goroutines
}

// edgePolicy is the per-snapshot part of the edge: what the pipeline does
// with TLS for each request. Nil when server.tls is not configured, so the
// plain listener pays one nil check.
type edgePolicy struct {
	redirect    bool
	adminPrefix []byte
	hsts        []byte // the header value; nil: none
	certHeaders bool
	tlsPort     string // configured port of server.tls.listen
}

func newEdgePolicy(cfg *config.Config) *edgePolicy {
	t := cfg.Server.TLS
	if t == nil {
		return nil
	}
	p := &edgePolicy{redirect: t.RedirectHTTP, certHeaders: t.ClientCertHeaders}
	if cfg.Admin.Enabled {
		p.adminPrefix = []byte(cfg.Admin.Prefix)
	}
	if t.HSTS.MaxAge > 0 {
		v := "max-age=" + strconv.FormatInt(int64(t.HSTS.MaxAge.D()/time.Second), 10)
		if t.HSTS.IncludeSubdomains {
			v += "; includeSubDomains"
		}
		p.hsts = []byte(v)
	}
	_, p.tlsPort, _ = net.SplitHostPort(t.Listen)
	return p
}

// newEdgeTLS loads the certificates of cfg and prepares the listener's
// config. It returns nil when server.tls is not configured.
func (s *Server) newEdgeTLS(cfg *config.Config) (*edgeTLS, error) {
	if cfg.Server.TLS == nil {
		return nil, nil
	}
	e := &edgeTLS{stop: make(chan struct{})}
	if a := cfg.Server.TLS.ACME; a.Enabled {
		m, err := newACME(a, func(host string) bool { return e.certs.Load().acme[host] })
		if err != nil {
			return nil, err
		}
		e.acme = m
		// Answers only challenge paths (edgeRequest sends no other).
		e.acmeHTTP = fasthttpadaptor.NewFastHTTPHandler(m.HTTPHandler(nil))
	}
	cs, err := loadCertSet(cfg, e.acme)
	if err != nil {
		return nil, err
	}
	e.certs.Store(cs)
	e.base = &tls.Config{
		MinVersion: cfg.Server.TLS.MinTLSVersion(),
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return e.certs.Load().conf, nil
		},
		// Unused: GetConfigForClient always answers. Set so that
		// crypto/tls accepts the config as a server config.
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return e.certs.Load().lookup(strings.ToLower(hello.ServerName)).cert, nil
		},
	}
	if cfg.Server.TLS.HTTP2.Enabled {
		e.h2, e.h2Cfg = s.newH2(cfg)
		e.maxH2Conns = int64(cfg.Server.MaxConns)
	}
	return e, nil
}

// loadCertSet reads every certificate file cfg names.
func loadCertSet(cfg *config.Config, m *autocert.Manager) (*certSet, error) {
	t := cfg.Server.TLS
	cs := &certSet{
		exact: make(map[string]*certEntry),
		wild:  make(map[string]*certEntry),
		files: make(map[string]time.Time),
	}
	byFiles := make(map[[2]string]*certEntry)
	load := func(certFile, keyFile string) (*certEntry, error) {
		k := [2]string{certFile, keyFile}
		if e, ok := byFiles[k]; ok {
			return e, nil
		}
		for _, f := range k {
			st, err := os.Stat(f)
			if err != nil {
				return nil, err
			}
			cs.files[f] = st.ModTime()
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("certificate %q and key %q: %w", certFile, keyFile, err)
		}
		e := newCertEntry(&c)
		byFiles[k] = e
		return e, nil
	}
	var err error
	if cs.def, err = load(t.CertFile, t.KeyFile); err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	if m != nil {
		cs.acme = make(map[string]bool)
	}
	for i := range cfg.Tenants {
		tn := &cfg.Tenants[i]
		if tn.TLS == nil && m != nil {
			for _, d := range tn.Domains {
				if !strings.HasPrefix(d, "*.") && !isIP(d) {
					cs.acme[d] = true
				}
			}
		}
		if tn.TLS == nil {
			continue
		}
		e, err := load(tn.TLS.CertFile, tn.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tenant %q: tls: %w", tn.Name, err)
		}
		for _, d := range tn.Domains {
			if rest, ok := strings.CutPrefix(d, "*."); ok {
				cs.wild[rest] = e
			} else {
				cs.exact[d] = e
			}
		}
	}
	conf := &tls.Config{
		MinVersion: t.MinTLSVersion(),
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := strings.ToLower(hello.ServerName)
			if m != nil && cs.acme[name] {
				// TLS-ALPN-01 challenges and the managed
				// certificates alike.
				return m.GetCertificate(hello)
			}
			return cs.lookup(name).cert, nil
		},
		NextProtos: []string{"http/1.1"},
	}
	if t.HTTP2.Enabled {
		conf.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
	}
	if m != nil {
		conf.NextProtos = append(conf.NextProtos, acme.ALPNProto)
	}
	if t.ClientCAFile != "" {
		pool, err := config.LoadCertPool(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("server.tls.client_ca_file: %w", err)
		}
		if st, err := os.Stat(t.ClientCAFile); err == nil {
			cs.files[t.ClientCAFile] = st.ModTime()
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
		if t.ClientAuth == "verify_if_given" {
			conf.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	cs.conf = conf
	return cs, nil
}

func newCertEntry(c *tls.Certificate) *certEntry {
	e := &certEntry{cert: c, names: make(map[string]struct{}), wild: make(map[string]struct{})}
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return e
	}
	for _, n := range leaf.DNSNames {
		n = strings.ToLower(n)
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			e.wild[rest] = struct{}{}
		} else {
			e.names[n] = struct{}{}
		}
	}
	for _, ip := range leaf.IPAddresses {
		e.names[ip.String()] = struct{}{}
	}
	return e
}

// ReloadCertificates re-reads the certificate, key and client CA files of
// the current config and swaps them in for new handshakes; connections
// already open keep theirs. On error the certificates in use stay. A
// server without server.tls has nothing to reload.
func (s *Server) ReloadCertificates() error {
	if s.tls == nil {
		return nil
	}
	cs, err := loadCertSet(s.snap.Load().cfg, s.tls.acme)
	if err != nil {
		return fmt.Errorf("server: reload certificates: %w", err)
	}
	s.tls.certs.Store(cs)
	return nil
}

// watchCerts reloads the certificates when one of their files changes
// (modification time), until stop.
func (s *Server) watchCerts(interval time.Duration) {
	defer s.tls.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("certificate watcher panicked", "component", "server", "panic", fmt.Sprint(r))
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-s.tls.stop:
			return
		case <-tick.C:
		}
		changed := false
		for f, mt := range s.tls.certs.Load().files {
			if st, err := os.Stat(f); err == nil && !st.ModTime().Equal(mt) {
				changed = true
				break
			}
		}
		if !changed {
			continue
		}
		if err := s.ReloadCertificates(); err != nil {
			s.log.Error("certificate files changed but cannot be loaded; keeping the current ones",
				"component", "server", "error", err.Error())
			continue
		}
		s.log.Info("certificates reloaded", "component", "server")
	}
}

// ListenAndServeTLS listens on server.tls.listen and serves until Shutdown.
func (s *Server) ListenAndServeTLS() error {
	if s.tls == nil {
		return errors.New("server: server.tls is not configured")
	}
	ln, err := net.Listen("tcp", s.snap.Load().cfg.Server.TLS.Listen)
	if err != nil {
		return err
	}
	return s.ServeTLS(ln)
}

// ServeTLS serves TLS on ln (a plain TCP listener) until Shutdown: HTTP/2
// for connections that negotiate h2, HTTP/1.1 on the same fasthttp.Server
// as Serve for the rest. Serve starts the health checks; ServeTLS does not.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tls == nil {
		return errors.New("server: server.tls is not configured")
	}
	e := s.tls
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		p := strconv.Itoa(ta.Port)
		e.port.Store(&p)
	}
	cfg := s.snap.Load().cfg
	tl := &tlsListener{
		Listener: ln,
		conns:    make(chan net.Conn),
		closed:   make(chan struct{}),
		// Handshakes in progress at once: each is a goroutine until
		// it completes or header_timeout passes.
		handshakes: make(chan struct{}, min(cfg.Server.MaxConns, 4096)),
	}
	e.lnMu.Lock()
	e.ln = tl
	e.lnMu.Unlock()
	e.wg.Add(2)
	go s.watchCerts(certWatchInterval)
	go s.acceptTLS(tl, cfg.Server.HeaderTimeout.D())
	s.log.Info("listening", "component", "server", "addr", ln.Addr().String(), "tls", true,
		"http2", e.h2 != nil)
	return s.srv.Serve(tl)
}

// TLSAddr returns the address the TLS listener listens on, or nil.
func (s *Server) TLSAddr() net.Addr {
	if s.tls == nil {
		return nil
	}
	s.tls.lnMu.Lock()
	defer s.tls.lnMu.Unlock()
	if s.tls.ln == nil {
		return nil
	}
	return s.tls.ln.Addr()
}

// acceptTLS accepts TCP connections and handshakes each in its own
// goroutine, so a slow client cannot hold up the others: h2 connections
// are served there, the rest are handed to fasthttp through tl.
func (s *Server) acceptTLS(tl *tlsListener, handshakeTimeout time.Duration) {
	defer s.tls.wg.Done()
	for {
		c, err := tl.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			tl.Close()
			return
		}
		select {
		case tl.handshakes <- struct{}{}:
		default:
			// Too many handshakes in flight: shed this one rather
			// than queue it behind slow clients.
			c.Close()
			continue
		}
		s.tls.wg.Add(1)
		go s.handshake(tl, c, handshakeTimeout)
	}
}

func (s *Server) handshake(tl *tlsListener, c net.Conn, timeout time.Duration) {
	defer s.tls.wg.Done()
	tc := tls.Server(c, s.tls.base)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	err := tc.Handshake()
	<-tl.handshakes
	if err != nil {
		s.log.Debug("TLS handshake failed", "component", "server", "remote", c.RemoteAddr().String(), "error", err.Error())
		c.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == acme.ALPNProto {
		// A TLS-ALPN-01 validation: the handshake was all of it
		// (RFC 8737 3).
		tc.Close()
		return
	}
	if s.tls.h2 != nil && tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
		// fasthttp's Concurrency counts the HTTP/1.1 connections; the
		// HTTP/2 ones are capped here, by the same max_conns.
		defer s.tls.h2Conns.Add(-1)
		if s.tls.h2Conns.Add(1) > s.tls.maxH2Conns {
			tc.Close()
			return
		}
		s.serveH2(tc)
		return
	}
	select {
	case tl.conns <- tc:
	case <-tl.closed:
		tc.Close()
	}
}

// tlsListener hands handshaken TLS connections to fasthttp.Server.Serve.
type tlsListener struct {
	net.Listener
	conns      chan net.Conn
	closed     chan struct{}
	closeOnce  sync.Once
	handshakes chan struct{}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.Listener.Close()
	})
	return err
}

// shutdownTLS stops the TLS side: the watcher, and the HTTP/2 connections
// (GOAWAY, then waiting for their streams until ctx is done, then closed).
// fasthttp closes the listener and its own connections.
func (s *Server) shutdownTLS(ctx context.Context) {
	e := s.tls
	if e == nil {
		return
	}
	e.stopOnce.Do(func() { close(e.stop) })
	e.lnMu.Lock()
	if e.ln != nil {
		e.ln.Close()
	}
	e.lnMu.Unlock()
	if e.h2Cfg != nil {
		e.h2Cfg.shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if e.h2Cfg != nil {
			e.h2Cfg.closeAll()
		}
		<-done
	}
}

// edgeRequest applies server.tls to a request before admin and tenant
// matching and reports whether it answered: the redirect to https on the
// plain listener, 421 for a Host the connection's certificate does not
// cover, and the client-certificate headers.
func (s *Server) edgeRequest(ctx *fasthttp.RequestCtx, rs *reqState, snap *snapshot) bool {
	p := snap.edge
	h := &ctx.Request.Header
	if p.certHeaders {
		// Never the client's: the gateway alone sets these.
		h.DelBytes(headerClientCertSubject)
		h.DelBytes(headerClientCertSANs)
		h.DelBytes(headerClientCertFingerprint)
	}
	if !ctx.IsTLS() {
		if s.tls != nil && s.tls.acme != nil && bytes.HasPrefix(ctx.Path(), acmeChallengePath) {
			s.tls.acmeHTTP(ctx)
			return true
		}
		if p.redirect && !(len(p.adminPrefix) > 0 && hasSegmentPrefix(ctx.Path(), p.adminPrefix)) {
			s.redirectHTTPS(ctx, p)
			return true
		}
		return false
	}
	st := connState(ctx)
	if s.tls != nil {
		var buf [256]byte
		host := hostOnly(buf[:0], ctx.Host())
		cs := s.tls.certs.Load()
		sni := strings.ToLower(st.ServerName)
		covered := false
		if cs.acme[sni] {
			// An ACME certificate names exactly its domain.
			covered = string(host) == sni
		} else {
			covered = cs.lookup(sni).covers(host)
		}
		if !covered {
			// RFC 9110 15.5.20: the connection was set up for another
			// origin; the client may retry on a new connection.
			rs.errKind = codeMisdirected
			writeError(ctx, rs.reqID, fasthttp.StatusMisdirectedRequest, codeMisdirected,
				"this connection's certificate does not cover the requested host")
			return true
		}
	}
	if p.certHeaders && len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0 {
		ci := clientCert(st.VerifiedChains[0][0])
		h.SetBytesKV(headerClientCertSubject, []byte(ci.Subject))
		h.SetBytesKV(headerClientCertSANs, []byte(strings.Join(ci.SANs, ",")))
		h.SetBytesKV(headerClientCertFingerprint, []byte(ci.Fingerprint))
	}
	return false
}

// finishEdge adds the HSTS header to an answer over TLS (RFC 6797 7.2:
// never over plain HTTP).
func finishEdge(ctx *fasthttp.RequestCtx, p *edgePolicy) {
	if p.hsts != nil && ctx.IsTLS() {
		ctx.Response.Header.SetCanonical(headerStrictTransport, p.hsts)
	}
}

// redirectHTTPS answers 308 to the same host and request target on the
// TLS listener's port.
func (s *Server) redirectHTTPS(ctx *fasthttp.RequestCtx, p *edgePolicy) {
	port := p.tlsPort
	if s.tls != nil {
		if bound := s.tls.port.Load(); bound != nil {
			port = *bound
		}
	}
	var buf [256]byte
	host := ctx.Host()
	if h, _, err := net.SplitHostPort(string(host)); err == nil {
		host = []byte(h)
	}
	loc := append(buf[:0], "https://"...)
	if bytes.IndexByte(host, ':') >= 0 {
		loc = append(append(append(loc, '['), host...), ']')
	} else {
		loc = append(loc, host...)
	}
	if port != "443" && port != "" {
		loc = append(append(loc, ':'), port...)
	}
	loc = append(loc, ctx.RequestURI()...)
	ctx.Response.Header.Set("Location", string(loc))
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
}

// connState returns the TLS state of ctx's connection. A *tls.Conn is read
// without allocating; other TLS conns (fasthttp's per-IP wrapper, the
// HTTP/2 adapter's) through fasthttp.
func connState(ctx *fasthttp.RequestCtx) tls.ConnectionState {
	switch c := ctx.Conn().(type) {
	case *tls.Conn:
		return c.ConnectionState()
	case *h2Conn:
		return c.ConnectionState()
	}
	if st := ctx.TLSConnectionState(); st != nil {
		return *st
	}
	return tls.ConnectionState{}
}

// hostOnly appends host without its port, lowercased, IPv6 without
// brackets, to dst.
func hostOnly(dst, host []byte) []byte {
	if len(host) > 0 && host[0] == '[' {
		if i := bytes.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	} else if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host[:i], ':') < 0 {
		host = host[:i]
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// tlsInfo describes ctx's TLS connection for req.TLS; ok is false on a
// plain connection.
func tlsInfo(ctx *fasthttp.RequestCtx) (luavm.TLSInfo, bool) {
	if !ctx.IsTLS() {
		return luavm.TLSInfo{}, false
	}
	st := connState(ctx)
	info := luavm.TLSInfo{ServerName: st.ServerName, Version: "1.2"}
	if st.Version == tls.VersionTLS13 {
		info.Version = "1.3"
	}
	if len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0 {
		c := clientCert(st.VerifiedChains[0][0])
		info.Client = &c
	}
	return info, true
}

func clientCert(c *x509.Certificate) luavm.ClientCert {
	sum := sha256.Sum256(c.Raw)
	ci := luavm.ClientCert{Subject: c.Subject.String(), Fingerprint: hex.EncodeToString(sum[:])}
	ci.SANs = append(ci.SANs, c.DNSNames...)
	ci.SANs = append(ci.SANs, c.EmailAddresses...)
	for _, ip := range c.IPAddresses {
		ci.SANs = append(ci.SANs, ip.String())
	}
	for _, u := range c.URIs {
		ci.SANs = append(ci.SANs, u.String())
	}
	return ci
}

// upstreamTLSConfig builds the TLS client config of an https:// upstream
// from its tls block, or the tenant's upstream_tls.
func upstreamTLSConfig(tc *config.Tenant, uc config.Upstream, host string) (*tls.Config, error) {
	conf := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	ut := uc.TLS
	if ut == nil {
		ut = tc.UpstreamTLS
	}
	if ut == nil {
		return conf, nil
	}
	if ut.ServerName != "" {
		conf.ServerName = ut.ServerName
	}
	conf.InsecureSkipVerify = ut.InsecureSkipVerify
	if ut.CAFile != "" {
		pool, err := config.LoadCertPool(ut.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: tls: %w", uc.URL, err)
		}
		conf.RootCAs = pool
	}
	if ut.CertFile != "" {
		c, err := tls.LoadX509KeyPair(ut.CertFile, ut.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: tls: %w", uc.URL, err)
		}
		conf.Certificates = []tls.Certificate{c}
	}
	return conf, nil
}

// newACME builds the ACME manager: the account and certificates kept in
// a.Storage, certificates only for names allowed says yes to.
func newACME(a config.ACME, allowed func(string) bool) (*autocert.Manager, error) {
	hc := http.DefaultClient
	if a.CAFile != "" {
		pool, err := config.LoadCertPool(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("server.tls.acme.ca_file: %w", err)
		}
		hc = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}}
	}
	if err := os.MkdirAll(a.Storage, 0o700); err != nil {
		return nil, fmt.Errorf("server.tls.acme.storage: %w", err)
	}
	return &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  autocert.DirCache(a.Storage),
		HostPolicy: func(_ context.Context, host string) error {
			// autocert's HTTP-01 handler passes the Host header as
			// sent, port included.
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !allowed(strings.ToLower(host)) {
				return fmt.Errorf("acme: %q is not a tenant domain", host)
			}
			return nil
		},
		Email:       a.Email,
		RenewBefore: a.RenewBefore.D(),
		Client:      &acme.Client{DirectoryURL: a.CA, HTTPClient: hc, UserAgent: "keystone"},
	}, nil
}

func isIP(s string) bool { return net.ParseIP(s) != nil }
