package luavm

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// chi patterns are translated to fasthttp/router's:
//
//	chi                  fasthttp/router
//	/users/{id}          /users/{id}
//	/users/{id:[0-9]+}   /users/{id:[0-9]+}   (regexp checked here, at load)
//	/files/*             /files/{*:*}         (catch-all named "*", so URLParam("*") works as in chi)
//
// Differences from chi that the translation makes explicit instead of
// silent: '*' must be the last character and follow '/' (chi also allows
// "/admin*"); parameter names are letters, digits, '_' and '-' (a '?' would
// turn into a fasthttp/router optional parameter).
const catchAll = "{*:*}"

// translatePattern checks a chi pattern and returns its fasthttp/router form.
func translatePattern(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", errors.New(`expected a pattern starting with "/"`)
	}
	var b strings.Builder
	b.Grow(len(p) + 4)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '{':
			depth, j := 1, i+1
			for ; j < len(p) && depth > 0; j++ {
				switch p[j] {
				case '{':
					depth++
				case '}':
					depth--
				}
			}
			if depth != 0 {
				return "", fmt.Errorf("unclosed '{' at offset %d", i)
			}
			name, re, hasRe := strings.Cut(p[i+1:j-1], ":")
			if !validParamName(name) {
				return "", fmt.Errorf("invalid parameter name %q: expected letters, digits, '_' or '-'", name)
			}
			b.WriteByte('{')
			b.WriteString(name)
			if hasRe {
				if re == "" || re == "*" {
					return "", fmt.Errorf("parameter %q: expected a regexp after ':'", name)
				}
				if _, err := regexp.Compile(re); err != nil {
					return "", fmt.Errorf("parameter %q: invalid regexp %q: %v", name, re, unwrapRegexpError(err))
				}
				b.WriteByte(':')
				b.WriteString(re)
			}
			b.WriteByte('}')
			i = j - 1
		case '}':
			return "", fmt.Errorf("unmatched '}' at offset %d", i)
		case '*':
			if i != len(p)-1 {
				return "", errors.New("wildcard '*' must be the last character of a pattern")
			}
			if p[i-1] != '/' {
				return "", errors.New("wildcard '*' must follow '/'")
			}
			b.WriteString(catchAll)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func unwrapRegexpError(err error) string {
	var re *syntax.Error
	if errors.As(err, &re) {
		return string(re.Code)
	}
	return err.Error()
}

func validParamName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkMountPattern(p string) error {
	if p == "/" {
		return nil
	}
	if strings.Contains(p, "*") {
		return errors.New("a mount pattern must not contain '*': everything under it is mounted")
	}
	if strings.HasSuffix(p, "/") {
		return errors.New(`a mount pattern must not end with "/"`)
	}
	_, err := translatePattern(p)
	return err
}

// joinPattern appends a pattern to a mount prefix the way chi's Mount
// routes: the subrouter sees "/" for the mount point itself.
func joinPattern(prefix, p string) string {
	switch {
	case p == "":
		return prefix
	case prefix == "":
		return p
	case p == "/":
		return prefix
	}
	return prefix + p
}

// flatRoute is one route with its full pattern and its whole middleware
// chain: every Use of the routers it is mounted under, then its With and
// Group middleware, outermost first.
type flatRoute struct {
	methods  []string
	pattern  string // full chi pattern
	fh       string // fasthttp/router pattern
	implicit bool   // registered only if no explicit route claims the method and path
	slash    bool   // a subrouter's root at its mount point plus "/": registered in Script.slash
	chain    []lua.LValue
	handler  lua.LValue
	at       pos
}

// flatScope is a mount point: where its router's NotFound and
// MethodNotAllowed apply, and the chain they run in.
type flatScope struct {
	prefix, fh       string
	chain            []lua.LValue
	notFound         *special // nil: the Fallback
	methodNotAllowed *special // nil: a plain 405
	at               pos
}

type flatTable struct {
	routes []flatRoute
	scopes []flatScope // scopes[0] is the root router at the tenant's prefix
}

// signature identifies the routing a VM built, to check that every VM of a
// script built the same routes in the same order.
func (ft *flatTable) signature() string {
	var b strings.Builder
	for _, r := range ft.routes {
		fmt.Fprintf(&b, "%s %s %t %t %d\n", strings.Join(r.methods, ","), r.fh, r.implicit, r.slash, len(r.chain))
	}
	for _, s := range ft.scopes {
		fmt.Fprintf(&b, "scope %s %d %t %t\n", s.fh, len(s.chain), s.notFound != nil, s.methodNotAllowed != nil)
	}
	return b.String()
}

// flatten walks the router tree the script returned.
func flatten(root *routerObj, prefix string) (*flatTable, ErrorList) {
	f := flattener{ft: &flatTable{}, visiting: map[*routerObj]bool{}}
	f.walk(root, prefix, nil, nil, nil, pos{})
	return f.ft, f.errs
}

type flattener struct {
	ft       *flatTable
	errs     ErrorList
	visiting map[*routerObj]bool
	mounted  map[string]pos
}

func (f *flattener) walk(r *routerObj, prefix string, outer []lua.LValue, nf, mna *special, at pos) {
	if f.visiting[r] {
		f.errs = append(f.errs, at.errorf("Mount %q: the router is mounted inside itself", prefix))
		return
	}
	f.visiting[r] = true
	defer delete(f.visiting, r)

	chain := concat(outer, r.mws)
	if r.notFound != nil {
		nf = r.notFound
	}
	if r.methodNotAllowed != nil {
		mna = r.methodNotAllowed
	}
	f.ft.scopes = append(f.ft.scopes, flatScope{
		prefix: prefix, fh: mustTranslatePrefix(prefix), chain: chain, notFound: nf, methodNotAllowed: mna, at: at,
	})
	for _, e := range r.entries {
		full := joinPattern(prefix, e.pattern)
		ch := concat(chain, e.inline)
		switch e.kind {
		case entryRoute:
			f.add(flatRoute{methods: e.methods, pattern: full, chain: ch, handler: e.handler, at: e.at})
			if e.pattern == "/" && prefix != "" {
				// chi's Mount routes both the mount point and the mount
				// point with a trailing slash to the subrouter as "/"
				// (mux.go: handle(pattern) and handle(pattern+"/")).
				// fasthttp/router cannot hold "/api" and "/api/" in one
				// tree, so the second goes to Script.slash.
				f.add(flatRoute{methods: e.methods, pattern: prefix + "/", slash: true, chain: ch, handler: e.handler, at: e.at})
			}
			if e.pattern == "/*" && prefix != "" {
				// chi routes the mount point itself to the subrouter as
				// "/", which "/*" matches with an empty rest.
				f.add(flatRoute{methods: e.methods, pattern: prefix, implicit: true, chain: ch, handler: e.handler, at: e.at})
			}
		case entryMountRouter, entryMountHandler:
			if !f.claimMount(full, e.at) {
				continue
			}
			if e.kind == entryMountRouter {
				f.walk(e.sub, full, ch, nf, mna, e.at)
				continue
			}
			if full != "" {
				f.add(flatRoute{methods: allMethods, pattern: full, chain: ch, handler: e.handler, at: e.at})
			}
			f.add(flatRoute{methods: allMethods, pattern: full + "/*", chain: ch, handler: e.handler, at: e.at})
		}
	}
}

// claimMount rejects a second Mount at the same full prefix, as chi panics
// "attempting to Mount() a handler on an existing path".
func (f *flattener) claimMount(full string, at pos) bool {
	if f.mounted == nil {
		f.mounted = map[string]pos{}
	}
	if prev, ok := f.mounted[full]; ok {
		f.errs = append(f.errs, at.errorf("Mount %q: a handler is already mounted there (line %d)", full, prev.line))
		return false
	}
	f.mounted[full] = at
	return true
}

func (f *flattener) add(r flatRoute) {
	fh, err := translatePattern(r.pattern)
	if err != nil {
		f.errs = append(f.errs, r.at.errorf("route %q: %s", r.pattern, err))
		return
	}
	r.fh = fh
	f.ft.routes = append(f.ft.routes, r)
}

// mustTranslatePrefix translates a mount prefix already checked by Mount.
func mustTranslatePrefix(p string) string {
	if p == "" {
		return ""
	}
	fh, err := translatePattern(p)
	if err != nil {
		return p
	}
	return fh
}

// concat returns a new slice holding a then b, never aliasing either.
func concat(a, b []lua.LValue) []lua.LValue {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := make([]lua.LValue, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}
