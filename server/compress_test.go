package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

func TestNegotiate(t *testing.T) {
	t.Parallel()
	all := []coding{codingBr, codingZstd, codingGzip}
	tests := []struct {
		name, ae string
		offered  []coding
		want     coding
		refused  bool
	}{
		{"no field gets identity", "", all, codingNone, false},
		{"a browser's list gets the gateway's first choice", "gzip, deflate, br, zstd", all, codingBr, false},
		{"only gzip", "gzip", all, codingGzip, false},
		{"x-gzip is gzip", "x-gzip", all, codingGzip, false},
		{"the highest qvalue wins over the gateway's order", "br;q=0.5, gzip;q=0.9", all, codingGzip, false},
		{"ties go to the gateway's order", "gzip;q=0.8, zstd;q=0.8", all, codingZstd, false},
		{"q=0 refuses a coding", "br;q=0, gzip", all, codingGzip, false},
		{"everything refused", "br;q=0, gzip;q=0, zstd;q=0", all, codingNone, false},
		{"star covers unlisted codings", "*", all, codingBr, false},
		{"star with q=0 refuses identity too", "gzip;q=0, *;q=0", all, codingNone, true},
		{"identity q=0 is a refusal", "gzip, identity;q=0", all, codingGzip, true},
		{"identity rated above every coding wins", "gzip;q=0.5, identity", all, codingNone, false},
		{"identity explicitly allowed keeps star from refusing it", "*;q=0, identity, gzip", all, codingGzip, false},
		{"codings the gateway does not offer are ignored", "deflate, compress", all, codingNone, false},
		{"only what the tenant offers", "br, gzip;q=0.1", []coding{codingGzip}, codingGzip, false},
		{"case does not matter", "GZIP;Q=1", all, codingGzip, false},
		{"whitespace around elements", "  br ; q=0.2 ,\tgzip ;q=0.3 ", all, codingGzip, false},
		{"a malformed qvalue drops the element", "br;q=2, gzip;q=x, zstd;q=0.001", all, codingZstd, false},
		{"too many decimals is malformed", "br;q=0.0001, gzip", all, codingGzip, false},
		{"other parameters are ignored", "gzip;level=9;q=0.5", all, codingGzip, false},
		{"empty elements are skipped", ",,, ,gzip,,", all, codingGzip, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, refused := negotiate([]byte(tc.ae), tc.offered)
			if got != tc.want || refused != tc.refused {
				t.Errorf("negotiate(%q) = %s, refused %v; want %s, refused %v",
					tc.ae, codingTokens[got], refused, codingTokens[tc.want], tc.refused)
			}
		})
	}
}

// FuzzNegotiate feeds hostile Accept-Encoding values to the parser: it must
// not panic and must only ever pick a coding the tenant offers.
func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{"", "gzip", "br;q=0.5, *;q=0", ";;;", "q=", "gzip;q=", "gzip;q=1.", "gzip;q=1.0000",
		"gzip;q=-1", "*;q=0,identity;q=0", "\x00br", strings.Repeat("gzip;q=0.1,", 1000), "br;q=1;q=0", "identity;q=0.000"} {
		f.Add(s)
	}
	offered := []coding{codingZstd, codingGzip}
	f.Fuzz(func(t *testing.T, ae string) {
		got, _ := negotiate([]byte(ae), offered)
		if got != codingNone && got != codingZstd && got != codingGzip {
			t.Fatalf("negotiate(%q) = %d, not offered", ae, got)
		}
	})
}

// jsonBody is a compressible JSON document of about n bytes.
func jsonBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n-64; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"name":"item %d","price":%d.99,"tags":["a","b"],"in_stock":true}`, i, i, i%100)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func decode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var out []byte
	var err error
	switch enc {
	case "br":
		out, err = fasthttp.AppendUnbrotliBytes(nil, b)
	case "zstd":
		out, err = fasthttp.AppendUnzstdBytes(nil, b)
	case "gzip":
		out, err = fasthttp.AppendGunzipBytes(nil, b)
	case "":
		out = b
	default:
		t.Fatalf("unexpected Content-Encoding %q", enc)
	}
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return out
}

// compressUpstream starts an upstream that answers per path: /json (16
// KiB JSON with a strong ETag), /small, /png, /encoded, /notransform,
// /nocontent, /notmodified, /vary-origin, /vary-ae.
func compressUpstream(t *testing.T) *echo {
	t.Helper()
	body := jsonBody(16 << 10)
	e := startEcho(t, "c")
	e.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json; charset=utf-8")
		ctx.Response.Header.Set("ETag", `"v1"`)
		switch string(ctx.Path()) {
		case "/json":
			ctx.SetBody(body)
		case "/small":
			ctx.SetBody([]byte(`{"ok":true}`))
		case "/png":
			ctx.SetContentType("image/png")
			ctx.SetBody(body)
		case "/encoded":
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			ctx.SetBody(fasthttp.AppendGzipBytes(nil, body))
		case "/notransform":
			ctx.Response.Header.Set("Cache-Control", "public, No-Transform")
			ctx.SetBody(body)
		case "/nocontent":
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		case "/notmodified":
			ctx.SetStatusCode(fasthttp.StatusNotModified)
		case "/vary-origin":
			ctx.Response.Header.Set("Vary", "Origin")
			ctx.SetBody(body)
		case "/vary-ae":
			ctx.Response.Header.Set("Vary", "origin, accept-encoding")
			ctx.SetBody(body)
		}
	})
	return e
}

func TestCompressionCodings(t *testing.T) {
	t.Parallel()
	up := compressUpstream(t)
	g := startGateway(t, yamlf(`
logging: {level: error}
server:
  compression: {enabled: true, algorithms: [br, zstd, gzip], level: 5, min_size: 1KiB,
                types: [text/html, application/json]}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	want := jsonBody(16 << 10)
	for _, enc := range []string{"br", "zstd", "gzip"} {
		t.Run(enc, func(t *testing.T) {
			resp := g.get("/json", "Accept-Encoding", enc)
			if got := string(resp.Header.ContentEncoding()); got != enc {
				t.Fatalf("Content-Encoding = %q, want %q", got, enc)
			}
			if cl := resp.Header.ContentLength(); cl != len(resp.Body()) || cl >= len(want)/3 {
				t.Errorf("Content-Length = %d for a body of %d (identity %d): want the compressed size", cl, len(resp.Body()), len(want))
			}
			if got := decode(t, enc, resp.Body()); !bytes.Equal(got, want) {
				t.Fatalf("decoded body differs: %d bytes, want %d", len(got), len(want))
			}
			if v := string(resp.Header.Peek("Vary")); v != "Accept-Encoding" {
				t.Errorf("Vary = %q, want Accept-Encoding", v)
			}
			if et := string(resp.Header.Peek("ETag")); et != `W/"v1"` {
				t.Errorf("ETag = %q, want the weak W/\"v1\"", et)
			}
		})
	}
}

func TestCompressionLeavesAlone(t *testing.T) {
	t.Parallel()
	up := compressUpstream(t)
	g := startGateway(t, yamlf(`
logging: {level: error}
server:
  compression: {enabled: true, types: [application/json]}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	tests := []struct {
		name, method, path, ae string
		wantEnc, wantVary      string
	}{
		{"no Accept-Encoding", "GET", "/json", "", "", "Accept-Encoding"},
		{"a body under min_size", "GET", "/small", "gzip", "", "Accept-Encoding"},
		{"a body under min_size when identity is refused is compressed", "GET", "/small", "gzip, identity;q=0", "gzip", "Accept-Encoding"},
		{"a type not listed", "GET", "/png", "gzip", "", ""},
		{"an answer already encoded", "GET", "/encoded", "br", "gzip", ""},
		{"Cache-Control: no-transform", "GET", "/notransform", "gzip", "", ""},
		{"HEAD", "HEAD", "/json", "gzip", "", ""},
		{"204", "GET", "/nocontent", "gzip", "", ""},
		{"304", "GET", "/notmodified", "gzip", "", ""},
		{"an upstream's Vary is kept and Accept-Encoding added", "GET", "/vary-origin", "gzip", "gzip", "Origin,Accept-Encoding"},
		{"a Vary that names Accept-Encoding is not repeated", "GET", "/vary-ae", "gzip", "gzip", "origin, accept-encoding"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.ae != "" {
				h = []string{"Accept-Encoding", tc.ae}
			}
			resp := g.do(tc.method, "", tc.path, nil, h...)
			if got := string(resp.Header.ContentEncoding()); got != tc.wantEnc {
				t.Errorf("Content-Encoding = %q, want %q", got, tc.wantEnc)
			}
			var vary []string
			for _, v := range resp.Header.PeekAll("Vary") {
				vary = append(vary, string(v))
			}
			if got := strings.Join(vary, ","); got != tc.wantVary {
				t.Errorf("Vary = %q, want %q", got, tc.wantVary)
			}
			if tc.wantEnc == "" && tc.method == "GET" && resp.StatusCode() == 200 {
				if et := string(resp.Header.Peek("ETag")); et != `"v1"` {
					t.Errorf("ETag = %q, want the upstream's strong \"v1\"", et)
				}
			}
		})
	}
}

func TestCompressionTenantOverride(t *testing.T) {
	t.Parallel()
	up := compressUpstream(t)
	g := startGateway(t, yamlf(`
logging: {level: error}
server:
  compression: {enabled: true, algorithms: [br, gzip], level: 4}
tenants:
  - {name: off, path_prefix: /off, strip_prefix: true, upstreams: [{url: %[1]q}], compression: {enabled: false}}
  - {name: gz, path_prefix: /gz, strip_prefix: true, upstreams: [{url: %[1]q}], compression: {algorithms: [gzip]}}
  - {name: on, path_prefix: /, upstreams: [{url: %[1]q}]}
`, up.url()))
	for path, want := range map[string]string{"/off/json": "", "/gz/json": "gzip", "/json": "br"} {
		resp := g.get(path, "Accept-Encoding", "br, gzip")
		if got := string(resp.Header.ContentEncoding()); got != want {
			t.Errorf("%s: Content-Encoding = %q, want %q", path, got, want)
		}
	}
	cfg := g.srv.snap.Load().cfg
	if gz := cfg.CompressionFor(&cfg.Tenants[1]); !gz.Enabled || gz.Level != 4 || len(gz.Types) == 0 {
		t.Errorf("tenant gz compression = %+v: want enabled, level and types inherited from the server", gz)
	}
}

// TestCompressionStreamed checks that a streamed upstream body is compressed
// as it streams: the client decodes the first chunk while the upstream is
// still holding the second back.
func TestCompressionStreamed(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := startEcho(t, "s")
	chunk := bytes.Repeat([]byte(`{"event":"tick","data":"xxxxxxxxxxxxxxxx"}`+"\n"), 40)
	e.setHandler(func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.Response.Header.Set("ETag", `"s1"`)
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			w.Write(chunk) //nolint:errcheck
			w.Flush()      //nolint:errcheck
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			w.Write(chunk) //nolint:errcheck
		})
	})
	g := startGateway(t, yamlf(`
logging: {level: error}
server: {compression: {enabled: true}}
tenants:
  - {name: s, path_prefix: /, stream_response_body: true, upstreams: [{url: %q}]}
`, e.url()))
	req, _ := http.NewRequest("GET", "http://"+g.addr+"/events", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("ETag") != `W/"s1"` || resp.ContentLength != -1 {
		t.Fatalf("headers %v, length %d: want gzip, a weak ETag and no Content-Length", resp.Header, resp.ContentLength)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len(chunk))
	if _, err := io.ReadFull(zr, first); err != nil {
		t.Fatalf("reading the first chunk while the upstream holds the second: %v", err)
	}
	close(release)
	rest, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(first, chunk) || !bytes.Equal(rest, chunk) {
		t.Fatalf("decoded %d+%d bytes (err %v), want two chunks of %d", len(first), len(rest), err, len(chunk))
	}
}

// TestCompressionRawWire checks the framing a raw HTTP/1.1 client sees: the
// Content-Length of a compressed answer is the compressed size, and the
// connection stays usable for a second request.
func TestCompressionRawWire(t *testing.T) {
	t.Parallel()
	up := compressUpstream(t)
	g := startGateway(t, yamlf(`
logging: {level: error}
server: {compression: {enabled: true}}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, up.url()))
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 {
		fmt.Fprintf(c, "GET /json HTTP/1.1\r\nHost: x\r\nAccept-Encoding: zstd\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || strconv.Itoa(len(b)) != resp.Header.Get("Content-Length") {
			t.Fatalf("request %d: read %d bytes (%v), Content-Length %q", i, len(b), err, resp.Header.Get("Content-Length"))
		}
		if got := decode(t, "zstd", b); !bytes.Equal(got, jsonBody(16<<10)) {
			t.Fatalf("request %d: decoded body differs", i)
		}
	}
}

// BenchmarkCompress measures each coding on a 16 KiB JSON body at the
// default level (5): ns per KiB of input and the compressed size as a share
// of the input ("ratio"). Steady state allocates nothing: encoders and
// buffers are pooled.
func BenchmarkCompress(b *testing.B) {
	body := jsonBody(16 << 10)
	for _, alg := range []string{"br", "zstd", "gzip"} {
		for _, level := range []int{1, 5} {
			b.Run(fmt.Sprintf("%s/level=%d", alg, level), func(b *testing.B) {
				c := newCompressor(config.Compression{Enabled: true, Algorithms: []string{alg}, Level: level,
					MinSize: 1024, Types: []string{"application/json"}})
				ctx := &fasthttp.RequestCtx{}
				ctx.Request.Header.Set("Accept-Encoding", alg)
				var out int
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					ctx.Response.Reset()
					ctx.Response.Header.SetContentType("application/json")
					ctx.Response.SetBody(body)
					c.apply(ctx)
					out = len(ctx.Response.Body())
				}
				if string(ctx.Response.Header.ContentEncoding()) != alg {
					b.Fatalf("not compressed with %s", alg)
				}
				b.ReportMetric(float64(out)/float64(len(body)), "ratio")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(body)/1024), "ns/KiB")
			})
		}
	}
}

// BenchmarkProxyHandlerCompressed is BenchmarkProxyHandler with compression
// on and a client accepting gzip: the 100-byte answers stay under min_size,
// so it bounds what the stage costs an answer it does not compress.
func BenchmarkProxyHandlerCompressed(b *testing.B) {
	s := newBenchServer(b, `
logging: {access_log: false, level: error}
server: {compression: {enabled: true, types: [text/plain]}}
tenants:
  - {name: api, domains: [api.example.com], path_prefix: /api, strip_prefix: true, upstreams: [{url: "http://127.0.0.1:2"}]}
`)
	ctx, tmpl := newBenchCtx()
	tmpl.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	b.ReportAllocs()
	for b.Loop() {
		benchRequest(ctx, tmpl)
		s.handle(ctx)
		if ctx.Response.StatusCode() != 200 || len(ctx.Response.Header.Peek("Vary")) == 0 {
			b.Fatalf("status %d, Vary %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Vary"))
		}
	}
}

// TestCompressionScriptAnswer checks that an answer a script writes itself
// is compressed like an upstream's.
func TestCompressionScriptAnswer(t *testing.T) {
	t.Parallel()
	g := startGateway(t, `
logging: {level: error}
server: {compression: {enabled: true}}
tenants:
  - {name: lua, path_prefix: /, script: big.lua}
`, "big.lua", `
local r = chi.NewRouter()
r:Get("/big", function(w, req)
  w:Header():Set("Content-Type", "text/plain; charset=utf-8")
  w:Write(string.rep("keystone ", 1000))
end)
return r
`)
	resp := g.get("/big", "Accept-Encoding", "zstd;q=0.5, gzip")
	if enc := string(resp.Header.ContentEncoding()); enc != "gzip" {
		t.Fatalf("Content-Encoding = %q, want gzip", enc)
	}
	if got := decode(t, "gzip", resp.Body()); string(got) != strings.Repeat("keystone ", 1000) {
		t.Fatalf("decoded %d bytes, want the script's 9000", len(got))
	}
}
