package auth

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// CORS implements the Fetch standard's CORS protocol for one tenant: the
// gateway answers preflight requests itself, and adds the CORS response
// headers to actual requests from allowed origins. CORS is a browser
// policy, not access control: a request from a refused origin still
// reaches the upstream (only the browser is told not to expose the
// answer); use auth and ip rules to refuse requests.
type CORS struct {
	anyOrigin bool
	exact     map[string]bool
	wildcards []wildcardOrigin

	methods     []byte // "GET, POST"
	methodSet   map[string]bool
	headers     []byte // "Authorization, Content-Type"
	headerSet   map[string]bool
	expose      []byte
	credentials bool
	maxAge      []byte // seconds; nil: no header
}

// wildcardOrigin is "https://*.example.com[:port]": scheme+"://" before
// exactly one DNS label, suffix (".example.com[:port]") after it. One
// label, as tenant domains' wildcards: "https://a.b.example.com" is not
// matched.
type wildcardOrigin struct{ prefix, suffix string }

var (
	hdrACAO     = []byte(fasthttp.HeaderAccessControlAllowOrigin)
	hdrACAC     = []byte(fasthttp.HeaderAccessControlAllowCredentials)
	hdrACAM     = []byte(fasthttp.HeaderAccessControlAllowMethods)
	hdrACAH     = []byte(fasthttp.HeaderAccessControlAllowHeaders)
	hdrACEH     = []byte(fasthttp.HeaderAccessControlExposeHeaders)
	hdrACMA     = []byte(fasthttp.HeaderAccessControlMaxAge)
	hdrVary     = []byte(fasthttp.HeaderVary)
	valTrue     = []byte("true")
	valStar     = []byte("*")
	valOrigin   = []byte("Origin")
	valPreVary  = []byte("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	hdrOrigin   = []byte(fasthttp.HeaderOrigin)
	hdrACRM     = []byte("Access-Control-Request-Method")
	hdrACRH     = []byte("Access-Control-Request-Headers")
	methodOpts  = []byte(fasthttp.MethodOptions)
	commaSpaced = ", "
)

// NewCORS builds the CORS rules from validated config.
func NewCORS(c config.CORS) *CORS {
	r := &CORS{
		exact:       map[string]bool{},
		methodSet:   map[string]bool{},
		headerSet:   map[string]bool{},
		credentials: c.AllowCredentials,
	}
	for _, o := range c.AllowOrigins {
		switch {
		case o == "*":
			r.anyOrigin = true
		case strings.Contains(o, "://*."):
			scheme, rest, _ := strings.Cut(o, "://*")
			r.wildcards = append(r.wildcards, wildcardOrigin{prefix: scheme + "://", suffix: rest})
		default:
			r.exact[o] = true
		}
	}
	for _, m := range c.AllowMethods {
		r.methodSet[m] = true
	}
	r.methods = []byte(strings.Join(c.AllowMethods, commaSpaced))
	for _, h := range c.AllowHeaders {
		r.headerSet[strings.ToLower(h)] = true
	}
	r.headers = []byte(strings.Join(c.AllowHeaders, commaSpaced))
	r.expose = []byte(strings.Join(c.ExposeHeaders, commaSpaced))
	if c.MaxAge > 0 {
		r.maxAge = strconv.AppendInt(nil, int64(c.MaxAge.D().Seconds()), 10)
	}
	return r
}

// OriginAllowed reports whether a request's Origin value is allowed.
func (c *CORS) OriginAllowed(origin []byte) bool {
	if len(origin) == 0 {
		return false
	}
	if c.anyOrigin || c.exact[string(origin)] {
		return true
	}
	for _, w := range c.wildcards {
		if len(origin) <= len(w.prefix)+len(w.suffix) ||
			!bytes.HasPrefix(origin, []byte(w.prefix)) || !bytes.HasSuffix(origin, []byte(w.suffix)) {
			continue
		}
		label := origin[len(w.prefix) : len(origin)-len(w.suffix)]
		if validLabel(label) {
			return true
		}
	}
	return false
}

// validLabel reports whether b is one DNS label (RFC 1123), lowercase as
// browsers serialize origins.
func validLabel(b []byte) bool {
	if len(b) == 0 || len(b) > 63 || b[0] == '-' || b[len(b)-1] == '-' {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// IsPreflight reports whether the request is a CORS preflight: OPTIONS with
// an Origin and an Access-Control-Request-Method header.
func IsPreflight(h *fasthttp.RequestHeader) bool {
	return bytes.Equal(h.Method(), methodOpts) && len(h.PeekBytes(hdrOrigin)) > 0 && len(h.PeekBytes(hdrACRM)) > 0
}

// Preflight answers a preflight request with 204 and the CORS headers, and
// reports true; it reports false, writing nothing, when the origin, the
// method or one of the headers asked for is not allowed (the caller
// answers 403).
func (c *CORS) Preflight(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	origin := h.PeekBytes(hdrOrigin)
	if !c.OriginAllowed(origin) {
		return false
	}
	// Only the listed methods: a browser lets a CORS-safelisted method
	// (GET, HEAD, POST) through whatever the answer says, but a preflight
	// for one the operator left out is refused all the same, as written.
	if !c.methodSet[string(h.PeekBytes(hdrACRM))] {
		return false
	}
	for _, name := range splitList(h.PeekBytes(hdrACRH)) {
		if !c.headerAllowed(name) {
			return false
		}
	}
	resp := &ctx.Response
	resp.Reset()
	resp.SetStatusCode(fasthttp.StatusNoContent)
	rh := &resp.Header
	c.setOrigin(rh, origin)
	rh.SetCanonical(hdrACAM, c.methods)
	if len(c.headers) > 0 {
		rh.SetCanonical(hdrACAH, c.headers)
	}
	if c.maxAge != nil {
		rh.SetCanonical(hdrACMA, c.maxAge)
	}
	rh.SetCanonical(hdrVary, valPreVary)
	return true
}

// Actual adds the CORS headers to the response of an actual (not
// preflight) request from an allowed origin, and Vary: Origin whenever the
// answer depends on the origin.
func (c *CORS) Actual(ctx *fasthttp.RequestCtx) {
	rh := &ctx.Response.Header
	if (!c.anyOrigin || c.credentials) && !bytes.Contains(rh.PeekBytes(hdrVary), valOrigin) {
		// Caches must not serve one origin's answer to another.
		rh.AddBytesKV(hdrVary, valOrigin)
	}
	origin := ctx.Request.Header.PeekBytes(hdrOrigin)
	if !c.OriginAllowed(origin) {
		return
	}
	c.setOrigin(rh, origin)
	if len(c.expose) > 0 {
		rh.SetCanonical(hdrACEH, c.expose)
	}
}

func (c *CORS) setOrigin(rh *fasthttp.ResponseHeader, origin []byte) {
	if c.anyOrigin && !c.credentials {
		rh.SetCanonical(hdrACAO, valStar)
		return
	}
	rh.SetCanonical(hdrACAO, origin)
	if c.credentials {
		rh.SetCanonical(hdrACAC, valTrue)
	}
}

// headerAllowed reports whether a request header asked for in a preflight
// is allowed: listed, or CORS-safelisted (Fetch standard).
func (c *CORS) headerAllowed(name []byte) bool {
	var buf [64]byte
	if len(name) > len(buf) {
		return false
	}
	lower := buf[:len(name)]
	for i, b := range name {
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		lower[i] = b
	}
	switch string(lower) {
	case "accept", "accept-language", "content-language", "content-type":
		return true
	}
	return c.headerSet[string(lower)]
}

// splitList splits a comma-separated header value into trimmed, non-empty
// items. Only preflights call it; they are cached by browsers (max_age).
func splitList(v []byte) [][]byte {
	var out [][]byte
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		item = bytes.TrimSpace(item)
		if len(item) > 0 {
			out = append(out, item)
		}
	}
	return out
}
