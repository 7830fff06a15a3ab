package server

import (
	"bytes"
	"iter"

	"github.com/valyala/fasthttp"
)

// hopHeaders are the hop-by-hop headers: they describe one connection and
// are removed before a message is forwarded (RFC 9110 section 7.6.1), in
// both directions. The list is Go's httputil.ReverseProxy's.
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection", // non-standard but still sent by libcurl and rejected by e.g. google
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",      // canonicalized version of "TE"
	"Trailer", // not Trailers per URL above; https://www.rfc-editor.org/errata_id=4522
	"Transfer-Encoding",
	"Upgrade",
}

// hopMask reports which hop-by-hop headers a header block carries: bit i
// stands for hopHeaders[i]. Most requests carry none or only "Connection:
// keep-alive", so one pass over the fields spares nine lookups that each
// re-canonicalize their key (hop-by-hop removal was 12% of the proxy path's
// CPU before this).
func hopMask(all iter.Seq2[[]byte, []byte]) uint16 {
	var m uint16
	for k := range all {
		if i := hopIndex(k); i >= 0 {
			m |= 1 << i
		}
	}
	return m
}

func hopIndex(k []byte) int {
	switch len(k) {
	case 2, 7, 10, 16, 17, 18, 19:
	case 6:
		if bytes.EqualFold(k, []byte(fasthttp.HeaderExpect)) {
			return expectIndex
		}
		return -1
	default:
		return -1
	}
	for i, h := range hopHeaders {
		if len(h) == len(k) && bytes.EqualFold(k, []byte(h)) {
			return i
		}
	}
	return -1
}

const (
	connectionBit = 1 << 0 // hopHeaders[0] is "Connection"
	keepAliveBit  = 1 << 2 // hopHeaders[2] is "Keep-Alive"
	// expectIndex marks Expect, which is not hop-by-hop but is not
	// forwarded either (see removeRequestHopHeaders).
	expectIndex = len(hopHeaders)
	expectBit   = 1 << expectIndex
)

// removeRequestHopHeaders strips the hop-by-hop headers from a request,
// including every header the Connection header names (RFC 9110
// section 7.6.1: "a proxy or gateway MUST ... remove any header or trailer
// field ... listed in the Connection header field"). Tokens are compared
// case-insensitively: fasthttp's DelBytes canonicalizes the name first. It
// does not allocate.
func removeRequestHopHeaders(h *fasthttp.RequestHeader) {
	removeRequestHop(h, hopMask(h.All()))
}

// removeRequestHop is removeRequestHopHeaders for a request whose hopMask
// is m.
func removeRequestHop(h *fasthttp.RequestHeader, m uint16) {
	if m != 0 {
		removeHop(h, m)
		if m&expectBit != 0 {
			// fasthttp already answered "Expect: 100-continue" and read
			// the body; passing the expectation on would make the
			// upstream wait for a continue nobody sends.
			h.Del(fasthttp.HeaderExpect)
		}
	}
	// The client's "Connection: close" is a flag in fasthttp, not a
	// field; it concerns the client's connection, which the server loop
	// handles, not the pooled upstream one.
	h.ResetConnectionClose()
}

// removeResponseHopHeaders is removeRequestHopHeaders for an upstream's
// answer. An upstream's wish to close its connection must not close the
// client's.
func removeResponseHopHeaders(h *fasthttp.ResponseHeader) {
	removeResponseHop(h, hopMask(h.All()))
}

// removeResponseHop is removeResponseHopHeaders for an answer whose hopMask
// is m.
func removeResponseHop(h *fasthttp.ResponseHeader, m uint16) {
	if m != 0 {
		removeHop(h, m)
	}
	h.ResetConnectionClose()
}

// keyConnection is "Connection" in canonical form.
var keyConnection = []byte(fasthttp.HeaderConnection)

// upgradeRequested is RequestHeader.ConnectionUpgrade without
// re-canonicalizing "Connection" on every request (Peek copies and
// normalizes its key; 1% of BenchmarkProxyHandler): whether the request's
// Connection header has the token "upgrade" and the client did not ask to
// close.
func upgradeRequested(h *fasthttp.RequestHeader) bool {
	if h.ConnectionClose() {
		return false
	}
	v := h.PeekCanonical(keyConnection)
	for len(v) > 0 {
		tok := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if bytes.EqualFold(bytes.TrimSpace(tok), []byte("upgrade")) {
			return true
		}
	}
	return false
}

// hopDeleter is what removeHop needs of a fasthttp header.
type hopDeleter interface {
	PeekCanonical(key []byte) []byte
	Del(key string)
	DelBytes(key []byte)
}

func removeHop(h hopDeleter, mask uint16) {
	if mask&connectionBit != 0 {
		conn := h.PeekCanonical(keyConnection)
		for len(conn) > 0 {
			var tok []byte
			if i := bytes.IndexByte(conn, ','); i >= 0 {
				tok, conn = conn[:i], conn[i+1:]
			} else {
				tok, conn = conn, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) > 0 && !framingField(tok) {
				// Peek's slice points into the header storage that
				// DelBytes edits; deleting a different key leaves the
				// Connection value in place, so the walk stays valid.
				h.DelBytes(tok)
			}
		}
	}
	for i, k := range hopHeaders {
		if mask&(1<<i) != 0 {
			h.Del(k)
		}
	}
}

// framingField reports whether a Connection token names a field the proxy
// must not drop on the sender's say-so: "Connection: Content-Length" would
// otherwise strip the length of a body fasthttp already framed by it, and the
// bytes left on the wire would be read as the next request.
func framingField(tok []byte) bool {
	// By length first: nearly every request names "keep-alive", and five
	// case-folding compares per token were 1% of BenchmarkProxyHandler.
	var f string
	switch len(tok) {
	case len("close"):
		f = "close"
	case len("keep-alive"):
		f = "keep-alive"
	case len("content-length"):
		f = "content-length"
	case len("transfer-encoding"):
		f = "transfer-encoding"
	case len("host"):
		f = "host"
	default:
		return false
	}
	return bytes.EqualFold(tok, []byte(f))
}

// framingError reports a request whose framing a proxy must not forward
// (request smuggling, RFC 9112 section 6.3 and 11.2): both Content-Length and
// Transfer-Encoding, or a Transfer-Encoding other than a single "chunked".
// fasthttp itself rejects duplicate or malformed Content-Length, repeated
// Transfer-Encoding fields, unknown codings and Transfer-Encoding on
// HTTP/1.0; what it accepts and we refuse is CL+TE (it lets TE win) and
// "Transfer-Encoding: identity" (removed by RFC 7230, and a request whose
// body fasthttp would then ignore, leaving it on the wire to be read as the
// next request).
func framingError(h *fasthttp.RequestHeader) bool {
	raw := h.RawHeaders()
	var sawCL, sawTE bool
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) < len("te:") {
			continue
		}
		switch line[0] | 0x20 {
		case 'c':
			sawCL = sawCL || hasFieldName(line, "content-length")
		case 't':
			sawTE = sawTE || hasFieldName(line, "transfer-encoding")
		}
	}
	if !sawTE {
		return false
	}
	// fasthttp reports a chunked body as ContentLength -1; anything else
	// with a Transfer-Encoding field is "identity".
	return sawCL || h.ContentLength() != -1
}

// hasFieldName reports whether a raw header line starts with name followed by
// optional whitespace and a colon, case-insensitively.
func hasFieldName(line []byte, name string) bool {
	if len(line) <= len(name) || !bytes.EqualFold(line[:len(name)], []byte(name)) {
		return false
	}
	rest := bytes.TrimLeft(line[len(name):], " \t")
	return len(rest) > 0 && rest[0] == ':'
}

// supportedVersion reports whether the request is HTTP/1.1 or HTTP/1.0, the
// versions the HTTP/1 listener speaks. fasthttp accepts any "HTTP/x.y";
// "GET / HTTP/2.0" forwarded as is would ask the upstream for semantics
// nobody negotiated, so the gateway answers 505 itself (RFC 9110 section
// 15.6.6), as Go's net/http does.
func supportedVersion(h *fasthttp.RequestHeader) bool {
	if h.IsHTTP11() {
		return true
	}
	p := h.Protocol()
	return len(p) == len("HTTP/1.0") && string(p) == "HTTP/1.0"
}

// badAuthority reports a request whose authority the gateway must not
// route or forward: user info in the Host header or in an absolute-form
// target ("user@b.example", "a.example:80@b.example" are not hosts, RFC
// 9112 section 3.2 and RFC 9110 section 4.2.4), an absolute-form target
// whose scheme is not http or https, or an HTTP/1.1 request in origin-form
// without a host (RFC 9112 section 3.2: "a server MUST respond with a 400
// (Bad Request) status code to any HTTP/1.1 request message that lacks a
// Host header field"; an "http" URI with an empty host is invalid, RFC 9110
// section 4.2.1). fasthttp would split user info off, route by what
// follows the "@", and its client would turn it into an Authorization
// header on the way upstream.
func badAuthority(h *fasthttp.RequestHeader) bool {
	host := h.Host()
	if bytes.IndexByte(host, '@') >= 0 {
		return true
	}
	uri := h.RequestURI()
	if len(uri) == 0 || uri[0] == '/' || (len(uri) == 1 && uri[0] == '*') {
		// origin-form, or asterisk-form ("OPTIONS *"). HTTP/1.0
		// predates Host; its requests may come without one.
		return len(host) == 0 && h.IsHTTP11()
	}
	i := bytes.Index(uri, []byte("://"))
	if i < 0 {
		return false // authority-form (CONNECT), refused by the proxy stage
	}
	scheme := uri[:i]
	if !bytes.EqualFold(scheme, []byte("http")) && !bytes.EqualFold(scheme, []byte("https")) {
		return true
	}
	authority := uri[i+3:]
	if j := bytes.IndexAny(authority, "/?#"); j >= 0 {
		authority = authority[:j]
	}
	return bytes.IndexByte(authority, '@') >= 0
}

// fieldLines counts the header field lines of a request as received.
// fasthttp merges every Cookie field into one (h.Len counts 1,000 Cookie
// lines as one field), so the raw block is what max_headers is checked
// against. The block ends with the empty line that ends the header.
func fieldLines(h *fasthttp.RequestHeader) int {
	raw := h.RawHeaders()
	if len(raw) == 0 {
		// A header built in code (a tool or test calling the
		// handler), not parsed from the wire.
		return h.Len()
	}
	return bytes.Count(raw, []byte{'\n'}) - 1
}

// setOnly sets key to value as the only field of that name: Set and
// SetCanonical replace only the first field, and an upstream that joins
// repeated fields (RFC 9110 section 5.3) would read the client's extra
// copies of a header the gateway owns. The key is in canonical form.
func setOnly(h *fasthttp.RequestHeader, key, value []byte) {
	h.DelBytes(key)
	h.SetCanonical(key, value)
}

// setOwned is setOnly for a header the request carries at most n fields
// of (requestScan): with one or none, SetCanonical alone replaces or adds
// it, without DelBytes re-canonicalizing the key and walking every field
// again (4% of BenchmarkProxyHandler's CPU for the four owned headers).
func setOwned(h *fasthttp.RequestHeader, key, value []byte, n int) {
	if n > 1 {
		h.DelBytes(key)
	}
	h.SetCanonical(key, value)
}

// requestScan is what one pass over a request's header fields finds before
// the proxy stage edits them (scanRequest).
type requestScan struct {
	// hop is the request's hopMask.
	hop uint16
	// xff, proto, host and reqID count the X-Forwarded-For,
	// X-Forwarded-Proto, X-Forwarded-Host and request id fields. They are
	// upper bounds for what is left after hop-by-hop removal, which only
	// deletes fields, unless hop has the Trailer bit: removing Trailer
	// moves the fields of the trailer section, which the pass does not
	// see, into the header (fasthttp's unannounceTrailers). scanRequest
	// then sets every count to 2, so that setOwned deletes.
	xff, proto, host, reqID int
}

// trailerBit is hopHeaders[6], "Trailer".
const trailerBit = 1 << 6

// scanRequest makes one pass over the fields of h: the hop-by-hop headers
// (hopMask), the fields of the headers the gateway owns (reqIDKey is the
// request id's, in canonical form), and the client's X-Forwarded-For
// chain, appended to xff with ", " between values. A request with trailer
// fields gets its chain from PeekAll, which reads the trailer section too.
func scanRequest(h *fasthttp.RequestHeader, reqIDKey, xff []byte) (requestScan, []byte) {
	var sc requestScan
	start := len(xff)
	for k, v := range h.All() {
		if len(k) == len(reqIDKey) && bytes.EqualFold(k, reqIDKey) {
			sc.reqID++
		}
		switch {
		case len(k) == len(fasthttp.HeaderXForwardedFor) && bytes.EqualFold(k, keyXForwardedFor):
			sc.xff++
			xff = appendChain(xff, start, v)
		case len(k) == len(fasthttp.HeaderXForwardedProto) && bytes.EqualFold(k, keyXForwardedProto):
			sc.proto++
		case len(k) == len(fasthttp.HeaderXForwardedHost) && bytes.EqualFold(k, keyXForwardedHost):
			sc.host++
		default:
			if i := hopIndex(k); i >= 0 {
				sc.hop |= 1 << i
			}
		}
	}
	if sc.hop&trailerBit != 0 {
		sc.xff, sc.proto, sc.host, sc.reqID = 2, 2, 2, 2
		xff = xff[:start]
		for _, v := range h.PeekAll(fasthttp.HeaderXForwardedFor) {
			xff = appendChain(xff, start, v)
		}
	}
	return sc, xff
}

// appendChain appends v to the X-Forwarded-For chain that starts at
// xff[start:].
func appendChain(xff []byte, start int, v []byte) []byte {
	if len(xff) > start {
		xff = append(xff, ", "...)
	}
	return append(xff, v...)
}
