package config

import (
	"crypto"
	"net/netip"
	"reflect"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// Auth is a tenant's authentication: the credentials it accepts and what
// happens to them. Nil (no auth key): every request passes.
type Auth struct {
	// Mode is any (one configured method accepting the request is enough)
	// or all (every configured method must accept it). Default any.
	Mode string `yaml:"mode"`

	// ExcludePaths are request paths that need no credential: an exact
	// path ("/health") or a subtree ("/public/*" matches "/public/x" and
	// everything below it, not "/public" itself). They are matched on the
	// normalized request path the gateway received, path_prefix included.
	ExcludePaths []string `yaml:"exclude_paths"`

	// JWT accepts bearer tokens. Nil: none.
	JWT *JWT `yaml:"jwt"`

	// APIKeys accepts static keys. Nil: none.
	APIKeys *APIKeys `yaml:"api_keys"`

	// Basic accepts HTTP basic credentials from an htpasswd file. Nil:
	// none.
	Basic *Basic `yaml:"basic"`

	// StripCredentials removes the accepted credential (the Authorization
	// header, the API key header or query parameter, the JWT cookie) from
	// the request before it goes upstream.
	StripCredentials bool `yaml:"strip_credentials"`
}

// JWT configures bearer-token verification. Exactly one key source is set:
// JWKSURL, Secret or PublicKeyFile.
type JWT struct {
	// JWKSURL is an http(s) URL serving a JSON Web Key Set; it is fetched
	// in the background, every JWKSRefresh and when a token names an
	// unknown key id.
	JWKSURL string `yaml:"jwks_url"`

	// Secret is the shared key of HS256/384/512, at least as long as the
	// hash (32, 48 or 64 bytes).
	Secret string `yaml:"secret"`

	// PublicKeyFile is a PEM public key (PKIX, PKCS#1 or a certificate),
	// relative to the config file's directory.
	PublicKeyFile string `yaml:"public_key_file"`

	// Algorithms lists the accepted "alg" values. Required; "none" is
	// never accepted, and HS* cannot be mixed with a public key source.
	Algorithms []string `yaml:"algorithms"`

	// Issuer, when set, must equal the token's "iss".
	Issuer string `yaml:"issuer"`

	// Audience, when set, must contain one of the token's "aud" values.
	Audience []string `yaml:"audience"`

	// RequiredClaims must be present in the token.
	RequiredClaims []string `yaml:"required_claims"`

	// Leeway is the clock skew allowed on exp, nbf and iat. Default 0.
	Leeway Duration `yaml:"leeway"`

	// Header carries the token as "Bearer <token>". Default
	// "Authorization" unless Cookie or Query is set.
	Header string `yaml:"header"`

	// Cookie names a cookie carrying the token.
	Cookie string `yaml:"cookie"`

	// Query names a query parameter carrying the token.
	Query string `yaml:"query"`

	// ClaimsToHeaders maps claim names to request headers set from them
	// for the upstream, replacing any the client sent under those names.
	ClaimsToHeaders map[string]string `yaml:"claims_to_headers"`

	// JWKSRefresh is how often the JWKS is fetched again. Default 10m.
	JWKSRefresh Duration `yaml:"jwks_refresh"`

	// PublicKey is PublicKeyFile, parsed. Set by Load.
	PublicKey crypto.PublicKey `yaml:"-"`
}

// APIKeys configures static API keys.
type APIKeys struct {
	// Header carries the key. Default "X-API-Key" unless Query is set.
	Header string `yaml:"header"`

	// Query names a query parameter carrying the key.
	Query string `yaml:"query"`

	// Keys are the accepted keys, at least one.
	Keys []APIKey `yaml:"keys"`
}

// APIKey is one accepted key and who presents it.
type APIKey struct {
	// Consumer names who uses the key, in logs and to scripts. Required.
	Consumer string `yaml:"consumer"`

	// Key is the key itself (usually ${VAR}). Either Key or SHA256.
	Key string `yaml:"key"`

	// SHA256 is the hex SHA-256 of the key, so the file need not hold it.
	SHA256 string `yaml:"sha256"`

	// Hash is the SHA-256 of the key, from Key or SHA256. Set by Load.
	Hash [32]byte `yaml:"-"`
}

// Basic configures HTTP basic authentication.
type Basic struct {
	// HtpasswdFile holds "user:hash" lines, bcrypt ($2a$, $2b$, $2y$) or
	// {SHA}; relative to the config file's directory. Required.
	HtpasswdFile string `yaml:"htpasswd_file"`

	// Realm is sent in the challenge. Default: the tenant's name.
	Realm string `yaml:"realm"`

	// Users are the entries of HtpasswdFile. Set by Load.
	Users []HtpasswdUser `yaml:"-"`
}

// HtpasswdUser is one entry of an htpasswd file.
type HtpasswdUser struct {
	Name string
	// Hash is the bcrypt hash, or "{SHA}" and the base64 SHA-1.
	Hash string
}

// IPRules allow or deny client addresses, after trusted proxies are
// applied. Deny wins; with Allow set, an address must be in it.
type IPRules struct {
	// Allow lists CIDRs or single addresses; empty allows all.
	Allow []string `yaml:"allow"`
	// Deny lists CIDRs or single addresses.
	Deny []string `yaml:"deny"`
}

// AllowNets returns Allow as masked prefixes. Load has validated them.
func (r IPRules) AllowNets() []netip.Prefix { return prefixes(r.Allow) }

// DenyNets returns Deny as masked prefixes. Load has validated them.
func (r IPRules) DenyNets() []netip.Prefix { return prefixes(r.Deny) }

func prefixes(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := parseTrusted(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// CORS configures cross-origin resource sharing; the gateway answers
// preflight requests itself.
type CORS struct {
	// AllowOrigins are "https://app.example.com", one wildcard label
	// "https://*.example.com", or "*" (any origin, not with
	// AllowCredentials). Required.
	AllowOrigins []string `yaml:"allow_origins"`
	// AllowMethods answer a preflight. Default [GET, HEAD, POST].
	AllowMethods []string `yaml:"allow_methods"`
	// AllowHeaders are the request headers a preflight may ask for.
	AllowHeaders []string `yaml:"allow_headers"`
	// ExposeHeaders are the response headers scripts in the browser may read.
	ExposeHeaders []string `yaml:"expose_headers"`
	// AllowCredentials lets browsers send cookies and credentials.
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge lets browsers cache a preflight answer. Default 0: no header.
	MaxAge Duration `yaml:"max_age"`
}

// HeaderRules change request headers on the way up and response headers on
// the way down.
type HeaderRules struct {
	Request  RequestHeaderRules  `yaml:"request"`
	Response ResponseHeaderRules `yaml:"response"`
}

// RequestHeaderRules change the request sent upstream: Remove first, then
// Set (replacing), then Add (appending).
type RequestHeaderRules struct {
	Set    map[string]string `yaml:"set"`
	Add    map[string]string `yaml:"add"`
	Remove []string          `yaml:"remove"`
}

// ResponseHeaderRules change the response sent to the client: Remove, then
// Set.
type ResponseHeaderRules struct {
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

// DefaultAuth, DefaultJWT and DefaultAPIKeys return the defaults of the
// auth:, auth.jwt: and auth.api_keys: blocks, the ones their field docs
// promise. A keystone.auth middleware in a script starts from them too
// when its tenant has no such block.
func DefaultAuth() Auth       { return Auth{Mode: "any"} }
func DefaultJWT() JWT         { return JWT{Header: "Authorization", JWKSRefresh: Duration(10 * time.Minute)} }
func DefaultAPIKeys() APIKeys { return APIKeys{Header: "X-API-Key"} }

func defaultCORS() CORS {
	return CORS{AllowMethods: []string{"GET", "HEAD", "POST"}}
}

// authDefault returns the defaults of the access-control blocks, for
// newDefault; ok is false for other types.
func authDefault(t reflect.Type) (any, bool) {
	switch t {
	case reflect.TypeFor[Auth]():
		return DefaultAuth(), true
	case reflect.TypeFor[JWT]():
		return DefaultJWT(), true
	case reflect.TypeFor[APIKeys]():
		return DefaultAPIKeys(), true
	case reflect.TypeFor[CORS]():
		return defaultCORS(), true
	}
	return nil, false
}

// decodeMap decodes a mapping of string keys to string values (header
// rules, claims_to_headers). An empty value keeps the default (none).
func (d *decoder) decodeMap(path string, n ast.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	m, ok := n.(*ast.MappingNode)
	if !ok {
		d.errorf(nodePos(n), path, "expected a mapping, got %s", describeAny(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.errorf(nodePos(n), path, "unsupported field type %s", v.Type())
		return
	}
	out := reflect.MakeMap(v.Type())
	for _, e := range d.entries(path, m, 0) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(joinPath(path, e.key), e.keyTk, e.val, elem)
		out.SetMapIndex(reflect.ValueOf(e.key), elem)
	}
	v.Set(out)
}
