package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/http/httpguts"
)

// This file validates the access-control blocks of auth.go (auth, ip,
// cors, headers) and reads the key files they name.

// jwtAlgorithms are the accepted JWT "alg" values, by key family.
var (
	hmacAlgs  = []string{"HS256", "HS384", "HS512"}
	rsaAlgs   = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ecAlgs    = []string{"ES256", "ES384", "ES512"}
	edAlgs    = []string{"EdDSA"}
	allJWTAlg = slices.Concat(hmacAlgs, rsaAlgs, ecAlgs, edAlgs)
)

// validateAccess checks a tenant's auth, ip, cors and headers blocks,
// reads the key files they name and sets the parsed values.
func validateAccess(d *decoder, t *Tenant, tp string) {
	if a := t.Auth; a != nil {
		validateAuth(d, t, a, tp+".auth")
	}
	if r := t.IP; r != nil {
		p := tp + ".ip"
		for i, s := range r.Allow {
			if _, err := parseTrusted(s); err != nil {
				d.errorAt(fmt.Sprintf("%s.allow[%d]", p, i), "%s", err.Error())
			}
		}
		for i, s := range r.Deny {
			if _, err := parseTrusted(s); err != nil {
				d.errorAt(fmt.Sprintf("%s.deny[%d]", p, i), "%s", err.Error())
			}
		}
		if len(r.Allow) == 0 && len(r.Deny) == 0 {
			d.errorAt(p, "expected allow or deny (or both), got neither")
		}
	}
	if c := t.CORS; c != nil {
		validateCORS(d, c, tp+".cors")
	}
	if h := t.Headers; h != nil {
		p := tp + ".headers"
		checkHeaderMap(d, p+".request.set", h.Request.Set)
		checkHeaderMap(d, p+".request.add", h.Request.Add)
		checkHeaderList(d, p+".request.remove", h.Request.Remove)
		checkHeaderMap(d, p+".response.set", h.Response.Set)
		checkHeaderList(d, p+".response.remove", h.Response.Remove)
	}
}

func validateAuth(d *decoder, t *Tenant, a *Auth, p string) {
	oneOf(d, p+".mode", a.Mode, "any", "all")
	for i, s := range a.ExcludePaths {
		ep := fmt.Sprintf("%s.exclude_paths[%d]", p, i)
		base := strings.TrimSuffix(s, "/*")
		if base == "" && s == "/*" {
			continue
		}
		if base == "/" || checkPathPrefix(base) != "" || strings.Contains(base, "*") {
			d.errorAt(ep, "expected a path such as \"/health\" or a subtree such as \"/public/*\", got %q", clip(s))
		}
	}
	if a.JWT == nil && a.APIKeys == nil && a.Basic == nil {
		d.errorAt(p, "expected at least one of jwt, api_keys or basic, got none")
	}
	if j := a.JWT; j != nil {
		validateJWT(d, j, p+".jwt")
	}
	if a.Mode == "all" && a.JWT != nil && a.Basic != nil && strings.EqualFold(a.JWT.Header, "Authorization") {
		// One Authorization header carries one credential.
		d.errorAt(p+".mode", "mode all cannot require both jwt in the Authorization header and basic; set jwt.header, cookie or query")
	}
	if k := a.APIKeys; k != nil {
		validateAPIKeys(d, k, p+".api_keys")
	}
	if b := a.Basic; b != nil {
		if b.Realm == "" && !d.isSet(p+".basic.realm") {
			b.Realm = t.Name
		}
		if strings.ContainsAny(b.Realm, "\"\\") || !httpguts.ValidHeaderFieldValue(b.Realm) {
			d.errorAt(p+".basic.realm", "expected a realm without quotes, backslashes or control characters, got %q", clip(b.Realm))
		}
		switch {
		case b.HtpasswdFile == "":
			d.errorAt(p+".basic", "missing required field \"htpasswd_file\"")
		case b.Users == nil:
			b.Users = readHtpasswd(d, p+".basic.htpasswd_file", b.HtpasswdFile)
		}
	}
}

// CheckAuth validates an auth block built outside a config file, such as
// the options of a script's keystone.auth middleware, with the rules Load
// applies, and applies its defaults. Key material already read
// (JWT.PublicKey with PublicKeyFile naming it, Basic.Users with
// HtpasswdFile) is taken as is; set lists the field paths the caller
// wrote ("jwt.header"), which decides defaults such as the JWT header
// when a cookie is named. tenant names the tenant (the default realm).
// It returns one "path: message" per problem.
func CheckAuth(a *Auth, tenant string, set []string) []string {
	errs := newErrorSet("")
	d := newDecoder(errs, nil)
	for _, p := range set {
		d.pos["auth."+p] = fieldPos{set: true}
	}
	validateAuth(d, &Tenant{Name: tenant}, a, "auth")
	var out []string
	for _, e := range errs.list {
		out = append(out, strings.TrimPrefix(strings.TrimPrefix(e.Path, "auth"), ".")+": "+e.Msg)
	}
	return out
}

// credentialSource checks that a credential is read from exactly one place
// and clears the default header when another place was chosen.
// A nil cookie means the method takes no cookie.
func credentialSource(d *decoder, p string, header, cookie, query *string, defHeader string) {
	places := "header, cookie or query"
	if cookie == nil {
		cookie, places = new(string), "header or query"
	}
	if !d.isSet(p+".header") && (*cookie != "" || *query != "") {
		*header = ""
	}
	n := 0
	for _, s := range []*string{header, cookie, query} {
		if *s != "" {
			n++
		}
	}
	if n != 1 {
		d.errorAt(d.pick(p+".header", p+".cookie", p+".query"), "expected exactly one of %s, got %d", places, n)
	}
	if *header != "" && !httpguts.ValidHeaderFieldName(*header) {
		d.errorAt(p+".header", "expected a header name such as %q, got %q", defHeader, clip(*header))
	}
	if *cookie != "" && !validToken(*cookie) {
		d.errorAt(p+".cookie", "expected a cookie name, got %q", clip(*cookie))
	}
	if *query != "" && !validToken(*query) {
		d.errorAt(p+".query", "expected a query parameter name, got %q", clip(*query))
	}
}

// validToken reports whether s is an RFC 9110 token: a header, cookie or
// plain query parameter name.
func validToken(s string) bool { return httpguts.ValidHeaderFieldName(s) }

func validateJWT(d *decoder, j *JWT, p string) {
	credentialSource(d, p, &j.Header, &j.Cookie, &j.Query, "Authorization")
	sources := 0
	for _, s := range []string{j.JWKSURL, j.Secret, j.PublicKeyFile} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		d.errorAt(p, "expected exactly one key source (jwks_url, secret or public_key_file), got %d", sources)
	}
	if j.JWKSURL != "" {
		if u, err := url.Parse(j.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorAt(p+".jwks_url", "expected absolute http(s) URL, got %q", clip(j.JWKSURL))
		}
	}
	if j.JWKSRefresh < Duration(time.Second) {
		d.errorAt(p+".jwks_refresh", "expected a duration of at least 1s, got %s", j.JWKSRefresh)
	}
	if j.Leeway < 0 || j.Leeway > Duration(time.Hour) {
		d.errorAt(p+".leeway", "expected a duration between 0 and 1h, got %s", j.Leeway)
	}
	if j.PublicKeyFile != "" && j.PublicKey == nil {
		j.PublicKey = readPublicKey(d, p+".public_key_file", j.PublicKeyFile)
	}
	if len(j.Algorithms) == 0 && !d.derived(p+".algorithms") {
		d.errorAt(p, "missing required field \"algorithms\" (such as [RS256])")
	}
	hasHMAC, hasPublic := false, false
	for i, alg := range j.Algorithms {
		ap := fmt.Sprintf("%s.algorithms[%d]", p, i)
		switch {
		case strings.EqualFold(alg, "none"):
			d.errorAt(ap, "algorithm \"none\" is never accepted: it means an unsigned token")
			continue
		case !slices.Contains(allJWTAlg, alg):
			msg := fmt.Sprintf("expected one of %s, got %q", strings.Join(allJWTAlg, ", "), clip(alg))
			if s := Suggest(alg, allJWTAlg); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errorAt(ap, "%s", msg)
			continue
		}
		if slices.Contains(hmacAlgs, alg) {
			hasHMAC = true
			// RFC 7518 section 3.2: a key at least as long as the hash.
			if need := hashBytes(alg); j.Secret != "" && len(j.Secret) < need {
				d.errorAt(p+".secret", "expected a secret of at least %d bytes for %s, got %d", need, alg, len(j.Secret))
			}
		} else {
			hasPublic = true
			if msg := keyFits(j.PublicKey, alg); msg != "" {
				d.errorAt(ap, "%s", msg)
			}
		}
	}
	switch {
	case hasHMAC && (j.JWKSURL != "" || j.PublicKeyFile != ""):
		// The classic key-confusion attack: a token signed with HS256
		// using the public key as the HMAC secret.
		d.errorAt(d.pick(p+".algorithms"), "HS256/384/512 cannot be accepted with a public key source (jwks_url or public_key_file): anyone holding the public key could sign tokens")
	case hasPublic && j.Secret != "":
		d.errorAt(d.pick(p+".algorithms"), "a secret verifies only HS256, HS384 and HS512; use jwks_url or public_key_file for other algorithms")
	}
	for i, c := range j.RequiredClaims {
		if c == "" {
			d.errorAt(fmt.Sprintf("%s.required_claims[%d]", p, i), "expected a claim name, got \"\"")
		}
	}
	for claim, h := range j.ClaimsToHeaders {
		cp := joinPath(p+".claims_to_headers", claim)
		if msg := checkSettableHeader(h); msg != "" {
			d.errorAt(cp, "%s", msg)
		}
	}
}

// hashBytes is the output size of an HS algorithm's hash.
func hashBytes(alg string) int {
	switch alg {
	case "HS384":
		return 48
	case "HS512":
		return 64
	}
	return 32
}

// keyFits reports, for a public key from a file, whether it can verify
// alg; "" when it can or when there is no file key.
func keyFits(key crypto.PublicKey, alg string) string {
	switch k := key.(type) {
	case nil:
		return ""
	case *rsa.PublicKey:
		if !slices.Contains(rsaAlgs, alg) {
			return fmt.Sprintf("public_key_file holds an RSA key, which cannot verify %s", alg)
		}
	case *ecdsa.PublicKey:
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		if want == nil || k.Curve != want {
			return fmt.Sprintf("public_key_file holds an EC key on %s, which cannot verify %s", k.Curve.Params().Name, alg)
		}
	case ed25519.PublicKey:
		if alg != "EdDSA" {
			return fmt.Sprintf("public_key_file holds an Ed25519 key, which cannot verify %s", alg)
		}
	}
	return ""
}

// readConfigFile reads a file named by the config, relative to its
// directory, capped at 1 MiB.
func readConfigFile(d *decoder, p, name string) ([]byte, bool) {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(d.baseDir, path)
	}
	data, err := d.readFile(path)
	if err != nil {
		d.errorAt(p, "cannot read %q: %v", name, unwrapPathError(err))
		return nil, false
	}
	if len(data) > 1<<20 {
		d.errorAt(p, "%q is larger than 1MiB", name)
		return nil, false
	}
	return data, true
}

// readPublicKey reads and parses a PEM public key.
func readPublicKey(d *decoder, p, name string) crypto.PublicKey {
	data, ok := readConfigFile(d, p, name)
	if !ok {
		return nil
	}
	key, msg := ParsePublicKeyPEM(name, data)
	if msg != "" {
		d.errorAt(p, "%s", msg)
	}
	return key
}

// ParsePublicKeyPEM parses the PEM public key file name holds (PKIX, PKCS#1
// or a certificate): RSA of at least 2048 bits, EC or Ed25519. On failure
// it returns a message for the user, naming the file.
func ParsePublicKeyPEM(name string, data []byte) (crypto.PublicKey, string) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Sprintf("%q: expected a PEM public key (\"-----BEGIN PUBLIC KEY-----\"), found none", name)
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, fmt.Sprintf("%q holds a private key; the gateway needs only the public key", name)
		}
		return nil, fmt.Sprintf("%q: expected a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE block, got %q", name, block.Type)
	}
	if err != nil {
		return nil, fmt.Sprintf("%q: cannot parse the public key: %v", name, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Sprintf("%q: expected an RSA key of at least 2048 bits, got %d", name, k.N.BitLen())
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Sprintf("%q: expected an RSA, EC or Ed25519 public key, got %T", name, key)
	}
	return key, ""
}

// readHtpasswd reads and checks an htpasswd file: bcrypt and {SHA} entries.
func readHtpasswd(d *decoder, p, name string) []HtpasswdUser {
	data, ok := readConfigFile(d, p, name)
	if !ok {
		return nil
	}
	users, msgs := ParseHtpasswd(name, data)
	for _, m := range msgs {
		d.errorAt(p, "%s", m)
	}
	return users
}

// ParseHtpasswd parses the htpasswd file name holds: "user:hash" lines,
// bcrypt ($2a$, $2b$, $2y$) or {SHA}; blank lines and "#" comments are
// skipped. It returns the valid users and a message per problem.
func ParseHtpasswd(name string, data []byte) ([]HtpasswdUser, []string) {
	var users []HtpasswdUser
	var msgs []string
	seen := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, found := strings.Cut(line, ":")
		if msg := checkHtpasswdEntry(user, hash, found); msg != "" {
			msgs = append(msgs, fmt.Sprintf("%s line %d: %s", name, i+1, msg))
			continue
		}
		if first, dup := seen[user]; dup {
			msgs = append(msgs, fmt.Sprintf("%s line %d: duplicate user %q (first at line %d)", name, i+1, clip(user), first))
			continue
		}
		seen[user] = i + 1
		users = append(users, HtpasswdUser{Name: user, Hash: hash})
	}
	if len(users) == 0 && len(msgs) == 0 {
		msgs = append(msgs, fmt.Sprintf("%q holds no users", name))
	}
	return users, msgs
}

// checkHtpasswdEntry checks one "user:hash" line; "" when it is valid.
func checkHtpasswdEntry(user, hash string, found bool) string {
	switch {
	case !found || user == "":
		return "expected \"user:hash\""
	case strings.HasPrefix(hash, "{SHA}"):
		if b, err := base64.StdEncoding.DecodeString(hash[5:]); err != nil || len(b) != 20 {
			return fmt.Sprintf("user %q: expected {SHA} and a base64 SHA-1 digest", clip(user))
		}
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Sprintf("user %q: invalid bcrypt hash: %v", clip(user), err)
		}
	case strings.HasPrefix(hash, "$apr1$"), strings.HasPrefix(hash, "$1$"):
		return fmt.Sprintf("user %q: MD5 hashes are not supported; use bcrypt (htpasswd -B)", clip(user))
	default:
		return fmt.Sprintf("user %q: unsupported hash; use bcrypt (htpasswd -B) or {SHA}", clip(user))
	}
	return ""
}

func validateAPIKeys(d *decoder, k *APIKeys, p string) {
	credentialSource(d, p, &k.Header, nil, &k.Query, "X-API-Key")
	if len(k.Keys) == 0 && !d.derived(p+".keys") {
		d.errorAt(p, "missing required field \"keys\"")
	}
	hashes := map[[32]byte]int{}
	for i := range k.Keys {
		e := &k.Keys[i]
		ep := fmt.Sprintf("%s.keys[%d]", p, i)
		if e.Consumer == "" {
			d.errorAt(ep, "missing required field \"consumer\"")
		}
		switch {
		case (e.Key == "") == (e.SHA256 == ""):
			if !d.isSet(ep+".key") && !d.isSet(ep+".sha256") {
				d.errorAt(ep, "expected key or sha256, got neither")
			} else if e.Key == "" && e.SHA256 == "" {
				d.errorAt(ep+".key", "expected a key, got \"\" (is the variable set?)")
			} else {
				d.errorAt(ep, "expected key or sha256, got both")
			}
			continue
		case e.Key != "":
			if len(e.Key) < 16 {
				d.errorAt(ep+".key", "expected a key of at least 16 characters, got %d", len(e.Key))
				continue
			}
			e.Hash = sha256.Sum256([]byte(e.Key))
		default:
			b, err := hex.DecodeString(e.SHA256)
			if err != nil || len(b) != 32 {
				d.errorAt(ep+".sha256", "expected 64 hex digits (sha256 of the key), got %q", clip(e.SHA256))
				continue
			}
			copy(e.Hash[:], b)
		}
		if j, dup := hashes[e.Hash]; dup {
			d.errorAt(ep, "duplicate key (same as keys[%d])", j)
			continue
		}
		hashes[e.Hash] = i
	}
}

func validateCORS(d *decoder, c *CORS, p string) {
	if len(c.AllowOrigins) == 0 && !d.derived(p+".allow_origins") {
		d.errorAt(p, "missing required field \"allow_origins\"")
	}
	for i, o := range c.AllowOrigins {
		op := fmt.Sprintf("%s.allow_origins[%d]", p, i)
		if o == "*" {
			if c.AllowCredentials {
				d.errorAt(op, "\"*\" cannot be combined with allow_credentials: browsers refuse it; list the origins")
			}
			continue
		}
		if msg := checkOrigin(o); msg != "" {
			d.errorAt(op, "%s", msg)
		}
	}
	for i, m := range c.AllowMethods {
		if !httpguts.ValidHeaderFieldName(m) || strings.ToUpper(m) != m {
			d.errorAt(fmt.Sprintf("%s.allow_methods[%d]", p, i), "expected an upper-case method such as \"GET\", got %q", clip(m))
		}
	}
	checkHeaderList(d, p+".allow_headers", c.AllowHeaders)
	checkHeaderList(d, p+".expose_headers", c.ExposeHeaders)
	if c.MaxAge < 0 {
		d.errorAt(p+".max_age", "expected a duration of at least 0, got %s", c.MaxAge)
	}
}

// checkOrigin validates an allowed origin: scheme://host[:port], the host
// possibly starting with one "*." wildcard label.
func checkOrigin(o string) string {
	bad := fmt.Sprintf("expected an origin such as \"https://app.example.com\" or \"https://*.example.com\", got %q", clip(o))
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || (scheme != "http" && scheme != "https") || rest == "" || strings.ContainsAny(rest, "/?#@") {
		return bad
	}
	host := rest
	if h, port, err := splitPort(rest); err == nil {
		host = h
		if !allDigits(port) {
			return bad
		}
	}
	host = strings.TrimPrefix(host, "*.")
	if strings.Contains(host, "*") {
		return bad
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return ""
	}
	if !validHostName(host, false) || strings.ToLower(host) != host {
		return bad
	}
	return ""
}

// splitPort splits "host:port" where host may be a bracketed IPv6.
func splitPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.HasSuffix(s, "]") {
		return s, "", fmt.Errorf("no port")
	}
	return s[:i], s[i+1:], nil
}

// checkSettableHeader validates a header name the gateway sets on a
// request or response; "" when it may be set.
func checkSettableHeader(name string) string {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Sprintf("expected a header name, got %q", clip(name))
	}
	switch strings.ToLower(name) {
	case "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
		"upgrade", "proxy-connection", "expect":
		return fmt.Sprintf("header %q describes the message or the connection and cannot be set by rules", name)
	}
	return ""
}

func checkHeaderMap(d *decoder, p string, m map[string]string) {
	for k, v := range m {
		kp := joinPath(p, k)
		if msg := checkSettableHeader(k); msg != "" {
			d.errorAt(kp, "%s", msg)
		} else if !httpguts.ValidHeaderFieldValue(v) {
			d.errorAt(kp, "expected a header value without control characters, got %q", clip(v))
		}
	}
}

func checkHeaderList(d *decoder, p string, list []string) {
	for i, h := range list {
		if !httpguts.ValidHeaderFieldName(h) {
			d.errorAt(fmt.Sprintf("%s[%d]", p, i), "expected a header name, got %q", clip(h))
		}
	}
}
