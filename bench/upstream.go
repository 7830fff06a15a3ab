package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The upstream is the origin every target proxies to. It runs in its own
// process (the harness re-executed with roleEnv=upstream) so that neither
// the targets nor the load generator share its Go runtime and GC.
//
// It matches on path suffixes, not whole paths, so it answers the same
// whatever prefix a proxy strips or keeps:
//
//	.../bytes/N   N bytes of compressible text; gzip-compressed with
//	              "Content-Encoding: gzip" when the request accepts gzip
//	.../plain/N   the same N bytes, never compressed (targets that
//	              compress themselves)
//	.../echo      the number of request body bytes received, in decimal
//	.../health    "ok"
//
// A "/delay/MS" segment anywhere before those makes the answer wait MS
// milliseconds (at most 10s): a slow upstream.
//
// When the request carries X-Bench (set by the Lua middleware under test),
// the answer carries X-Bench-Seen with its value, so the load generator can
// check that the middleware ran before the proxy.

// upstreamHandler serves the routes above; bodies are built once per size.
type upstreamHandler struct {
	bodies sync.Map // int → *upstreamBody; written once per size, then read-only
}

// upstreamBody is one response size, plain and gzip-compressed.
type upstreamBody struct {
	plain, gz []byte
}

// body returns the cached body of size n, building it on first use.
func (h *upstreamHandler) body(n int) *upstreamBody {
	if b, ok := h.bodies.Load(n); ok {
		return b.(*upstreamBody)
	}
	b := &upstreamBody{plain: makeBody(n)}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	zw.Write(b.plain)
	zw.Close()
	b.gz = buf.Bytes()
	actual, _ := h.bodies.LoadOrStore(n, b)
	return actual.(*upstreamBody)
}

// makeBody returns n bytes of JSON-like text. Real API payloads compress
// 4-8x; random bytes would not compress and a repeated byte would compress
// absurdly well, either of which would misstate the gzip scenario.
func makeBody(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"name":"item-%d","price":%d.%02d,"tags":["bench","keystone"]},`+"\n", i, i*7919%10007, i*31%997, i%100)
	}
	return b.Bytes()[:n]
}

var (
	suffixBytes  = []byte("/bytes/")
	suffixPlain  = []byte("/plain/")
	suffixEcho   = []byte("/echo")
	suffixHealth = []byte("/health")
	segDelay     = []byte("/delay/")
	headerBench  = []byte("X-Bench")
)

// ServeHTTP is the fasthttp handler.
func (h *upstreamHandler) ServeHTTP(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if i := bytes.Index(path, segDelay); i >= 0 {
		ms := path[i+len(segDelay):]
		if j := bytes.IndexByte(ms, '/'); j >= 0 {
			ms = ms[:j]
		}
		n, err := strconv.Atoi(string(ms))
		if err != nil || n < 0 || n > 10000 {
			ctx.Error("bad delay", fasthttp.StatusBadRequest)
			return
		}
		// One sleeping goroutine per request: the upstream's server
		// has no concurrency limit that could make it the bottleneck.
		time.Sleep(time.Duration(n) * time.Millisecond)
	}
	if v := ctx.Request.Header.PeekBytes(headerBench); len(v) > 0 {
		ctx.Response.Header.SetBytesV("X-Bench-Seen", v)
	}
	switch {
	case bytes.HasSuffix(path, suffixEcho):
		ctx.SetContentType("text/plain")
		ctx.Response.SetBodyString(strconv.Itoa(len(ctx.Request.Body())))
	case bytes.Contains(path, suffixPlain):
		i := bytes.LastIndex(path, suffixPlain)
		n, err := strconv.Atoi(string(path[i+len(suffixPlain):]))
		if err != nil || n < 0 || n > 64<<20 {
			ctx.Error("bad size", fasthttp.StatusBadRequest)
			return
		}
		ctx.SetContentType("application/json")
		ctx.Response.SetBodyRaw(h.body(n).plain)
	case bytes.Contains(path, suffixBytes):
		i := bytes.LastIndex(path, suffixBytes)
		n, err := strconv.Atoi(string(path[i+len(suffixBytes):]))
		if err != nil || n < 0 || n > 64<<20 {
			ctx.Error("bad size", fasthttp.StatusBadRequest)
			return
		}
		b := h.body(n)
		ctx.SetContentType("application/json")
		// Vary tells caches the body depends on Accept-Encoding
		// (RFC 9110 §12.5.5); proxies must pass both headers through.
		ctx.Response.Header.Set("Vary", "Accept-Encoding")
		if ctx.Request.Header.HasAcceptEncoding("gzip") {
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			ctx.Response.SetBodyRaw(b.gz)
			return
		}
		ctx.Response.SetBodyRaw(b.plain)
	case bytes.HasSuffix(path, suffixHealth):
		ctx.SetBodyString("ok")
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}

// upstreamHello is the line the upstream process prints once it listens.
type upstreamHello struct {
	Addr string `json:"addr"`
}

// runUpstream is the upstream process: it listens on addr ("127.0.0.1:0"
// picks a port), prints an upstreamHello line on stdout, and serves until
// stdin closes — which happens when the harness exits, however it exits.
func runUpstream(addr string) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	h := &upstreamHandler{}
	srv := &fasthttp.Server{
		Handler: h.ServeHTTP,
		Name:    "bench-upstream",
		// Large enough for the 1,000-tenant and 10k-connection scenarios:
		// the upstream must never be the reason a target fails.
		Concurrency:        1 << 20,
		ReadBufferSize:     16 << 10,
		MaxRequestBodySize: 128 << 20,
		NoDefaultDate:      true,
	}
	if err := json.NewEncoder(os.Stdout).Encode(upstreamHello{Addr: ln.Addr().String()}); err != nil {
		return err
	}
	go func() {
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		os.Exit(0)
	}()
	return srv.Serve(ln)
}
