package server

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// HTTP/2 on the TLS listener: golang.org/x/net/http2 speaks the protocol
// (framing, flow control, HPACK, stream limits, the rapid-reset and
// CONTINUATION-flood defences), and each stream's request runs through the
// same pipeline as HTTP/1.1 (Server.handle) on a pooled fasthttp.RequestCtx.
// The adapter copies the request in and the response out; fasthttp's
// HTTP/1.1 path never sees it.
//
// What goes upstream is an HTTP/1.1 request: :method, :path and :authority
// become the request line and Host; HTTP/2 has no connection-specific
// headers to strip (x/net/http2 refuses a request carrying them, and "TE"
// other than "trailers"), and the proxy stage strips hop-by-hop headers
// as for any request.

// h2Conn is an HTTP/2 connection as fasthttp sees it: a TLS conn, so that
// ctx.IsTLS() holds and X-Forwarded-Proto says https. The adapter never
// reads or writes it through fasthttp.
type h2Conn struct{ *tls.Conn }

// http2Base is the http.Server whose Shutdown starts the graceful shutdown
// (GOAWAY) of every HTTP/2 connection, and the connections, for closing
// those still open when the grace ends.
type http2Base struct {
	hs    *http.Server
	mu    sync.Mutex
	conns map[*tls.Conn]struct{}
}

func (b *http2Base) shutdown(ctx context.Context) { _ = b.hs.Shutdown(ctx) }

func (b *http2Base) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		c.Close()
	}
}

// newH2 configures x/net/http2 from the config.
func (s *Server) newH2(cfg *config.Config) (*http2.Server, *http2Base) {
	sc := cfg.Server
	h2 := &http2.Server{
		MaxConcurrentStreams: uint32(sc.TLS.HTTP2.MaxConcurrentStreams),
		IdleTimeout:          sc.IdleTimeout.D(),
		// Flow-control windows: 1 MiB per stream and 4 MiB per
		// connection bound what a client can make the gateway buffer.
		MaxUploadBufferPerStream:     1 << 20,
		MaxUploadBufferPerConnection: 4 << 20,
		// The protocol's default frame size (RFC 9113 4.2), not
		// x/net's 1 MiB: larger frames buy a proxy nothing, and a
		// peer sending one without asking gets FRAME_SIZE_ERROR.
		MaxReadFrameSize: 16 << 10,
		CountError: func(errType string) {
			s.log.Debug("http2 protocol error", "component", "server", "error", errType)
		},
	}
	hs := &http.Server{
		// SETTINGS_MAX_HEADER_LIST_SIZE, and the limit x/net/http2
		// enforces on HEADERS plus CONTINUATION frames (a larger
		// header list is answered 431).
		MaxHeaderBytes: int(sc.MaxHeaderBytes + sc.MaxRequestLine),
		ReadTimeout:    sc.ReadTimeout.D(),
		WriteTimeout:   sc.WriteTimeout.D(),
		// x/net/http2 logs connection errors (a client's protocol
		// violations) here: debug lines of the server component.
		ErrorLog: slog.NewLogLogger(s.log.With("component", "server").Handler(), slog.LevelDebug),
	}
	// ConfigureServer cannot fail here: no cipher suites are set.
	_ = http2.ConfigureServer(hs, h2)
	return h2, &http2Base{hs: hs, conns: make(map[*tls.Conn]struct{})}
}

// serveH2 serves one HTTP/2 connection until it closes.
func (s *Server) serveH2(tc *tls.Conn) {
	b := s.tls.h2Cfg
	b.mu.Lock()
	b.conns[tc] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, tc)
		b.mu.Unlock()
	}()
	s.tls.h2.ServeConn(tc, &http2.ServeConnOpts{
		BaseConfig: b.hs,
		Handler:    &h2Handler{s: s, conn: &h2Conn{tc}},
	})
}

// h2Handler runs the pipeline for the streams of one HTTP/2 connection.
type h2Handler struct {
	s    *Server
	conn *h2Conn
}

// h2Ctxs pools the RequestCtx of HTTP/2 streams. A ctx is owned by one
// stream from get to put; it is Reset before Put.
var h2Ctxs = sync.Pool{New: func() any { return new(fasthttp.RequestCtx) }}

// h2CopyBufs pools the buffers streamed response bodies are copied with.
var h2CopyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := h2Ctxs.Get().(*fasthttp.RequestCtx)
	ctx.Init2(h.conn, fasthttpLogger{h.s.log}, true)
	defer func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.ResetUserValues()
		h2Ctxs.Put(ctx)
	}()

	req := &ctx.Request
	req.Header.SetMethod(r.Method)
	req.Header.SetRequestURI(r.RequestURI)
	req.Header.SetHost(r.Host)
	for k, vv := range r.Header {
		for _, v := range vv {
			req.Header.Add(k, v)
		}
	}
	snap := h.s.snap.Load()
	replay := int64(snap.cfg.Server.StreamRequestBodyOver)
	switch cl := r.ContentLength; {
	case cl == 0 || r.Body == nil || r.Body == http.NoBody:
	case cl > 0 && cl <= replay:
		// Small bodies are read whole, as fasthttp reads an HTTP/1.1
		// body under stream_request_body_over: they can be retried.
		req.Header.SetContentLength(int(cl))
		if _, err := io.CopyN(req.BodyWriter(), r.Body, cl); err != nil {
			// The client reset the stream or sent less than it
			// announced: nothing to answer.
			return
		}
	default:
		// A body of unknown or large size streams to the upstream;
		// the pipeline counts it against max_request_body.
		// noClose: fasthttp closes a stream it replaces (the
		// pipeline puts its size check in front), and x/net/http2
		// owns r.Body.
		req.SetBodyStream(noClose{r.Body}, int(cl))
	}

	h.s.handle(ctx)

	resp := &ctx.Response
	hdr := w.Header()
	for k, v := range resp.Header.All() {
		switch string(k) {
		case fasthttp.HeaderContentLength, fasthttp.HeaderConnection, fasthttp.HeaderTransferEncoding,
			"Keep-Alive", "Proxy-Connection", "Upgrade":
			// Connection-specific (RFC 9113 8.2.2); the length is
			// set below from the body.
			continue
		}
		hdr[string(k)] = append(hdr[string(k)], string(v))
	}
	if _, ok := hdr[fasthttp.HeaderContentType]; !ok {
		// What the upstream sent: no Content-Type means none, not
		// one net/http sniffs.
		hdr[fasthttp.HeaderContentType] = nil
	}
	status := resp.StatusCode()
	if resp.IsBodyStream() {
		w.WriteHeader(status)
		bp := h2CopyBufs.Get().(*[]byte)
		copyFlush(w, resp.BodyStream(), *bp)
		h2CopyBufs.Put(bp)
		_ = resp.CloseBodyStream()
		return
	}
	body := resp.Body()
	if r.Method == http.MethodHead {
		if n := resp.Header.ContentLength(); n >= 0 {
			hdr[fasthttp.HeaderContentLength] = []string{itoa(n)}
		}
		w.WriteHeader(status)
		return
	}
	if status != http.StatusNoContent && status != http.StatusNotModified && status >= 200 {
		hdr[fasthttp.HeaderContentLength] = []string{itoa(len(body))}
	}
	w.WriteHeader(status)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
}

// noClose hides the Close method of a request body fasthttp must not close.
type noClose struct{ io.Reader }

// copyFlush copies a streamed response body to the client, flushing each
// chunk as it arrives (server-sent events, long polls).
func copyFlush(w http.ResponseWriter, r io.Reader, buf []byte) {
	f, _ := w.(http.Flusher)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func itoa(n int) string {
	var b [20]byte
	return string(fasthttp.AppendUint(b[:0], n))
}
