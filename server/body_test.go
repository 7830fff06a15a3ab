package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// patternReader yields n deterministic bytes without holding them in memory.
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternSum(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, &patternReader{n: n})
	return hex.EncodeToString(h.Sum(nil))
}

// heapPeak samples the heap in use while f runs.
func heapPeak(f func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak.Load()
}

// Not parallel: it measures the heap of the whole test process.
func TestLargeUploadStreamsWithBoundedMemory(t *testing.T) {
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		h := sha256.New()
		n, err := io.Copy(h, ctx.RequestBodyStream())
		if err != nil {
			ctx.SetStatusCode(500)
			return
		}
		fmt.Fprintf(ctx, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})
	g := startGateway(t, yamlf(`
server: {max_request_body: 200MiB}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	const size = 100 << 20
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	for _, chunked := range []bool{false, true} {
		var status int
		var body string
		peak := heapPeak(func() {
			c, err := net.Dial("tcp", g.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			bw := bufio.NewWriterSize(c, 64<<10)
			if chunked {
				fmt.Fprintf(bw, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
				src := &patternReader{n: size}
				buf := make([]byte, 32<<10)
				for {
					n, _ := src.Read(buf)
					if n == 0 {
						break
					}
					fmt.Fprintf(bw, "%x\r\n", n)
					bw.Write(buf[:n])
					bw.WriteString("\r\n")
				}
				bw.WriteString("0\r\n\r\n")
			} else {
				fmt.Fprintf(bw, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
				io.Copy(bw, &patternReader{n: size})
			}
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			if err := resp.Read(bufio.NewReader(c)); err != nil {
				t.Fatal(err)
			}
			status, body = resp.StatusCode(), string(resp.Body())
		})
		if want := fmt.Sprintf("%d %s", size, patternSum(size)); status != 200 || body != want {
			t.Fatalf("chunked=%v: upstream got %d %q, want %q", chunked, status, body, want)
		}
		if grew := int64(peak) - int64(base.HeapInuse); grew > 48<<20 {
			t.Errorf("chunked=%v: a 100 MiB upload grew the heap by %d MiB; it must stream", chunked, grew>>20)
		}
	}
}

func TestLargeDownloadStreamsWhenConfigured(t *testing.T) {
	const size = 64 << 20
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyStream(&patternReader{n: size}, size)
	})
	g := startGateway(t, yamlf(`
tenants:
  - {name: stream, path_prefix: /stream, stream_response_body: true, upstreams: [{url: %q}]}
  - {name: buffered, path_prefix: /buffered, max_response_body: 1MiB, retries: {attempts: 0}, upstreams: [{url: %q}]}
`, up.url(), up.url()))
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var sum string
	var n int64
	peak := heapPeak(func() {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /stream/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		br := bufio.NewReader(c)
		var hdr fasthttp.ResponseHeader
		if err := hdr.Read(br); err != nil {
			t.Fatal(err)
		}
		if hdr.StatusCode() != 200 || hdr.ContentLength() != size {
			t.Fatalf("status %d length %d", hdr.StatusCode(), hdr.ContentLength())
		}
		h := sha256.New()
		n, _ = io.Copy(h, br)
		sum = hex.EncodeToString(h.Sum(nil))
	})
	if n != size || sum != patternSum(size) {
		t.Fatalf("streamed download: %d bytes, sum %s", n, sum)
	}
	if grew := int64(peak) - int64(base.HeapInuse); grew > 32<<20 {
		t.Errorf("a streamed 64 MiB download grew the heap by %d MiB", grew>>20)
	}
	errorBody(t, g.get("/buffered/file"), 502, "upstream_error")
}

func TestChunkedUpstreamResponsePassesThrough(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := range 100 {
				fmt.Fprintf(w, "line %d\n", i)
				w.Flush()
			}
		})
	})
	g := startGateway(t, yamlf(`
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	resp := g.get("/chunks")
	lines := strings.Split(strings.TrimSpace(string(resp.Body())), "\n")
	if resp.StatusCode() != 200 || len(lines) != 100 || lines[99] != "line 99" {
		t.Fatalf("status %d, %d lines", resp.StatusCode(), len(lines))
	}
}

func TestFasthttpDoesNotRetryBehindKeystonesBack(t *testing.T) {
	t.Parallel()
	// An upstream that accepts and closes every connection without
	// answering: fasthttp's HostClient would retry a GET up to 5 times.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			buf := make([]byte, 4096)
			_, _ = c.Read(buf)
			c.Close()
		}
	}()
	g := startGateway(t, yamlf(`
tenants:
  - {name: api, path_prefix: /, retries: {attempts: 0}, upstreams: [{url: "http://%s"}]}
`, ln.Addr()))
	errorBody(t, g.get("/x"), 502, "upstream_error")
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != 1 {
		t.Errorf("upstream saw %d connections for one request with retries off, want 1", n)
	}
}
