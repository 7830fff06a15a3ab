package luavm

import (
	"strings"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/http/httpguts"
)

// routerObj is the Go side of a router a script builds with
// chi.NewRouter(), With or Group. It only records; flatten turns the
// recorded tree into full patterns and middleware chains once the main
// chunk has returned. The shapes follow chi's Mux: an inline router (With,
// Group) adds its routes to its owner's tree with its own middleware
// copied in front of each handler.
type routerObj struct {
	owner  *routerObj // the mux whose entries this router adds to: itself unless inline
	inline bool
	mws    []lua.LValue // Use middlewares; for an inline router, the With chain
	sealed bool         // a route, With or Mount was added: Use is now an error, as in chi

	// Set on owners only.
	entries          []entry
	notFound         *special
	methodNotAllowed *special

	ud *lua.LUserData
}

type entryKind uint8

const (
	entryRoute        entryKind = iota // a handler for some methods at a pattern
	entryMountRouter                   // a subrouter mounted at a prefix
	entryMountHandler                  // a handler mounted at a prefix (everything under it)
)

type entry struct {
	kind    entryKind
	methods []string
	pattern string // relative to the owner; "" for Mount("/")
	handler lua.LValue
	sub     *routerObj
	inline  []lua.LValue // With/Group middleware in effect, outermost first
	at      pos
}

// special is a NotFound or MethodNotAllowed handler with the inline
// middleware of the router it was set on, as chi chains it.
type special struct {
	inline  []lua.LValue
	handler lua.LValue
	at      pos
}

// allMethods are the methods Handle and Mount register, chi's mALL.
var allMethods = []string{
	fasthttp.MethodConnect, fasthttp.MethodDelete, fasthttp.MethodGet, fasthttp.MethodHead,
	fasthttp.MethodOptions, fasthttp.MethodPatch, fasthttp.MethodPost, fasthttp.MethodPut,
	fasthttp.MethodTrace,
}

// routerExports are the methods of a router, chi's names.
var routerExports = map[string]func(v *vm, L *lua.LState) int{
	"Get":              routeFor(fasthttp.MethodGet),
	"Post":             routeFor(fasthttp.MethodPost),
	"Put":              routeFor(fasthttp.MethodPut),
	"Patch":            routeFor(fasthttp.MethodPatch),
	"Delete":           routeFor(fasthttp.MethodDelete),
	"Head":             routeFor(fasthttp.MethodHead),
	"Options":          routeFor(fasthttp.MethodOptions),
	"Connect":          routeFor(fasthttp.MethodConnect),
	"Trace":            routeFor(fasthttp.MethodTrace),
	"Handle":           routeFor(""),
	"HandleFunc":       routeFor(""),
	"Method":           (*vm).routerMethod,
	"MethodFunc":       (*vm).routerMethod,
	"Use":              (*vm).routerUse,
	"With":             (*vm).routerWith,
	"Group":            (*vm).routerGroup,
	"Route":            (*vm).routerRoute,
	"Mount":            (*vm).routerMount,
	"NotFound":         specialFor(false),
	"MethodNotAllowed": specialFor(true),
}

// openChi installs the global chi module and the router type.
func (v *vm) openChi() {
	L := v.L
	mt := L.NewTypeMetatable("chi.Router")
	methods := L.NewTable()
	for name, f := range routerExports {
		methods.RawSetString(name, L.NewFunction(func(L *lua.LState) int { return f(v, L) }))
	}
	mt.RawSetString("__index", methods)
	mt.RawSetString("__metatable", lua.LString("chi.Router"))
	mod := L.NewTable()
	mod.RawSetString("NewRouter", L.NewFunction(v.chiNewRouter))
	mod.RawSetString("URLParam", L.NewFunction(v.chiURLParam))
	L.SetGlobal("chi", mod)
}

func (v *vm) newRouter(owner *routerObj, inline bool, mws []lua.LValue) *routerObj {
	r := &routerObj{owner: owner, inline: inline, mws: mws}
	if owner == nil {
		r.owner = r
	}
	r.ud = v.L.NewUserData()
	r.ud.Value = r
	r.ud.Metatable = v.L.GetTypeMetatable("chi.Router")
	return r
}

// building returns the build state, or raises: routes are fixed at load.
func (v *vm) building(L *lua.LState) *buildState {
	if v.build == nil {
		L.RaiseError("chi routers can only be built while the script loads, not while it serves a request")
	}
	return v.build
}

func (v *vm) chiNewRouter(L *lua.LState) int {
	v.building(L)
	L.Push(v.newRouter(nil, false, nil).ud)
	return 1
}

func checkRouter(L *lua.LState, n int) *routerObj {
	if ud, ok := L.Get(n).(*lua.LUserData); ok {
		if r, ok := ud.Value.(*routerObj); ok {
			return r
		}
	}
	L.ArgError(n, "router expected, got "+L.Get(n).Type().String())
	return nil
}

func checkHandler(L *lua.LState, n int) *lua.LFunction {
	if fn, ok := L.Get(n).(*lua.LFunction); ok {
		return fn
	}
	L.ArgError(n, "handler function(w, req) expected, got "+L.Get(n).Type().String())
	return nil
}

// inlineChain is the middleware an inline router puts in front of its
// routes; a copy, since later With calls must not alias it.
func (r *routerObj) inlineChain() []lua.LValue {
	if !r.inline || len(r.mws) == 0 {
		return nil
	}
	return append([]lua.LValue(nil), r.mws...)
}

func routeFor(method string) func(v *vm, L *lua.LState) int {
	methods := allMethods
	if method != "" {
		methods = []string{method}
	}
	return func(v *vm, L *lua.LState) int {
		v.addRoute(L, checkRouter(L, 1), methods, L.CheckString(2), checkHandler(L, 3))
		return 0
	}
}

func (v *vm) routerMethod(L *lua.LState) int {
	r := checkRouter(L, 1)
	method := strings.ToUpper(L.CheckString(2))
	if !httpguts.ValidHeaderFieldName(method) {
		L.ArgError(2, "invalid HTTP method "+quote(method))
	}
	v.addRoute(L, r, []string{method}, L.CheckString(3), checkHandler(L, 4))
	return 0
}

func (v *vm) addRoute(L *lua.LState, r *routerObj, methods []string, pattern string, h lua.LValue) {
	b := v.building(L)
	at := callerPos(L)
	if _, err := translatePattern(pattern); err != nil {
		b.record(at.errorf("route %q: %s", pattern, err))
		return
	}
	r.sealed = true
	r.owner.entries = append(r.owner.entries, entry{
		kind: entryRoute, methods: methods, pattern: pattern, handler: h, inline: r.inlineChain(), at: at,
	})
}

func (v *vm) routerUse(L *lua.LState) int {
	r := checkRouter(L, 1)
	b := v.building(L)
	for i := 2; i <= L.GetTop(); i++ {
		checkMiddleware(L, i)
	}
	if r.sealed {
		b.record(callerPos(L).errorf("Use: all middlewares must be defined before routes on a mux"))
		return 0
	}
	for i := 2; i <= L.GetTop(); i++ {
		r.mws = append(r.mws, L.Get(i))
	}
	return 0
}

func checkMiddleware(L *lua.LState, n int) {
	if _, ok := L.Get(n).(*lua.LFunction); !ok {
		L.ArgError(n, "middleware function(next) expected, got "+L.Get(n).Type().String())
	}
}

// with returns an inline router, chi's With: it seals a non-inline router
// and copies an inline one's chain.
func (v *vm) with(L *lua.LState, r *routerObj, first int) *routerObj {
	v.building(L)
	if !r.inline {
		r.sealed = true
	}
	mws := r.inlineChain()
	for i := first; i <= L.GetTop(); i++ {
		checkMiddleware(L, i)
		mws = append(mws, L.Get(i))
	}
	return v.newRouter(r.owner, true, mws)
}

func (v *vm) routerWith(L *lua.LState) int {
	L.Push(v.with(L, checkRouter(L, 1), 2).ud)
	return 1
}

func (v *vm) routerGroup(L *lua.LState) int {
	r := checkRouter(L, 1)
	var fn *lua.LFunction
	if L.Get(2) != lua.LNil {
		fn = L.CheckFunction(2)
	}
	im := v.with(L, r, 3)
	if fn != nil {
		L.Push(fn)
		L.Push(im.ud)
		L.Call(1, 0)
	}
	L.Push(im.ud)
	return 1
}

func (v *vm) routerRoute(L *lua.LState) int {
	r := checkRouter(L, 1)
	pattern := L.CheckString(2)
	fn := L.CheckFunction(3)
	v.building(L)
	sub := v.newRouter(nil, false, nil)
	L.Push(fn)
	L.Push(sub.ud)
	L.Call(1, 0)
	v.mount(L, r, pattern, sub, nil)
	L.Push(sub.ud)
	return 1
}

func (v *vm) routerMount(L *lua.LState) int {
	r := checkRouter(L, 1)
	pattern := L.CheckString(2)
	switch h := L.Get(3).(type) {
	case *lua.LFunction:
		v.mount(L, r, pattern, nil, h)
	case *lua.LUserData:
		sub := checkRouter(L, 3)
		if sub.inline {
			L.ArgError(3, "cannot mount an inline router from With or Group")
		}
		v.mount(L, r, pattern, sub, nil)
	default:
		L.ArgError(3, "router or handler function expected, got "+h.Type().String())
	}
	return 0
}

func (v *vm) mount(L *lua.LState, r *routerObj, pattern string, sub *routerObj, h lua.LValue) {
	b := v.building(L)
	at := callerPos(L)
	if err := checkMountPattern(pattern); err != nil {
		b.record(at.errorf("Mount %q: %s", pattern, err))
		return
	}
	if pattern == "/" {
		pattern = ""
	}
	r.sealed = true
	e := entry{kind: entryMountHandler, pattern: pattern, handler: h, inline: r.inlineChain(), at: at}
	if sub != nil {
		e.kind, e.sub = entryMountRouter, sub
	}
	r.owner.entries = append(r.owner.entries, e)
}

func specialFor(notAllowed bool) func(v *vm, L *lua.LState) int {
	return func(v *vm, L *lua.LState) int {
		r := checkRouter(L, 1)
		h := checkHandler(L, 2)
		v.building(L)
		sp := &special{inline: r.inlineChain(), handler: h, at: callerPos(L)}
		if notAllowed {
			r.owner.methodNotAllowed = sp
		} else {
			r.owner.notFound = sp
		}
		return 0
	}
}

func (v *vm) chiURLParam(L *lua.LState) int {
	checkRequest(L, 1)
	L.Push(v.urlParam(L, L.CheckString(2)))
	return 1
}

// callerPos returns the position of the innermost Lua code on the call
// stack: the line of the r:Get(...) or keystone.Proxy(...) being run.
func callerPos(L *lua.LState) pos {
	for level := 0; ; level++ {
		dbg, ok := L.GetStack(level)
		if !ok {
			return pos{}
		}
		if _, err := L.GetInfo("Sl", dbg, lua.LNil); err != nil {
			continue
		}
		if dbg.CurrentLine > 0 {
			return pos{file: dbg.Source, line: dbg.CurrentLine}
		}
	}
}
