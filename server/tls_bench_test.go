package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// benchTLSGateway starts a gateway with the TLS listener in front of an
// echo upstream, for the benchmarks below.
func benchTLSGateway(b *testing.B) (*testCA, string) {
	b.Helper()
	ca := newTestCA(b)
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("a"), upstreamLen)
	upstream := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}}
	go upstream.Serve(uln) //nolint:errcheck
	b.Cleanup(func() { _ = upstream.Shutdown() })
	cert, key := ca.issue("default", false, "localhost", "127.0.0.1")
	cfg := loadConfig(b, yamlf(`
server:
  tls: {listen: "127.0.0.1:0", cert_file: %q, key_file: %q}
logging: {access_log: false}
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: %q}]
`, cert, key, "http://"+uln.Addr().String()))
	srv, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.ServeTLS(ln) //nolint:errcheck
	return ca, ln.Addr().String()
}

// BenchmarkH2Proxy bounds the HTTP/2 path: a GET over one shared HTTP/2
// connection (x/net/http2 client), through the adapter and the pipeline
// to an HTTP/1.1 upstream on loopback. It measures the whole round trip,
// TLS and both hops included; allocs/op are the adapter's plus
// x/net/http2's on both sides.
func BenchmarkH2Proxy(b *testing.B) {
	ca, addr := benchTLSGateway(b)
	c := h2Client(ca, addr, "localhost")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get("https://localhost/bench")
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkTLSHandshake measures TLS handshakes against the TLS listener
// (ECDSA P-256 certificate, X25519): full TLS 1.3 and TLS 1.2 handshakes,
// and resumed TLS 1.2 ones (session tickets, the abbreviated handshake
// without key exchange or certificate). TLS 1.3 resumption is left out: its
// tickets arrive after the handshake, and waiting for them would be most
// of what was measured. Each op is a dial, a handshake and a close; the
// client's CPU is counted too, on the same machine.
func BenchmarkTLSHandshake(b *testing.B) {
	ca, addr := benchTLSGateway(b)
	run := func(b *testing.B, cfg *tls.Config) {
		b.ReportAllocs()
		resumed := 0
		for b.Loop() {
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if c.ConnectionState().DidResume {
				resumed++
			}
			c.Close()
		}
		b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
	}
	b.Run("full-tls13", func(b *testing.B) {
		run(b, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"})
	})
	b.Run("full-tls12", func(b *testing.B) {
		run(b, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	})
	b.Run("resumed-tls12", func(b *testing.B) {
		run(b, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(1)})
	})
}
