package luavm

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// composeAll composes, in this VM, the handler of every route and the
// NotFound and MethodNotAllowed handlers of every scope, indexed as
// Script.targets. It runs once per VM, at creation, never per request.
func (v *vm) composeAll(ft *flatTable) error {
	v.handlers = make([]lua.LValue, len(ft.routes)+2*len(ft.scopes))
	for i, r := range ft.routes {
		h, err := v.compose(r.chain, r.handler)
		if err != nil {
			return err
		}
		v.handlers[i] = h
	}
	for k, sc := range ft.scopes {
		base := len(ft.routes) + 2*k
		for j, sp := range []*special{sc.notFound, sc.methodNotAllowed} {
			chain, h := sc.chain, lua.LValue(v.fallbackFn)
			if j == 1 {
				h = v.notAllowedFn
			}
			if sp != nil {
				chain, h = concat(sc.chain, sp.inline), sp.handler
			}
			c, err := v.compose(chain, h)
			if err != nil {
				return err
			}
			v.handlers[base+j] = c
		}
	}
	return nil
}

// target returns the fasthttp handler for handler index i: the Go handler
// itself when the composed Lua function is nothing but a native one (a
// keystone.Proxy route without middleware, the default NotFound), so such
// requests never take a VM; otherwise a call into a pooled VM.
func (s *Script) target(v *vm, i int) fasthttp.RequestHandler {
	if fn, ok := v.handlers[i].(*lua.LFunction); ok {
		if h, ok := v.natives[fn]; ok {
			return h
		}
	}
	return func(ctx *fasthttp.RequestCtx) { s.serve(ctx, i) }
}

func newRouter() *router.Router {
	r := router.New()
	// chi semantics: no redirects to a slash-corrected path, no automatic
	// OPTIONS answers, and 405 decided here, per scope.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = false
	r.HandleOPTIONS = false
	return r
}

// defineRoutes builds the routing trees from the first VM's routes.
func (s *Script) defineRoutes(v *vm, ft *flatTable) ErrorList {
	s.signature = ft.signature()
	s.nRoutes = len(ft.routes)
	s.targets = make([]fasthttp.RequestHandler, len(v.handlers))
	for i := range v.handlers {
		s.targets[i] = s.target(v, i)
	}
	s.mux, s.catchAll = newRouter(), newRouter()
	var errs ErrorList

	// As in chi, a later registration of a method and pattern replaces an
	// earlier one; an implicit route only takes what no explicit one has.
	type key struct{ method, fh string }
	winner := map[key]int{}
	var order []key
	for _, implicit := range []bool{false, true} {
		for i, r := range ft.routes {
			if r.implicit != implicit || r.slash {
				continue
			}
			for _, m := range r.methods {
				k := key{m, r.fh}
				if _, ok := winner[k]; !ok {
					order = append(order, k)
				} else if implicit {
					continue
				}
				winner[k] = i
			}
		}
	}
	// fasthttp/router refuses "/p" once "/p/{*:*}" is in a tree (the
	// catch-all marks "/p" as a trailing-slash node) but accepts the other
	// order, so catch-alls go last.
	slices.SortStableFunc(order, func(a, b key) int {
		return cmpBool(strings.HasSuffix(a.fh, catchAll), strings.HasSuffix(b.fh, catchAll))
	})
	hasCatchAll := false
	for _, k := range order {
		i := winner[k]
		r := ft.routes[i]
		if err := addRoute(s.mux, k.method, k.fh, s.targets[i]); err != nil {
			errs = append(errs, r.at.errorf("route %s %q: %s", k.method, r.pattern, err))
			continue
		}
		s.noteRoute(k.method, r.pattern, r.at)
		if strings.HasSuffix(k.fh, catchAll) {
			hasCatchAll = true
			_ = addRoute(s.catchAll, k.method, k.fh, s.targets[i])
		}
		if !slices.Contains(s.methods, k.method) {
			s.methods = append(s.methods, k.method)
		}
	}
	for i, r := range ft.routes {
		if !r.slash {
			continue
		}
		if s.slash == nil {
			s.slash = newRouter()
			// As in chi, a later r:Get("/") replaces an earlier one.
			s.slash.Mutable(true)
		}
		for _, m := range r.methods {
			if err := addRoute(s.slash, m, r.fh, s.targets[i]); err != nil {
				errs = append(errs, r.at.errorf("route %s %q: %s", m, r.pattern, err))
			}
			if !slices.Contains(s.methods, m) {
				s.methods = append(s.methods, m)
			}
		}
	}
	slices.Sort(s.methods)
	if !hasCatchAll {
		s.catchAll = nil
	}

	s.rootMiss = s.missHandler(0)
	if len(ft.scopes) > 1 {
		// Each mount point answers for its prefix and everything under it;
		// prefixes go in before any catch-all, as routes do.
		s.scopes = newRouter()
		for pass := range 2 {
			for k, sc := range ft.scopes[1:] {
				fh := sc.fh
				if pass == 1 {
					fh += "/" + catchAll
				} else if fh == "" {
					continue
				}
				if err := addRoute(s.scopes, fasthttp.MethodGet, fh, s.missHandler(k+1)); err != nil {
					errs = append(errs, sc.at.errorf("Mount %q: %s", sc.prefix, err))
				}
			}
		}
	}
	return errs
}

// addRoute registers a route, turning fasthttp/router's panics (conflicts,
// duplicate wildcards) into errors in chi's pattern syntax.
func addRoute(r *router.Router, method, fh string, h fasthttp.RequestHandler) (err error) {
	defer func() {
		if rec := recover(); rec != nil {
			err = fmt.Errorf("%s", strings.ReplaceAll(fmt.Sprint(rec), catchAll, "*"))
		}
	}()
	r.Handle(method, fh, h)
	return nil
}

// match finds the handler of a route. A trailing-slash recommendation from
// the main tree (a route exists for path without or with its last slash)
// is not a match in chi, which would still try catch-alls: so is this.
//
// A path ending in "/" is first looked up among the subrouter roots at
// their mount point plus "/" (Script.slash): chi routes "/api/" to the
// subrouter mounted at "/api" as "/", where a static "/" route wins over
// a catch-all "/*". No route of the main tree can claim such a path: it
// holds "/api", and fasthttp/router refuses "/api/" beside it.
func (s *Script) match(method, path string, ctx *fasthttp.RequestCtx) fasthttp.RequestHandler {
	if s.slash != nil && len(path) > 1 && path[len(path)-1] == '/' {
		if h, _ := s.slash.Lookup(method, path, ctx); h != nil {
			return h
		}
	}
	h, tsr := s.mux.Lookup(method, path, ctx)
	if h == nil && tsr && s.catchAll != nil {
		h, _ = s.catchAll.Lookup(method, path, ctx)
	}
	return h
}

// miss handles a request no route matched: in the scope of the innermost
// router mounted over its path, 405 if another method matches the path,
// else NotFound.
func (s *Script) miss(ctx *fasthttp.RequestCtx, p string) {
	if s.scopes != nil {
		for {
			h, tsr := s.scopes.Lookup(fasthttp.MethodGet, p, nil)
			if h != nil {
				h(ctx)
				return
			}
			if !tsr || p == "/" {
				break
			}
			// "/a/b/" next to mount "/a/b": chi gives it to the parent's
			// NotFound, the router mounted over "/a".
			p = path.Dir(strings.TrimSuffix(p, "/"))
		}
	}
	s.rootMiss(ctx)
}

func (s *Script) missHandler(scope int) fasthttp.RequestHandler {
	nf := s.targets[s.nRoutes+2*scope]
	mna := s.targets[s.nRoutes+2*scope+1]
	return func(ctx *fasthttp.RequestCtx) {
		if allow := s.allowed(b2s(ctx.Method()), b2s(ctx.Path())); allow != "" {
			ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
			mna(ctx)
			return
		}
		nf(ctx)
	}
}

// allowed lists the other methods that have a route for path, as chi's 405
// does. It allocates only when there is one.
func (s *Script) allowed(method, path string) string {
	var allow []byte
	for _, m := range s.methods {
		if m == method || s.match(m, path, nil) == nil {
			continue
		}
		if len(allow) > 0 {
			allow = append(allow, ", "...)
		}
		allow = append(allow, m...)
	}
	return string(allow)
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
