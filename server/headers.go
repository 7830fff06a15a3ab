package server

import (
	"bytes"

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

// connectionHeaders is the interface fasthttp's request and response headers
// share for the operations hop-by-hop removal needs.
type connectionHeaders interface {
	Peek(key string) []byte
	Del(key string)
	DelBytes(key []byte)
	ResetConnectionClose()
}

// removeHopHeaders strips the hop-by-hop headers from h, including every
// header the Connection header names (RFC 9110 section 7.6.1: "a proxy or
// gateway MUST ... remove any header or trailer field ... listed in the
// Connection header field"). Tokens are compared case-insensitively:
// fasthttp's DelBytes canonicalizes the name first. It does not allocate.
func removeHopHeaders(h connectionHeaders) {
	if conn := h.Peek(fasthttp.HeaderConnection); len(conn) > 0 {
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
	for _, k := range hopHeaders {
		h.Del(k)
	}
	// fasthttp keeps "Connection: close" as a flag, not a header: the
	// client's wish to close is handled by the server loop separately, and
	// an upstream's wish to close its own connection must not close the
	// client's.
	h.ResetConnectionClose()
}

// framingField reports whether a Connection token names a field the proxy
// must not drop on the sender's say-so: "Connection: Content-Length" would
// otherwise strip the length of a body fasthttp already framed by it, and the
// bytes left on the wire would be read as the next request.
func framingField(tok []byte) bool {
	for _, f := range [...]string{"close", "keep-alive", "content-length", "transfer-encoding", "host"} {
		if bytes.EqualFold(tok, []byte(f)) {
			return true
		}
	}
	return false
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
