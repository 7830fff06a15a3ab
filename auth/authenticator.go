package auth

import (
	"strings"
	"unsafe"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// Authenticator checks a request's credentials against a tenant's
// configured methods (JWT, API key, basic), in mode any (one accepting
// method is enough) or all (every configured method must accept).
type Authenticator struct {
	all     bool
	exclude []pathRule
	JWT     *JWT
	APIKeys *APIKeys
	Basic   *Basic
	strip   bool

	// claimHeaders are the names claims_to_headers sets: deleted from
	// every request first, so a client can never supply them itself.
	claimHeaders [][]byte

	bearerMissing, bearerInvalid []byte // WWW-Authenticate values
}

// pathRule is an exclude_paths entry: an exact path, or a subtree when
// prefix is set ("/public/*" → "/public/").
type pathRule struct {
	path   string
	prefix bool
}

var (
	hdrAuthorization   = []byte(fasthttp.HeaderAuthorization)
	hdrWWWAuthenticate = []byte(fasthttp.HeaderWWWAuthenticate)
)

// NewAuthenticator builds the authenticator from validated config.
func NewAuthenticator(c config.Auth, opts Options) (*Authenticator, error) {
	opts = opts.withDefaults()
	a := &Authenticator{all: c.Mode == "all", strip: c.StripCredentials}
	for _, p := range c.ExcludePaths {
		if base, ok := strings.CutSuffix(p, "*"); ok {
			a.exclude = append(a.exclude, pathRule{path: base, prefix: true})
		} else {
			a.exclude = append(a.exclude, pathRule{path: p})
		}
	}
	if c.JWT != nil {
		j, err := NewJWT(*c.JWT, opts)
		if err != nil {
			return nil, err
		}
		a.JWT = j
		for _, ch := range j.claimHdr {
			a.claimHeaders = append(a.claimHeaders, ch.header)
		}
		a.bearerMissing = []byte("Bearer")
		a.bearerInvalid = []byte(`Bearer error="invalid_token"`)
	}
	if c.APIKeys != nil {
		a.APIKeys = NewAPIKeys(*c.APIKeys)
	}
	if c.Basic != nil {
		a.Basic = NewBasic(*c.Basic, opts.Clock)
	}
	return a, nil
}

// Start starts background work (JWKS refresh).
func (a *Authenticator) Start() {
	if a.JWT != nil {
		a.JWT.Start()
	}
}

// Stop stops background work.
func (a *Authenticator) Stop() {
	if a.JWT != nil {
		a.JWT.Stop()
	}
}

// excluded reports whether path needs no credential.
func (a *Authenticator) excluded(path []byte) bool {
	for _, r := range a.exclude {
		if r.prefix {
			if len(path) > len(r.path) && string(path[:len(r.path)]) == r.path {
				return true
			}
		} else if string(path) == r.path {
			return true
		}
	}
	return false
}

// Authenticate checks the request's credentials. On Accepted it returns
// the identity and has prepared the request for the upstream: headers
// from claims set (replacing any the client sent under those names), and
// the credentials removed when strip_credentials is on. The claim header
// names are removed from every request, accepted, excluded or not.
func (a *Authenticator) Authenticate(ctx *fasthttp.RequestCtx) (*Identity, Result) {
	h := &ctx.Request.Header
	for _, name := range a.claimHeaders {
		h.DelBytes(name)
	}
	if a.excluded(ctx.Path()) {
		return nil, Excluded
	}
	var first *Identity
	presented, rejected, badToken := false, false, false
	// check records one method's outcome: present is false when the
	// request carried no credential for it, id nil when it was refused.
	check := func(id *Identity, present bool) {
		if !present {
			if a.all {
				rejected = true
			}
			return
		}
		presented = true
		if id == nil {
			rejected = true
			return
		}
		if first == nil {
			first = id
		}
	}
	if a.JWT != nil && (first == nil || a.all) {
		tok := a.JWT.credential(ctx)
		var id *Identity
		if len(tok) > 0 {
			id, _ = a.JWT.Verify(tok)
			badToken = id == nil
		}
		check(id, len(tok) > 0)
	}
	if a.APIKeys != nil && (first == nil || a.all) {
		key := a.APIKeys.credential(ctx)
		var id *Identity
		if len(key) > 0 {
			id = a.APIKeys.Verify(key)
		}
		check(id, len(key) > 0)
	}
	if a.Basic != nil && (first == nil || a.all) {
		v := h.PeekBytes(hdrAuthorization)
		var buf [maxCredential]byte
		user, pass, ok := parseBasic(v, &buf)
		var id *Identity
		if ok {
			id = a.Basic.verify(user, pass)
		}
		check(id, ok || hasScheme(v, "basic "))
	}
	if first == nil || a.all && rejected {
		switch {
		case !presented:
			return nil, Missing
		case badToken:
			return nil, InvalidToken
		}
		return nil, Invalid
	}
	for _, kv := range first.headers {
		h.SetCanonical(kv.key, kv.value)
	}
	if a.strip {
		a.stripCredentials(ctx)
	}
	return first, Accepted
}

// stripCredentials removes every credential of a configured method.
func (a *Authenticator) stripCredentials(ctx *fasthttp.RequestCtx) {
	if a.JWT != nil {
		a.JWT.strip(ctx)
	}
	if a.APIKeys != nil {
		a.APIKeys.strip(ctx)
	}
	if a.Basic != nil {
		ctx.Request.Header.DelBytes(hdrAuthorization)
	}
}

// Challenge adds the WWW-Authenticate headers of a 401: one per configured
// method that has a scheme, RFC 6750's error="invalid_token" when a token
// was presented and refused. API keys have no standard scheme and add
// none.
func (a *Authenticator) Challenge(h *fasthttp.ResponseHeader, r Result) {
	if a.JWT != nil {
		if r == InvalidToken {
			h.AddBytesKV(hdrWWWAuthenticate, a.bearerInvalid)
		} else {
			h.AddBytesKV(hdrWWWAuthenticate, a.bearerMissing)
		}
	}
	if a.Basic != nil {
		h.AddBytesKV(hdrWWWAuthenticate, a.Basic.challenge)
	}
}

// hasScheme reports whether an Authorization value uses scheme ("basic ").
func hasScheme(v []byte, scheme string) bool {
	return len(v) >= len(scheme) && asciiEqualFold(v[:len(scheme)], scheme)
}

// b2s views b as a string without copying, for map lookups and
// comparisons that do not keep it.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
