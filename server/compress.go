package server

import (
	"bytes"
	"sync"

	"github.com/keystone-gateway/keystone/config"
	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"
)

// coding is a content coding the gateway can apply (RFC 9110 section 8.4.1).
type coding uint8

const (
	codingNone coding = iota
	codingBr
	codingZstd
	codingGzip
	numCodings
)

var codingTokens = [numCodings]string{codingBr: "br", codingZstd: "zstd", codingGzip: "gzip"}

func codingOf(name string) coding {
	for c, t := range codingTokens {
		if t != "" && t == name {
			return coding(c)
		}
	}
	return codingNone
}

// compressor is a tenant's compression stage. It runs after the tenant's
// script or proxy stage has left the answer in ctx.Response; a tenant
// without compression has a nil compressor, and the pipeline pays one nil
// check. Immutable after newCompressor.
type compressor struct {
	offered []coding // in the gateway's order of preference
	// levels are the fasthttp levels per coding: br and gzip as
	// configured, zstd mapped from zstd's 1..22 scale onto the
	// encoder's four speeds (zstd.EncoderLevelFromZstd).
	levels  [numCodings]int
	minSize int
	types   [][]byte // lowercase media types
	// stream compresses a streamed body, one handler per coding: fasthttp
	// keeps its streaming compressor (pooled writers, a flush per chunk
	// read from the upstream) behind its CompressHandler functions only.
	stream [numCodings]fasthttp.RequestHandler
}

// newCompressor builds the compression stage of cfg, or nil when it is off.
func newCompressor(cfg config.Compression) *compressor {
	if !cfg.Enabled || len(cfg.Algorithms) == 0 {
		return nil
	}
	c := &compressor{minSize: int(cfg.MinSize)}
	for _, a := range cfg.Algorithms {
		if k := codingOf(a); k != codingNone {
			c.offered = append(c.offered, k)
		}
	}
	for _, t := range cfg.Types {
		c.types = append(c.types, []byte(t))
	}
	nop := func(*fasthttp.RequestCtx) {}
	c.levels[codingBr] = cfg.Level
	c.levels[codingGzip] = cfg.Level
	c.levels[codingZstd] = int(zstd.EncoderLevelFromZstd(cfg.Level))
	c.stream[codingBr] = fasthttp.CompressHandlerBrotliLevel(nop, c.levels[codingBr], fasthttp.CompressDefaultCompression)
	c.stream[codingGzip] = fasthttp.CompressHandlerLevel(nop, c.levels[codingGzip])
	// CompressHandlerLevel tries gzip, deflate, then zstd: given only
	// "zstd", it takes zstd.
	c.stream[codingZstd] = fasthttp.CompressHandlerLevel(nop, c.levels[codingZstd])
	return c
}

// compressBufs holds the buffers compressed bodies are built in. A buffer
// goes to the response by SwapBody, which hands back the response's
// previous body buffer: the pool and fasthttp's response bodies trade
// buffers, so a steady stream of compressed answers allocates none.
var compressBufs = sync.Pool{New: func() any { return new([]byte) }}

var (
	headerVary          = []byte(fasthttp.HeaderVary)
	valueAcceptEncoding = []byte("Accept-Encoding")
)

// apply compresses the answer in ctx.Response when the request accepts one
// of the offered codings and the answer qualifies. Left alone: answers to
// HEAD, 1xx, 204, 206 and 304 (nothing to compress, or a range of the
// unencoded representation), answers already encoded, marked
// "Cache-Control: no-transform" (RFC 9110 section 7.7) or of a type not
// listed, and buffered bodies under min_size (unless the client refused
// identity). Every answer of a listed type gets "Vary: Accept-Encoding",
// compressed or not, so a cache never serves one client's coding to
// another. A compressed answer's strong ETag is weakened (the bytes
// differ from the identity representation's) and its Content-Length is
// the compressed size.
func (c *compressor) apply(ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	rh := &resp.Header
	switch status := resp.StatusCode(); {
	case status < 200, status == fasthttp.StatusNoContent, status == fasthttp.StatusPartialContent,
		status == fasthttp.StatusNotModified:
		return
	}
	if ctx.Request.Header.IsHead() || len(rh.ContentEncoding()) > 0 || !c.typeListed(rh.ContentType()) ||
		noTransform(rh.Peek(fasthttp.HeaderCacheControl)) {
		return
	}
	addVary(rh)
	k, identityRefused := negotiate(ctx.Request.Header.Peek(fasthttp.HeaderAcceptEncoding), c.offered)
	if k == codingNone {
		return
	}
	if resp.IsBodyStream() {
		c.compressStream(ctx, k)
		return
	}
	body := resp.Body()
	if len(body) == 0 || (len(body) < c.minSize && !identityRefused) {
		return
	}
	bp := compressBufs.Get().(*[]byte)
	out := (*bp)[:0]
	switch k {
	case codingBr:
		out = fasthttp.AppendBrotliBytesLevel(out, body, c.levels[k])
	case codingZstd:
		out = fasthttp.AppendZstdBytesLevel(out, body, c.levels[k])
	default:
		out = fasthttp.AppendGzipBytesLevel(out, body, c.levels[k])
	}
	if len(out) >= len(body) && !identityRefused {
		// Incompressible (already compressed data of a text type): the
		// identity representation is smaller.
		*bp = out
		compressBufs.Put(bp)
		return
	}
	// The response writes Content-Length from the new body's length.
	old := resp.SwapBody(out)
	if cap(old) > 1<<20 {
		old = nil // don't let one large body pin memory in the pool
	}
	*bp = old[:0]
	compressBufs.Put(bp)
	rh.SetContentEncodingBytes([]byte(codingTokens[k]))
	weakenETag(rh)
}

// compressStream hands a streamed body to fasthttp's stream compressor for
// coding k. Its handler negotiates by looking for the coding's name in the
// request's Accept-Encoding, so it is shown only the coding chosen here,
// and the request's field is put back after.
func (c *compressor) compressStream(ctx *fasthttp.RequestCtx, k coding) {
	h := &ctx.Request.Header
	orig := append([]byte(nil), h.Peek(fasthttp.HeaderAcceptEncoding)...)
	h.Set(fasthttp.HeaderAcceptEncoding, codingTokens[k])
	c.stream[k](ctx)
	h.SetBytesV(fasthttp.HeaderAcceptEncoding, orig)
	if len(ctx.Response.Header.ContentEncoding()) > 0 {
		weakenETag(&ctx.Response.Header)
	}
}

// typeListed reports whether the media type of a Content-Type value is one
// of the compressor's types.
func (c *compressor) typeListed(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	for _, t := range c.types {
		if bytes.EqualFold(ct, t) {
			return true
		}
	}
	return false
}

// noTransform reports whether a Cache-Control value carries no-transform.
func noTransform(cc []byte) bool {
	for len(cc) > 0 {
		var d []byte
		d, cc = nextListItem(cc)
		if bytes.EqualFold(d, []byte("no-transform")) {
			return true
		}
	}
	return false
}

// addVary adds Accept-Encoding to the response's Vary unless a Vary field
// lists it already or is "*".
func addVary(h *fasthttp.ResponseHeader) {
	for _, v := range h.PeekAll(fasthttp.HeaderVary) {
		for len(v) > 0 {
			var tok []byte
			tok, v = nextListItem(v)
			if bytes.EqualFold(tok, valueAcceptEncoding) || (len(tok) == 1 && tok[0] == '*') {
				return
			}
		}
	}
	h.AddBytesKV(headerVary, valueAcceptEncoding)
}

// weakenETag turns a strong ETag into a weak one: a compressed body is not
// byte-for-byte the representation the upstream tagged (RFC 9110 section
// 8.8.1), but is semantically equivalent, which a weak tag says.
func weakenETag(h *fasthttp.ResponseHeader) {
	tag := h.Peek(fasthttp.HeaderETag)
	if len(tag) == 0 || tag[0] != '"' {
		return // absent, or weak already
	}
	var buf [128]byte
	w := append(append(buf[:0], 'W', '/'), tag...)
	h.SetBytesV(fasthttp.HeaderETag, w)
}

// nextListItem splits the first element off a comma-separated field value
// (RFC 9110 section 5.6.1), trimmed of whitespace.
func nextListItem(v []byte) (item, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		item, rest = v[:i], v[i+1:]
	} else {
		item = v
	}
	return bytes.Trim(item, " \t"), rest
}

// negotiate picks the content coding for an Accept-Encoding value (RFC 9110
// section 12.5.3) among offered, which is in the gateway's order of
// preference: the acceptable coding of the highest qvalue, ties going to
// the gateway's order. A coding not listed takes the qvalue of "*", if
// any. "x-gzip" is "gzip" (section 8.4.1.3). Identity is preferred when
// the client rates it above every offered coding; it is refused
// (identityRefused) by "identity;q=0", or by "*;q=0" without an identity
// element. Malformed elements are ignored. It does not allocate.
func negotiate(ae []byte, offered []coding) (best coding, identityRefused bool) {
	if len(ae) == 0 {
		// No field: any coding is acceptable (section 12.5.3), but a
		// client that says nothing is most likely one that cannot
		// decode; send identity, as every server does.
		return codingNone, false
	}
	var q [numCodings]int // -1: not listed
	for i := range q {
		q[i] = -1
	}
	starQ, identityQ := -1, -1
	for v := ae; len(v) > 0; {
		var item []byte
		item, v = nextListItem(v)
		if len(item) == 0 {
			continue
		}
		name, params, _ := bytes.Cut(item, []byte{';'})
		name = bytes.TrimRight(name, " \t")
		qv, ok := parseQ(params)
		if !ok {
			continue
		}
		switch {
		case len(name) == 1 && name[0] == '*':
			starQ = qv
		case bytes.EqualFold(name, []byte("identity")):
			identityQ = qv
		case bytes.EqualFold(name, []byte("br")):
			q[codingBr] = qv
		case bytes.EqualFold(name, []byte("zstd")):
			q[codingZstd] = qv
		case bytes.EqualFold(name, []byte("gzip")), bytes.EqualFold(name, []byte("x-gzip")):
			q[codingGzip] = max(q[codingGzip], qv)
		}
	}
	identityRefused = identityQ == 0 || (identityQ < 0 && starQ == 0)
	bestQ := 0
	for _, k := range offered {
		qk := q[k]
		if qk < 0 {
			qk = max(starQ, 0)
		}
		if qk > bestQ {
			best, bestQ = k, qk
		}
	}
	if best != codingNone && identityQ > bestQ {
		return codingNone, identityRefused
	}
	return best, identityRefused
}

// parseQ parses the parameters after a coding's ";" for its weight (RFC
// 9110 section 12.4.2: "q=" 0 to 1 with up to three decimals), returned in
// thousandths: 1000 when there is none. Parameters other than q are
// ignored; ok is false for a malformed weight.
func parseQ(params []byte) (q int, ok bool) {
	q = 1000
	for len(params) > 0 {
		var p []byte
		if i := bytes.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i+1:]
		} else {
			p, params = params, nil
		}
		p = bytes.Trim(p, " \t")
		if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
			continue
		}
		v := p[2:]
		if len(v) == 0 || len(v) > 5 || (v[0] != '0' && v[0] != '1') {
			return 0, false
		}
		n := int(v[0]-'0') * 1000
		if len(v) > 1 {
			if v[1] != '.' {
				return 0, false
			}
			scale := 100
			for _, c := range v[2:] {
				if c < '0' || c > '9' {
					return 0, false
				}
				n += int(c-'0') * scale
				scale /= 10
			}
		}
		if n > 1000 {
			return 0, false
		}
		q = n
	}
	return q, true
}
