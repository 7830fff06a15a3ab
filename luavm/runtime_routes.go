package luavm

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// RuntimeRoutes holds the routes a tenant's script added at run time with
// keystone.AddRoute. It outlives a Script when the server passes the same
// one to the next load of an unchanged script (Options.RuntimeRoutes), so
// a reload that does not change the script keeps them; a changed script
// starts with a new, empty one. Safe for concurrent use.
type RuntimeRoutes struct {
	mu     sync.Mutex
	routes []*runtimeRoute // in the order added; guarded by mu
	// gen counts changes. Written (Add) under mu by every change; read
	// by each Script's lookup to see whether its router is stale.
	gen atomic.Uint64
}

// NewRuntimeRoutes returns an empty set of runtime routes.
func NewRuntimeRoutes() *RuntimeRoutes { return &RuntimeRoutes{} }

// Len returns the number of runtime routes.
func (rr *RuntimeRoutes) Len() int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return len(rr.routes)
}

// runtimeRoute is one route added by keystone.AddRoute. Its handler is
// kept as a function prototype and the values of its upvalues: a Lua
// function belongs to the VM that made it, and the route is served by
// whichever pooled VM is free, which makes its own closure from these.
type runtimeRoute struct {
	method  string
	pattern string // as the script gave it, without the tenant's prefix
	source  string // FILE:LINE of the AddRoute call
	proto   *lua.FunctionProto
	upvals  []lua.LValue // strings, numbers, booleans and nil only
}

// runtimeMux is one Script's router of the runtime routes, rebuilt (copy
// on write) when RuntimeRoutes changes: requests in flight keep the one
// they looked up in.
type runtimeMux struct {
	gen    uint64
	mux    *router.Router // nil when there are no runtime routes
	routes []*runtimeRoute
}

// scriptRuntime is a Script's view of its RuntimeRoutes.
type scriptRuntime struct {
	shared *RuntimeRoutes
	mu     sync.Mutex // serialises rebuilds
	mux    atomic.Pointer[runtimeMux]
}

// runtimeLookup finds the runtime route for method and path, nil if none.
// It runs only after the script's own routes did not match, so the static
// routes' lookup is untouched: one atomic load when nothing was added.
func (s *Script) runtimeLookup(method, path string, ctx *fasthttp.RequestCtx) fasthttp.RequestHandler {
	rr := s.rt.shared
	if rr == nil {
		return nil
	}
	m := s.rt.mux.Load()
	if m == nil || m.gen != rr.gen.Load() {
		m = s.rebuildRuntime()
	}
	if m.mux == nil {
		return nil
	}
	h, _ := m.mux.Lookup(method, path, ctx)
	return h
}

// rebuildRuntime builds the Script's runtime router from the shared list.
func (s *Script) rebuildRuntime() *runtimeMux {
	s.rt.mu.Lock()
	defer s.rt.mu.Unlock()
	rr := s.rt.shared
	rr.mu.Lock()
	gen, routes := rr.gen.Load(), slices.Clone(rr.routes)
	rr.mu.Unlock()
	if m := s.rt.mux.Load(); m != nil && m.gen == gen {
		return m
	}
	m := &runtimeMux{gen: gen, routes: routes}
	if len(routes) > 0 {
		m.mux = newRouter()
		for _, r := range routes {
			fh, err := translatePattern(joinPattern(s.prefix, r.pattern))
			if err == nil {
				err = addRoute(m.mux, r.method, fh, func(ctx *fasthttp.RequestCtx) { s.serveRuntime(ctx, r) })
			}
			if err != nil {
				// Checked when added against the same static routes; a
				// reload that changed them starts a new set.
				s.log.Error("runtime route dropped", slog.String("method", r.method), slog.String("pattern", r.pattern), slog.String("error", err.Error()))
			}
		}
	}
	s.rt.mux.Store(m)
	return m
}

// serveRuntime runs a runtime route's handler in a pooled VM. It makes the
// handler's closure in that VM for the request (one allocation: runtime
// routes are not on the zero-allocation path). The script's middleware
// does not wrap it.
func (s *Script) serveRuntime(ctx *fasthttp.RequestCtx, r *runtimeRoute) {
	t, v, err := s.acquire()
	if err != nil {
		s.busy(ctx, err)
		return
	}
	fn := v.L.NewFunctionFromProto(r.proto)
	for i, val := range r.upvals {
		uv := &lua.Upvalue{}
		uv.SetValue(val)
		fn.Upvalues[i] = uv
	}
	s.run(ctx, t, v, fn)
}

// knownMethods are the methods AddRoute accepts, as chi's Method does.
var knownMethods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

// addRuntime checks and adds a runtime route, or says why not. The live
// router is changed only when everything passed.
func (s *Script) addRuntime(method, pattern string, fn *lua.LFunction, source string) error {
	method = strings.ToUpper(method)
	if !slices.Contains(knownMethods, method) {
		return fmt.Errorf("unknown method %q", method)
	}
	// The pattern alone first: joined to the tenant's prefix, "dyn"
	// would pass as "/appdyn".
	if _, err := translatePattern(pattern); err != nil {
		return fmt.Errorf("pattern %q: %v", pattern, err)
	}
	full := joinPattern(s.prefix, pattern)
	if _, err := translatePattern(full); err != nil {
		return fmt.Errorf("pattern %q: %v", pattern, err)
	}
	if fn.IsG {
		return errors.New("handler: expected a Lua function, got a Go function")
	}
	upvals := make([]lua.LValue, len(fn.Upvalues))
	for i, uv := range fn.Upvalues {
		var val lua.LValue = lua.LNil
		if uv != nil {
			val = uv.Value()
		}
		switch val.Type() {
		case lua.LTNil, lua.LTBool, lua.LTNumber, lua.LTString:
		default:
			name := ""
			if i < len(fn.Proto.DbgUpvalues) {
				name = fn.Proto.DbgUpvalues[i]
			}
			return fmt.Errorf("handler captures %q, a %s: a runtime route's handler runs in any VM, so it may capture only strings, numbers, booleans and nil (use keystone.store for the rest)", name, val.Type())
		}
		upvals[i] = val
	}
	rr := s.rt.shared
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if len(rr.routes) >= s.cfg.MaxRuntimeRoutes {
		return fmt.Errorf("already %d runtime routes, the most lua.max_runtime_routes allows", len(rr.routes))
	}
	for _, r := range rr.routes {
		if r.method == method && r.pattern == pattern {
			return fmt.Errorf("runtime route %s %q already exists; remove it first", method, pattern)
		}
	}
	// Refuse a clash with a static route: the same pattern, one that
	// fasthttp/router cannot hold beside the static tree, or a path the
	// static routes already answer (they are looked up first, so the
	// runtime route would never serve).
	probe := newRouter()
	nop := func(*fasthttp.RequestCtx) {}
	for _, ri := range s.routeInfo {
		if fh, err := translatePattern(ri.Pattern); err == nil {
			_ = addRoute(probe, ri.Method, fh, nop)
		}
	}
	for _, r := range rr.routes {
		if fh, err := translatePattern(joinPattern(s.prefix, r.pattern)); err == nil {
			_ = addRoute(probe, r.method, fh, nop)
		}
	}
	fh, _ := translatePattern(full)
	if err := addRoute(probe, method, fh, nop); err != nil {
		return fmt.Errorf("pattern %q clashes with a route: %v", pattern, err)
	}
	if h := s.match(method, samplePath(full), nil); h != nil {
		return fmt.Errorf("pattern %q is already served by a static route", pattern)
	}
	rr.routes = append(rr.routes, &runtimeRoute{method: method, pattern: pattern, source: source, proto: fn.Proto, upvals: upvals})
	rr.gen.Add(1)
	return nil
}

// samplePath is a path a pattern matches: each parameter and the
// catch-all replaced by "x".
func samplePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '{':
			depth := 1
			for i++; i < len(p) && depth > 0; i++ {
				switch p[i] {
				case '{':
					depth++
				case '}':
					depth--
				}
			}
			i--
			b.WriteByte('x')
		case '*':
			b.WriteByte('x')
		default:
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// removeRuntime removes a runtime route.
func (s *Script) removeRuntime(method, pattern string) error {
	method = strings.ToUpper(method)
	rr := s.rt.shared
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for i, r := range rr.routes {
		if r.method == method && r.pattern == pattern {
			rr.routes = slices.Delete(slices.Clone(rr.routes), i, i+1)
			rr.gen.Add(1)
			return nil
		}
	}
	full := joinPattern(s.prefix, pattern)
	for _, ri := range s.routeInfo {
		if ri.Method == method && ri.Pattern == full {
			return fmt.Errorf("%s %q is a static route: change the script to remove it", method, pattern)
		}
	}
	return fmt.Errorf("no runtime route %s %q", method, pattern)
}

// runtimeInfo lists the runtime routes as Routes reports them.
func (s *Script) runtimeInfo() []RouteInfo {
	rr := s.rt.shared
	if rr == nil {
		return nil
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	out := make([]RouteInfo, 0, len(rr.routes))
	for _, r := range rr.routes {
		out = append(out, RouteInfo{Method: r.method, Pattern: joinPattern(s.prefix, r.pattern), Source: r.source, Runtime: true})
	}
	return out
}

// luaRoutes is keystone.Routes(): an array of {method, pattern, source,
// kind} tables, static routes first.
func (v *vm) luaRoutes(L *lua.LState) int {
	t := L.NewTable()
	for _, r := range v.s.Routes() {
		rt := L.NewTable()
		rt.RawSetString("method", lua.LString(r.Method))
		rt.RawSetString("pattern", lua.LString(r.Pattern))
		rt.RawSetString("source", lua.LString(r.Source))
		kind := "static"
		if r.Runtime {
			kind = "runtime"
		}
		rt.RawSetString("kind", lua.LString(kind))
		t.Append(rt)
	}
	L.Push(t)
	return 1
}

// luaAddRoute is keystone.AddRoute(method, pattern, handler): true, or
// nil and an error message. It may be called only while serving a request.
func (v *vm) luaAddRoute(L *lua.LState) int {
	method, pattern, fn := L.CheckString(1), L.CheckString(2), L.CheckFunction(3)
	if v.build != nil {
		L.RaiseError("keystone.AddRoute: call it from a handler; define the script's own routes with the router")
		return 0
	}
	src := strings.TrimSuffix(L.Where(1), ":")
	err := v.s.addRuntime(method, pattern, fn, src)
	v.audit("route_add", method, pattern, err)
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("keystone.AddRoute: " + err.Error()))
		return 2
	}
	L.Push(lua.LTrue)
	return 1
}

// luaRemoveRoute is keystone.RemoveRoute(method, pattern): true, or nil
// and an error message.
func (v *vm) luaRemoveRoute(L *lua.LState) int {
	method, pattern := L.CheckString(1), L.CheckString(2)
	err := v.s.removeRuntime(method, pattern)
	v.audit("route_remove", method, pattern, err)
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("keystone.RemoveRoute: " + err.Error()))
		return 2
	}
	L.Push(lua.LTrue)
	return 1
}

// audit writes the audit line of a runtime route change: what, who (the
// client of the request whose handler made it), the result.
func (v *vm) audit(what, method, pattern string, err error) {
	who := "script"
	if ctx := v.ctx; ctx != nil {
		who = v.s.host.ClientIP(ctx)
	}
	result, msg := "ok", ""
	if err != nil {
		result, msg = "error", err.Error()
	}
	v.s.cfg.Logger.Info("runtime change", slog.String("component", "audit"), slog.String("what", what),
		slog.String("who", who), slog.String("result", result), slog.String("tenant", v.s.opts.Tenant),
		slog.String("method", strings.ToUpper(method)), slog.String("pattern", pattern), slog.String("error", msg))
}
