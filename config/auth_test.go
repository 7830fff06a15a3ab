package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/keystone-gateway/keystone/config"
	"golang.org/x/crypto/bcrypt"
)

// writeAccessFiles writes the key files the auth tests name into a temp
// dir: an RSA and an EC public key, a private key, and htpasswd files.
func writeAccessFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(k any) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"rsa.pem":     pub(&rk.PublicKey),
		"ec.pem":      pub(&ek.PublicKey),
		"private.pem": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		"users":       []byte("# team\nalice:" + string(hash) + "\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"),
		"bad-users":   []byte("carol:$apr1$xyz$abc\ndave\nerin:$2y$10$short\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func parseIn(t *testing.T, dir, yaml string) (*config.Config, error) {
	t.Helper()
	env := func(k string) (string, bool) {
		if k == "PARTNER_KEY" {
			return "0123456789abcdef-partner", true
		}
		return "", false
	}
	return config.Parse(filepath.Join(dir, "keystone.yaml"), []byte(yaml), config.WithEnv(env))
}

func TestAccessConfigLoads(t *testing.T) {
	t.Parallel()
	dir := writeAccessFiles(t)
	c, err := parseIn(t, dir, `
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: "http://127.0.0.1:9001"}]
    auth:
      exclude_paths: [/health, /public/*]
      jwt:
        public_key_file: rsa.pem
        algorithms: [RS256, PS256]
        issuer: https://idp.example.com
        audience: [api]
        required_claims: [sub]
        leeway: 30s
        claims_to_headers: {sub: X-User-Id, "tenant": X-Tenant}
      api_keys:
        query: api_key
        keys:
          - {consumer: partner-a, key: "${PARTNER_KEY}"}
          - {consumer: partner-b, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
      basic: {htpasswd_file: users}
      strip_credentials: true
    ip: {allow: [10.0.0.0/8, "2001:db8::/32"], deny: [10.1.2.3]}
    cors:
      allow_origins: [https://app.example.com, "https://*.example.com"]
      allow_credentials: true
      max_age: 10m
    headers:
      request: {set: {X-Env: prod}, add: {X-Via: keystone}, remove: [X-Debug]}
      response: {set: {X-Content-Type-Options: nosniff}, remove: [Server]}
`)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Tenants[0].Auth
	if a.Mode != "any" || a.JWT.Header != "Authorization" || a.JWT.JWKSRefresh.D().Minutes() != 10 {
		t.Errorf("defaults not applied: mode %q header %q refresh %s", a.Mode, a.JWT.Header, a.JWT.JWKSRefresh)
	}
	if a.JWT.PublicKey == nil {
		t.Error("public key not parsed")
	}
	if a.JWT.ClaimsToHeaders["tenant"] != "X-Tenant" {
		t.Errorf("claims_to_headers = %v", a.JWT.ClaimsToHeaders)
	}
	if a.APIKeys.Header != "" || a.APIKeys.Query != "api_key" {
		t.Errorf("api key source: header %q query %q, want only the query", a.APIKeys.Header, a.APIKeys.Query)
	}
	if a.APIKeys.Keys[0].Hash != sha256.Sum256([]byte("0123456789abcdef-partner")) {
		t.Error("key not hashed")
	}
	if a.APIKeys.Keys[1].Hash != sha256.Sum256([]byte("test")) {
		t.Error("sha256 entry not decoded")
	}
	if len(a.Basic.Users) != 2 || a.Basic.Realm != "api" {
		t.Errorf("basic: users %v realm %q", a.Basic.Users, a.Basic.Realm)
	}
	if got := c.Tenants[0].IP.DenyNets(); len(got) != 1 || got[0].String() != "10.1.2.3/32" {
		t.Errorf("deny nets %v", got)
	}
	if m := c.Tenants[0].CORS.AllowMethods; strings.Join(m, ",") != "GET,HEAD,POST" {
		t.Errorf("cors methods default %v", m)
	}
	if c.Tenants[0].Headers.Request.Set["X-Env"] != "prod" {
		t.Errorf("header rules %+v", c.Tenants[0].Headers)
	}
}

func TestAccessConfigErrors(t *testing.T) {
	t.Parallel()
	dir := writeAccessFiles(t)
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"alg none and an unknown algorithm", `
      jwt: {secret: "0123456789abcdef0123456789abcdef", algorithms: [none, HS265]}`,
			[]string{`keystone.yaml:6:70: tenants[0].auth.jwt.algorithms[0]: algorithm "none" is never accepted`,
				`keystone.yaml:6:76: tenants[0].auth.jwt.algorithms[1]: expected one of HS256`}},
		{"HS256 with a public key source is key confusion", `
      jwt: {jwks_url: "https://idp.example.com/jwks", algorithms: [RS256, HS256]}`,
			[]string{`tenants[0].auth.jwt.algorithms: HS256/384/512 cannot be accepted with a public key source`}},
		{"a secret cannot verify RS256", `
      jwt: {secret: "0123456789abcdef0123456789abcdef", algorithms: [RS256]}`,
			[]string{`tenants[0].auth.jwt.algorithms: a secret verifies only HS256`}},
		{"a short secret", `
      jwt: {secret: "short", algorithms: [HS256]}`,
			[]string{`tenants[0].auth.jwt.secret: expected a secret of at least 32 bytes for HS256, got 5`}},
		{"an RSA key cannot verify ES256", `
      jwt: {public_key_file: rsa.pem, algorithms: [ES256]}`,
			[]string{`tenants[0].auth.jwt.algorithms[0]: public_key_file holds an RSA key, which cannot verify ES256`}},
		{"a private key file", `
      jwt: {public_key_file: private.pem, algorithms: [RS256]}`,
			[]string{`tenants[0].auth.jwt.public_key_file: "private.pem" holds a private key`}},
		{"a missing key file", `
      jwt: {public_key_file: nope.pem, algorithms: [RS256]}`,
			[]string{`tenants[0].auth.jwt.public_key_file: cannot read "nope.pem"`}},
		{"no algorithms and two key sources", `
      jwt: {secret: "0123456789abcdef0123456789abcdef", public_key_file: ec.pem}`,
			[]string{`tenants[0].auth.jwt: expected exactly one key source`, `tenants[0].auth.jwt: missing required field "algorithms"`}},
		{"header and cookie", `
      jwt: {secret: "0123456789abcdef0123456789abcdef", algorithms: [HS256], header: Authorization, cookie: session}`,
			[]string{`tenants[0].auth.jwt.header: expected exactly one of header, cookie or query, got 2`}},
		{"bad htpasswd entries", `
      basic: {htpasswd_file: bad-users}`,
			[]string{`bad-users line 1: user "carol": MD5 hashes are not supported`, `bad-users line 2: expected "user:hash"`,
				`bad-users line 3: user "erin": invalid bcrypt hash`}},
		{"api key entries", `
      api_keys:
        keys:
          - {consumer: a, key: short}
          - {consumer: b, sha256: "xyz"}
          - {key: "0123456789abcdef-x", sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`,
			[]string{`keys[0].key: expected a key of at least 16 characters, got 5`, `keys[1].sha256: expected 64 hex digits`,
				`keys[2]: missing required field "consumer"`, `keys[2]: expected key or sha256, got both`}},
		{"mode all with two credentials in one header", `
      mode: all
      jwt: {secret: "0123456789abcdef0123456789abcdef", algorithms: [HS256]}
      basic: {htpasswd_file: users}`,
			[]string{`tenants[0].auth.mode: mode all cannot require both jwt in the Authorization header and basic`}},
		{"mode all with the token in a cookie", `
      mode: all
      jwt: {secret: "0123456789abcdef0123456789abcdef", algorithms: [HS256], cookie: session, query: x}
      basic: {htpasswd_file: users}`,
			[]string{`tenants[0].auth.jwt.cookie: expected exactly one of header, cookie or query, got 2`}},
		{"no method", `
      mode: some`,
			[]string{`tenants[0].auth.mode: expected any or all, got "some"`, `tenants[0].auth: expected at least one of jwt, api_keys or basic`}},
		{"bad exclude path", `
      exclude_paths: [health, "/a/*/b"]
      basic: {htpasswd_file: users}`,
			[]string{`exclude_paths[0]: expected a path such as "/health"`, `exclude_paths[1]: expected a path`}},
		{"claims to a framing header", `
      jwt: {secret: "0123456789abcdef0123456789abcdef", algorithms: [HS256], claims_to_headers: {sub: Content-Length}}`,
			[]string{`tenants[0].auth.jwt.claims_to_headers.sub: header "Content-Length" describes the message`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseIn(t, dir, "tenants:\n  - name: api\n    path_prefix: /\n    upstreams: [{url: \"http://127.0.0.1:9001\"}]\n    auth:"+c.yaml+"\n")
			if err == nil {
				t.Fatal("loads, want an error")
			}
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("errors lack %q:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "\n") + 1; n != len(c.want) {
				t.Errorf("%d errors, want %d:\n%s", n, len(c.want), got)
			}
		})
	}
}

func TestIPCORSAndHeaderErrors(t *testing.T) {
	t.Parallel()
	_, err := parse(t, `
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: "http://127.0.0.1:9001"}]
    ip: {allow: [10.0.0.0/33, nope], deny: ["2001:db8::/32"]}
    cors:
      allow_origins: ["*", "app.example.com", "https://*.*.example.com", "https://a.example.com/"]
      allow_credentials: true
      allow_methods: [get]
    headers:
      request: {set: {Host: x, "Bad Name": y}, remove: ["a b"]}
      response: {set: {X-A: "v\u0001"}}
`)
	if err == nil {
		t.Fatal("loads, want errors")
	}
	want := []string{
		`x.yaml:6:18: tenants[0].ip.allow[0]: expected an IP address or a CIDR`,
		`x.yaml:6:31: tenants[0].ip.allow[1]: expected an IP address or a CIDR`,
		`x.yaml:8:23: tenants[0].cors.allow_origins[0]: "*" cannot be combined with allow_credentials`,
		`x.yaml:8:28: tenants[0].cors.allow_origins[1]: expected an origin`,
		`x.yaml:8:47: tenants[0].cors.allow_origins[2]: expected an origin`,
		`x.yaml:8:74: tenants[0].cors.allow_origins[3]: expected an origin`,
		`x.yaml:10:23: tenants[0].cors.allow_methods[0]: expected an upper-case method`,
		`tenants[0].headers.request.set.Host: header "Host" describes the message`,
		`tenants[0].headers.request.set.Bad Name: expected a header name`,
		`tenants[0].headers.request.remove[0]: expected a header name`,
		`tenants[0].headers.response.set.X-A: expected a header value without control characters`,
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("errors lack %q:\n%s", w, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != len(want) {
		t.Errorf("%d errors, want %d:\n%s", n, len(want), got)
	}
}

// TestAccessKeysAreDocumented checks that every key of the auth, ip, cors
// and headers blocks has a row in docs/configuration.md.
func TestAccessKeysAreDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		prefix string
		v      any
	}{
		{"", config.Auth{}}, {"", config.JWT{}}, {"", config.APIKeys{}}, {"keys[].", config.APIKey{}},
		{"", config.Basic{}}, {"", config.IPRules{}}, {"", config.CORS{}},
		{"request.", config.RequestHeaderRules{}}, {"response.", config.ResponseHeaderRules{}},
	} {
		rt := reflect.TypeOf(c.v)
		for i := range rt.NumField() {
			key, _, _ := strings.Cut(rt.Field(i).Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			if !strings.Contains(string(doc), "| `"+c.prefix+key+"` |") {
				t.Errorf("%s.%s (`%s%s`) has no row in docs/configuration.md", rt.Name(), rt.Field(i).Name, c.prefix, key)
			}
		}
	}
	for _, key := range []string{"auth", "ip", "cors", "headers"} {
		if !strings.Contains(string(doc), "| `"+key+"` | block |") {
			t.Errorf("tenant key %q has no row in the tenants table", key)
		}
	}
}
