package auth

import (
	"bytes"
	"crypto"
	"encoding/json"
	"fmt"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// JWT verifies bearer tokens with github.com/golang-jwt/jwt/v5: the most
// used Go JWT library, small, with no dependencies, whose Parser checks
// the algorithm against an allow list before any key is used and never
// accepts "none" unless handed a magic constant. Keys come from a shared
// secret, a PEM public key or a JWKS (jwks.go).
//
// Verified tokens are cached until their "exp" (at most maxTokenTTL
// without one), keyed by a 64-bit hash of the token and checked against
// the whole token, so an RS256 or ES256 signature is checked once per
// token rather than once per request (BenchmarkJWT).
type JWT struct {
	parser *jwt.Parser
	algs   []string

	secret []byte           // HS*; nil otherwise
	key    crypto.PublicKey // a public_key_file key; nil otherwise
	jwks   *JWKS            // a jwks_url; nil otherwise

	required []string
	claimHdr []claimHeader

	header []byte // canonical header carrying "Bearer <token>"
	cookie []byte
	query  []byte

	cache *cache[uint64]
	clock func() time.Time
}

// claimHeader is one claims_to_headers entry.
type claimHeader struct {
	claim  string
	header []byte // canonical
}

// maxTokenLen bounds a token the gateway looks at; fasthttp's header limit
// bounds it already, this bounds what is hashed and cached.
const maxTokenLen = 16 << 10

// maxTokenTTL caps how long a token without "exp" stays cached.
const maxTokenTTL = 5 * time.Minute

// NewJWT builds a verifier from validated config.
func NewJWT(c config.JWT, opts Options) (*JWT, error) {
	opts = opts.withDefaults()
	j := &JWT{
		algs:     slices.Clone(c.Algorithms),
		required: slices.Clone(c.RequiredClaims),
		cache:    newCache[uint64](maxCachedTokens),
		clock:    opts.Clock,
	}
	if slices.ContainsFunc(j.algs, func(a string) bool { return a == "none" || a == "" }) || len(j.algs) == 0 {
		return nil, fmt.Errorf("auth: jwt: algorithms must be listed, and never \"none\"")
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(j.algs),
		jwt.WithLeeway(c.Leeway.D()),
		jwt.WithTimeFunc(opts.Clock),
	}
	if c.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(c.Issuer))
	}
	if len(c.Audience) > 0 {
		popts = append(popts, jwt.WithAudience(c.Audience...))
	}
	j.parser = jwt.NewParser(popts...)
	switch {
	case c.Secret != "":
		j.secret = []byte(c.Secret)
	case c.PublicKey != nil:
		j.key = c.PublicKey
	case c.JWKSURL != "":
		j.jwks = NewJWKS(c.JWKSURL, c.JWKSRefresh.D(), opts)
	default:
		return nil, fmt.Errorf("auth: jwt: no key source")
	}
	switch {
	case c.Cookie != "":
		j.cookie = []byte(c.Cookie)
	case c.Query != "":
		j.query = []byte(c.Query)
	default:
		j.header = []byte(textproto.CanonicalMIMEHeaderKey(c.Header))
	}
	for claim, h := range c.ClaimsToHeaders {
		j.claimHdr = append(j.claimHdr, claimHeader{claim: claim, header: []byte(textproto.CanonicalMIMEHeaderKey(h))})
	}
	slices.SortFunc(j.claimHdr, func(a, b claimHeader) int { return bytes.Compare(a.header, b.header) })
	return j, nil
}

// credential returns the token the request presents, or nil.
func (j *JWT) credential(ctx *fasthttp.RequestCtx) []byte {
	switch {
	case j.cookie != nil:
		return ctx.Request.Header.CookieBytes(j.cookie)
	case j.query != nil:
		return ctx.QueryArgs().PeekBytes(j.query)
	}
	tok, _ := bearer(ctx.Request.Header.PeekBytes(j.header))
	return tok
}

// bearer extracts the token of "Bearer <token>" (RFC 6750 section 2.1;
// the scheme is case-insensitive). ok is false for another scheme.
func bearer(v []byte) (tok []byte, ok bool) {
	const scheme = "bearer "
	if len(v) < len(scheme) || !asciiEqualFold(v[:len(scheme)], scheme) {
		return nil, false
	}
	return bytes.TrimSpace(v[len(scheme):]), true
}

// Verify checks a token and returns its identity, from the cache when the
// same token was verified before and has not expired.
func (j *JWT) Verify(token []byte) (*Identity, error) {
	if len(token) == 0 || len(token) > maxTokenLen {
		return nil, errRejected
	}
	now := j.clock()
	h := xxhash.Sum64(token)
	gen := j.generation()
	if id := j.cache.get(h, b2s(token), now, gen); id != nil {
		return id, nil
	}
	id, until, err := j.verify(token, now)
	if err != nil {
		return nil, err
	}
	j.cache.put(h, id.token, id, until, now, gen)
	return id, nil
}

// verify checks a token without the cache and returns its identity and
// until when it may be cached.
func (j *JWT) verify(token []byte, now time.Time) (_ *Identity, until time.Time, _ error) {
	tok := string(token)
	parsed, err := j.parser.Parse(tok, j.keyFor)
	if err != nil || !parsed.Valid {
		return nil, until, errRejected
	}
	claims, ok := parsed.Claims.(jwt.MapClaims)
	if !ok {
		return nil, until, errRejected
	}
	for _, c := range j.required {
		if v, ok := claims[c]; !ok || v == nil {
			return nil, until, errRejected
		}
	}
	id := &Identity{Method: MethodJWT, Claims: claims, token: tok}
	if sub, ok := claims["sub"].(string); ok {
		id.Consumer = sub
	}
	for _, ch := range j.claimHdr {
		if v, ok := claimString(claims[ch.claim]); ok {
			id.headers = append(id.headers, headerKV{key: ch.header, value: []byte(v)})
		}
	}
	until = now.Add(maxTokenTTL)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil && exp.Before(until) {
		until = exp.Time
	}
	return id, until, nil
}

// generation is the JWKS key-set generation, 0 for static keys.
func (j *JWT) generation() uint64 {
	if j.jwks == nil {
		return 0
	}
	return j.jwks.gen.Load()
}

// keyFor is the jwt.Keyfunc: it hands the parser the key for the token's
// algorithm family only. The parser has already refused an algorithm
// outside the allow list; config refuses HS* next to a public key source,
// and a key of the wrong type is refused by the algorithm itself, so a
// public key can never serve as an HMAC secret (key confusion).
func (j *JWT) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if _, hmac := t.Method.(*jwt.SigningMethodHMAC); hmac {
		if j.secret == nil {
			return nil, errRejected
		}
		return j.secret, nil
	}
	switch {
	case j.key != nil:
		return j.key, nil
	case j.jwks != nil:
		kid, _ := t.Header["kid"].(string)
		return j.jwks.Key(kid, alg)
	}
	return nil, errRejected
}

// claimString renders a claim as a header value: strings as they are,
// numbers without exponent, booleans, anything else as JSON. ok is false
// for a missing claim or a value that cannot be a header value.
func claimString(v any) (string, bool) {
	var s string
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		s = x
	case bool:
		s = strconv.FormatBool(x)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			s = strconv.FormatInt(int64(x), 10)
		} else {
			s = strconv.FormatFloat(x, 'f', -1, 64)
		}
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return "", false
		}
		s = string(b)
	}
	for i := 0; i < len(s); i++ {
		// A claim must not smuggle a header break or control bytes.
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", false
		}
	}
	return s, true
}

// strip removes the token from the request.
func (j *JWT) strip(ctx *fasthttp.RequestCtx) {
	switch {
	case j.cookie != nil:
		ctx.Request.Header.DelCookieBytes(j.cookie)
	case j.query != nil:
		ctx.QueryArgs().DelBytes(j.query)
	default:
		ctx.Request.Header.DelBytes(j.header)
	}
}

// Start starts the JWKS refresh, if any.
func (j *JWT) Start() {
	if j.jwks != nil {
		j.jwks.Start()
	}
}

// Stop stops the JWKS refresh, if any.
func (j *JWT) Stop() {
	if j.jwks != nil {
		j.jwks.Stop()
	}
}

// ShareKeys makes j verify with from's JWKS instead of its own, when both
// name the same JWKS URL: a script's jwt middleware built from the
// tenant's settings then uses the tenant's key set and its refresh,
// rather than a second fetcher. It reports whether the keys are shared.
// Call it before j serves requests.
func (j *JWT) ShareKeys(from *JWT) bool {
	if j.jwks == nil || from == nil || from.jwks == nil || j.jwks.url != from.jwks.url {
		return false
	}
	j.jwks = from.jwks
	return true
}
