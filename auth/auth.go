// Package auth is Keystone's built-in access control: IP allow/deny rules,
// CORS, header rules and authentication by JWT (shared secret, public key
// or JWKS), API key and HTTP basic credentials. Everything is built once
// per config snapshot from a tenant's config and is safe for concurrent
// use; the hot paths take []byte views of the request and do not allocate
// (see the benchmarks).
//
// The server runs a tenant's Policy after the tenant match, in this order:
// IP rules on the trusted client IP, CORS preflight, authentication, then
// request header rules; response header rules and CORS headers are applied
// to whatever answered:
//
//	p, err := auth.New(tenantCfg, auth.Options{})
//	if p.IP != nil && !p.IP.Allowed(clientIP) { /* 403 */ }
//	id, res := p.Auth.Authenticate(ctx)
//	if res.Failed() { /* 401, p.Auth.Challenge(&ctx.Response.Header, res) */ }
//
// auth writes no error bodies: the server answers with its JSON error shape.
package auth

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// Methods name how a request was authenticated, as logged (auth_method)
// and as scripts see it (req.Auth.method).
const (
	MethodJWT    = "jwt"
	MethodAPIKey = "api_key"
	MethodBasic  = "basic"
)

// Identity is an accepted credential: who the request acts for. It is
// shared between the requests presenting the same credential (a cached
// token, one API key) and must not be modified.
type Identity struct {
	// Method is MethodJWT, MethodAPIKey or MethodBasic.
	Method string
	// Consumer names the caller: the API key's consumer, the basic user,
	// the token's "sub" claim ("" when the token has none).
	Consumer string
	// Claims are a token's claims; nil for other methods. Read-only.
	Claims map[string]any

	// headers are the claims_to_headers values, computed once when the
	// token was verified.
	headers []headerKV
	// token is the verified token, for the cache's check.
	token string
}

// headerKV is one header set on the request, in canonical form.
type headerKV struct{ key, value []byte }

// Options configure New beyond the tenant's config.
type Options struct {
	// Logger receives JWKS fetch failures. If nil, slog.Default().
	Logger *slog.Logger

	// Clock returns the current time; tests advance it. If nil,
	// time.Now.
	Clock func() time.Time

	// HTTPClient fetches JWKS documents. If nil, each key set gets its own
	// client (10s timeout, no downgrade from https on a redirect) whose
	// idle connections Stop closes.
	HTTPClient *http.Client
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return o
}

// Policy is the access control of one tenant. A nil field is a rule that
// is not configured.
type Policy struct {
	IP      *IPFilter
	CORS    *CORS
	Auth    *Authenticator
	Headers *HeaderRules
}

// New builds the policy of a tenant from its loaded (validated) config. It
// returns nil when the tenant configures no access control at all, so the
// pipeline pays one nil check. Start must be called to fetch JWKS keys.
func New(t *config.Tenant, opts Options) (*Policy, error) {
	if t.IP == nil && t.CORS == nil && t.Auth == nil && t.Headers == nil {
		return nil, nil
	}
	opts = opts.withDefaults()
	p := &Policy{}
	if t.IP != nil {
		p.IP = NewIPFilter(t.IP.AllowNets(), t.IP.DenyNets())
	}
	if t.CORS != nil {
		p.CORS = NewCORS(*t.CORS)
	}
	if t.Headers != nil {
		p.Headers = NewHeaderRules(*t.Headers)
	}
	if t.Auth != nil {
		a, err := NewAuthenticator(*t.Auth, opts)
		if err != nil {
			return nil, err
		}
		p.Auth = a
	}
	return p, nil
}

// Start starts the background work of the policy (JWKS refresh).
func (p *Policy) Start() {
	if p != nil && p.Auth != nil {
		p.Auth.Start()
	}
}

// Stop stops the background work of the policy. The policy must no longer
// serve requests.
func (p *Policy) Stop() {
	if p != nil && p.Auth != nil {
		p.Auth.Stop()
	}
}

// errRejected is the error of a credential that does not verify. Callers
// learn no more: the client must get no hint of which part was wrong.
var errRejected = errors.New("auth: credential rejected")

// Result is the outcome of Authenticate.
type Result uint8

const (
	// Accepted: the credentials were accepted; the identity is set.
	Accepted Result = iota
	// Excluded: the path needs no credential.
	Excluded
	// Missing: no credential of a configured method was presented.
	Missing
	// Invalid: a credential was presented and rejected.
	Invalid
	// InvalidToken: as Invalid, and a bearer token was among the
	// rejected credentials (the challenge says error="invalid_token").
	InvalidToken
)

// Failed reports whether the request must be refused with 401.
func (r Result) Failed() bool { return r >= Missing }

// String names the result, for logs.
func (r Result) String() string {
	return [...]string{"accepted", "excluded", "missing", "invalid", "invalid_token"}[r]
}
