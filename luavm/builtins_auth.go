package luavm

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keystone-gateway/keystone/auth"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// AuthHost is implemented by a Host that tracks the identity a request
// was authenticated as: the tenant's auth sets it before the script runs,
// keystone.auth middleware sets it, req.Auth reads it, and the access log
// records it. A Host without it gives scripts req.Auth = nil, and the
// middleware still refuses requests without a valid credential.
type AuthHost interface {
	// Auth returns the identity of ctx, or nil.
	Auth(ctx *fasthttp.RequestCtx) *auth.Identity
	// SetAuth records the identity of ctx.
	SetAuth(ctx *fasthttp.RequestCtx, id *auth.Identity)
}

// AuthConfig gives a script its tenant's access control, for
// keystone.auth.jwt/api_key/basic: options a script leaves out are taken
// from the tenant's auth block, and a jwt middleware verifies with the
// tenant's JWKS. It also shares the middleware built from the same
// options between the VMs of the script (their verified-token caches with
// them). One AuthConfig serves one Script.
type AuthConfig struct {
	// Base is the tenant's auth block; nil when it has none.
	Base *config.Auth
	// Policy is the tenant's built access control; nil when it has none.
	Policy *auth.Policy
	// Logger receives JWKS messages. If nil, slog.Default().
	Logger *slog.Logger

	mu    sync.Mutex
	built map[string]*auth.Authenticator
}

// authExports are the functions of keystone.auth.
var authExports = map[string]func(v *vm, L *lua.LState) int{
	"jwt":     func(v *vm, L *lua.LState) int { return v.authMiddleware(L, auth.MethodJWT) },
	"api_key": func(v *vm, L *lua.LState) int { return v.authMiddleware(L, auth.MethodAPIKey) },
	"basic":   func(v *vm, L *lua.LState) int { return v.authMiddleware(L, auth.MethodBasic) },
}

// authOptions are the option names of each middleware: the YAML keys of
// the matching block, and strip_credentials.
var authOptions = map[string][]string{
	auth.MethodJWT: {"secret", "public_key_file", "jwks_url", "algorithms", "issuer", "audience", "required_claims",
		"leeway", "header", "cookie", "query", "claims_to_headers", "strip_credentials"},
	auth.MethodAPIKey: {"header", "query", "keys", "strip_credentials"},
	auth.MethodBasic:  {"htpasswd_file", "realm", "strip_credentials"},
}

// authBlocks are the auth block names of each method.
var authBlocks = map[string]string{auth.MethodJWT: "jwt", auth.MethodAPIKey: "api_keys", auth.MethodBasic: "basic"}

// openAuth returns the keystone.auth table.
func (v *vm) openAuth() *lua.LTable {
	return v.setFuncs(v.L.NewTable(), authExports)
}

// authMiddleware is keystone.auth.<method>{options}: a middleware
// function(next) returning a handler that authenticates the request and
// calls next, or answers 401 with the gateway's JSON error and challenge.
// Bad options are load errors at the line of the call.
func (v *vm) authMiddleware(L *lua.LState, method string) int {
	opts := L.OptTable(1, L.NewTable())
	name := "keystone.auth." + method
	if v.build == nil {
		L.RaiseError("%s can only be called while the script loads", name)
	}
	// Building is Go work too (reading key files, a dummy bcrypt hash for
	// unknown users): it must not spend the load budget of the VM.
	if !v.dl.pause() {
		L.RaiseError("%s", errTimeoutText)
	}
	a, err := v.s.authenticator(method, opts)
	v.dl.resume()
	if err != nil {
		v.build.record(callerPos(L).errorf("%s: %s", name, err))
		a = nil
	}
	mw := L.NewFunction(func(L *lua.LState) int {
		next := L.CheckFunction(1)
		L.Push(L.NewFunction(func(L *lua.LState) int {
			ctx := v.requestCtx(L)
			if a == nil {
				v.s.host.WriteError(ctx, fasthttp.StatusUnauthorized, "missing or invalid credentials")
				return 0
			}
			// Verification is Go work with bounds of its own (bcrypt
			// is tens of milliseconds by design; an unknown kid may
			// wait for a JWKS fetch): it must not spend the script's
			// max_execution, as keystone.Proxy's wait does not.
			if !v.dl.pause() {
				L.RaiseError("%s", errTimeoutText)
			}
			id, res := a.Authenticate(ctx)
			v.dl.resume()
			if res.Failed() {
				v.s.host.WriteError(ctx, fasthttp.StatusUnauthorized, "missing or invalid credentials")
				a.Challenge(&ctx.Response.Header, res)
				return 0
			}
			if ah, ok := v.s.host.(AuthHost); ok && id != nil {
				ah.SetAuth(ctx, id)
			}
			L.Push(next)
			L.Push(L.Get(1))
			L.Push(L.Get(2))
			L.Call(2, 0)
			return 0
		}))
		return 1
	})
	L.Push(mw)
	return 1
}

// authenticator returns the authenticator for a middleware's options,
// built once per Script for the same options.
func (s *Script) authenticator(method string, opts *lua.LTable) (*auth.Authenticator, error) {
	vals, err := luaOptions(opts, authOptions[method])
	if err != nil {
		return nil, err
	}
	key, _ := json.Marshal(vals)
	memoKey := method + string(key)
	ac := s.opts.Auth
	if ac != nil {
		ac.mu.Lock()
		defer ac.mu.Unlock()
		if a, ok := ac.built[memoKey]; ok {
			return a, nil
		}
	}
	var base *config.Auth
	if ac != nil {
		base = ac.Base
	}
	cfg, set, err := s.authConfig(method, vals, base)
	if err != nil {
		return nil, err
	}
	if msgs := config.CheckAuth(cfg, s.opts.Tenant, set); len(msgs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	aopts := auth.Options{}
	if ac != nil {
		aopts.Logger = ac.Logger
	}
	a, err := auth.NewAuthenticator(*cfg, aopts)
	if err != nil {
		return nil, err
	}
	if a.JWT != nil && cfg.JWT.JWKSURL != "" {
		var tenantJWT *auth.JWT
		if ac != nil && ac.Policy != nil && ac.Policy.Auth != nil {
			tenantJWT = ac.Policy.Auth.JWT
		}
		if !a.JWT.ShareKeys(tenantJWT) {
			return nil, fmt.Errorf("jwks_url: a script verifies with the tenant's auth.jwt.jwks_url only, got %q", cfg.JWT.JWKSURL)
		}
	}
	if ac != nil {
		if ac.built == nil {
			ac.built = map[string]*auth.Authenticator{}
		}
		ac.built[memoKey] = a
	}
	return a, nil
}

// authConfig builds the auth block of a middleware: the tenant's block of
// that method (if any), with the script's options over it. set lists the
// fields the options wrote, for config.CheckAuth.
func (s *Script) authConfig(method string, vals map[string]any, base *config.Auth) (*config.Auth, []string, error) {
	blk := config.DefaultAuth()
	a := &blk
	if base != nil {
		a.StripCredentials = base.StripCredentials
	}
	if v, ok := vals["strip_credentials"]; ok {
		b, ok := v.(bool)
		if !ok {
			return nil, nil, fmt.Errorf("strip_credentials: expected true or false, got %s", describeOpt(v))
		}
		a.StripCredentials = b
	}
	var set []string
	str := func(k string, dst *string) error {
		v, ok := vals[k]
		if !ok {
			return nil
		}
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: expected a string, got %s", k, describeOpt(v))
		}
		*dst = s
		set = append(set, authBlocks[method]+"."+k)
		return nil
	}
	list := func(k string, dst *[]string) error {
		v, ok := vals[k]
		if !ok {
			return nil
		}
		switch x := v.(type) {
		case string:
			*dst = []string{x}
		case []string:
			*dst = x
		default:
			return fmt.Errorf("%s: expected a string or a list of strings, got %s", k, describeOpt(v))
		}
		return nil
	}
	duration := func(k string, dst *config.Duration) error {
		v, ok := vals[k]
		if !ok {
			return nil
		}
		switch x := v.(type) {
		case float64:
			*dst = config.Duration(x * float64(time.Second))
		case string:
			d, err := time.ParseDuration(x)
			if err != nil {
				return fmt.Errorf("%s: expected a duration such as \"30s\" or a number of seconds, got %q", k, x)
			}
			*dst = config.Duration(d)
		default:
			return fmt.Errorf("%s: expected a duration such as \"30s\", got %s", k, describeOpt(v))
		}
		return nil
	}
	var errs []error
	switch method {
	case auth.MethodJWT:
		jwt := config.DefaultJWT()
		j := &jwt
		if base != nil && base.JWT != nil {
			cp := *base.JWT
			j = &cp
		}
		_, hasSecret := vals["secret"]
		_, hasFile := vals["public_key_file"]
		_, hasJWKS := vals["jwks_url"]
		if hasSecret || hasFile || hasJWKS {
			j.Secret, j.PublicKeyFile, j.JWKSURL, j.PublicKey = "", "", "", nil
		}
		_, hasCookie := vals["cookie"]
		_, hasQuery := vals["query"]
		_, hasHeader := vals["header"]
		if hasCookie || hasQuery || hasHeader {
			j.Header, j.Cookie, j.Query = "", "", ""
		}
		errs = append(errs, str("secret", &j.Secret), str("jwks_url", &j.JWKSURL), str("issuer", &j.Issuer),
			str("header", &j.Header), str("cookie", &j.Cookie), str("query", &j.Query),
			list("algorithms", &j.Algorithms), list("audience", &j.Audience), list("required_claims", &j.RequiredClaims),
			duration("leeway", &j.Leeway))
		if hasFile {
			var name string
			errs = append(errs, str("public_key_file", &name))
			if data, err := s.readOptionFile("public_key_file", name); err != nil {
				errs = append(errs, err)
			} else if key, msg := config.ParsePublicKeyPEM(name, data); msg != "" {
				errs = append(errs, fmt.Errorf("public_key_file: %s", msg))
			} else {
				j.PublicKeyFile, j.PublicKey = name, key
			}
		}
		if v, ok := vals["claims_to_headers"]; ok {
			m, ok := v.(map[string]string)
			if !ok {
				errs = append(errs, fmt.Errorf("claims_to_headers: expected a table of claim names to header names, got %s", describeOpt(v)))
			}
			j.ClaimsToHeaders = m
		}
		a.JWT = j
	case auth.MethodAPIKey:
		keys := config.DefaultAPIKeys()
		k := &keys
		if base != nil && base.APIKeys != nil {
			cp := *base.APIKeys
			k = &cp
		}
		_, hasQuery := vals["query"]
		_, hasHeader := vals["header"]
		if hasQuery || hasHeader {
			k.Header, k.Query = "", ""
		}
		errs = append(errs, str("header", &k.Header), str("query", &k.Query))
		if v, ok := vals["keys"]; ok {
			keys, err := apiKeyOptions(v)
			errs = append(errs, err)
			k.Keys = keys
		}
		a.APIKeys = k
	case auth.MethodBasic:
		b := &config.Basic{}
		if base != nil && base.Basic != nil {
			cp := *base.Basic
			b = &cp
		}
		errs = append(errs, str("realm", &b.Realm))
		if _, ok := vals["htpasswd_file"]; ok {
			var name string
			errs = append(errs, str("htpasswd_file", &name))
			if data, err := s.readOptionFile("htpasswd_file", name); err != nil {
				errs = append(errs, err)
			} else {
				users, msgs := config.ParseHtpasswd(name, data)
				for _, m := range msgs {
					errs = append(errs, fmt.Errorf("htpasswd_file: %s", m))
				}
				b.HtpasswdFile, b.Users = name, users
			}
		}
		a.Basic = b
	}
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	return a, set, nil
}

// apiKeyOptions converts keys = {{consumer=..., key=...}, ...}.
func apiKeyOptions(v any) ([]config.APIKey, error) {
	items, ok := v.([]map[string]string)
	if !ok {
		return nil, fmt.Errorf("keys: expected a list of {consumer = ..., key = ... or sha256 = ...}, got %s", describeOpt(v))
	}
	var out []config.APIKey
	for i, m := range items {
		k := config.APIKey{Consumer: m["consumer"], Key: m["key"], SHA256: m["sha256"]}
		for name := range m {
			if name != "consumer" && name != "key" && name != "sha256" {
				return nil, fmt.Errorf("keys[%d]: unknown field %q", i+1, name)
			}
		}
		out = append(out, k)
	}
	return out, nil
}

// readOptionFile reads a file named by a middleware option from the
// scripts directory: a script can name no file outside it.
func (s *Script) readOptionFile(opt, name string) ([]byte, error) {
	clean := path.Clean(name)
	if !fs.ValidPath(clean) {
		return nil, fmt.Errorf("%s: expected a path inside the scripts directory, got %q", opt, name)
	}
	data, err := fs.ReadFile(s.prog.fsys, clean)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read %q in the scripts directory", opt, name)
	}
	return data, nil
}

// luaOptions converts an options table into Go values: strings, float64,
// bools, []string for lists of strings, map[string]string for string
// tables, []map[string]string for lists of those. Unknown keys are
// errors.
func luaOptions(t *lua.LTable, allowed []string) (map[string]any, error) {
	out := map[string]any{}
	var err error
	t.ForEach(func(k, val lua.LValue) {
		if err != nil {
			return
		}
		ks, ok := k.(lua.LString)
		if !ok {
			err = fmt.Errorf("expected option names, got a %s key", k.Type())
			return
		}
		name := string(ks)
		if !slices.Contains(allowed, name) {
			msg := fmt.Sprintf("unknown option %q", name)
			if s := config.Suggest(name, allowed); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			err = fmt.Errorf("%s", msg)
			return
		}
		var v any
		if v, err = luaOptionValue(name, val); err == nil {
			out[name] = v
		}
	})
	return out, err
}

func luaOptionValue(name string, val lua.LValue) (any, error) {
	switch x := val.(type) {
	case lua.LString:
		return string(x), nil
	case lua.LNumber:
		return float64(x), nil
	case lua.LBool:
		return bool(x), nil
	case *lua.LTable:
		if x.Len() > 0 {
			var strs []string
			var maps []map[string]string
			for i := 1; i <= x.Len(); i++ {
				switch item := x.RawGetInt(i).(type) {
				case lua.LString:
					strs = append(strs, string(item))
				case *lua.LTable:
					m, err := stringTable(name, item)
					if err != nil {
						return nil, err
					}
					maps = append(maps, m)
				default:
					return nil, fmt.Errorf("%s[%d]: expected a string, got %s", name, i, item.Type())
				}
			}
			if len(strs) > 0 && len(maps) > 0 {
				return nil, fmt.Errorf("%s: expected a list of one kind of value", name)
			}
			if maps != nil {
				return maps, nil
			}
			return strs, nil
		}
		return stringTable(name, x)
	}
	return nil, fmt.Errorf("%s: unsupported value of type %s", name, val.Type())
}

func stringTable(name string, t *lua.LTable) (map[string]string, error) {
	m := map[string]string{}
	var err error
	t.ForEach(func(k, val lua.LValue) {
		ks, ok1 := k.(lua.LString)
		vs, ok2 := val.(lua.LString)
		if err == nil && (!ok1 || !ok2) {
			err = fmt.Errorf("%s: expected a table of strings to strings", name)
		}
		if ok1 && ok2 {
			m[string(ks)] = string(vs)
		}
	})
	return m, err
}

// describeOpt renders an option value for "got ...".
func describeOpt(v any) string {
	switch x := v.(type) {
	case string:
		return quote(x)
	case float64, bool:
		return fmt.Sprint(x)
	case []string:
		return "a list"
	}
	return "a table"
}

// reqAuth is req.Auth: {method = ..., consumer = ..., claims = {...}} for
// an authenticated request, nil otherwise. Built per read: it copies the
// claims, which are shared between the requests of one token.
func (v *vm) reqAuth(L *lua.LState) lua.LValue {
	ctx := v.requestCtx(L)
	ah, ok := v.s.host.(AuthHost)
	if !ok {
		return lua.LNil
	}
	id := ah.Auth(ctx)
	if id == nil {
		return lua.LNil
	}
	t := L.NewTable()
	t.RawSetString("method", lua.LString(id.Method))
	t.RawSetString("consumer", lua.LString(id.Consumer))
	claims := L.NewTable()
	keys := slices.Sorted(maps.Keys(id.Claims))
	for _, k := range keys {
		claims.RawSetString(k, v.fromJSON(L, id.Claims[k]))
	}
	t.RawSetString("claims", claims)
	return t
}
