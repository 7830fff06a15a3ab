package luavm

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// vm is one sandboxed Lua state of a script, with everything a request
// needs already built: the script's routers flattened, each route's
// middleware chain composed (once, at creation), and the req, w and header
// userdata that are rebound to each request instead of allocated.
//
// A vm belongs to the goroutine that took it from the pool until it is put
// back or closed; nothing in it is safe for concurrent use. The timer
// goroutine of its deadline only closes the deadline's channel.
type vm struct {
	s  *Script
	L  *lua.LState
	dl *deadline

	// ctx is the request being served; nil between requests, so a binding
	// used outside a request fails instead of touching a recycled ctx.
	ctx *fasthttp.RequestCtx
	// reqCtx is req.Context: created on first use in a request, dropped
	// when it ends.
	reqCtx *lua.LTable

	req, w, reqHeader, respHeader, reqURL *lua.LUserData
	reqMethods                            *lua.LTable
	jsonArray                             *lua.LTable    // metatable marking tables that encode as JSON arrays
	jsonNull                              *lua.LUserData // json.null

	// build is non-nil only while the main chunk runs: the chi DSL
	// records into it and refuses to define routes at request time.
	build *buildState

	// handlers holds the composed Lua function of each dispatch target,
	// indexed as Script.targets.
	handlers []lua.LValue

	// natives maps the Go-backed handler functions this VM created
	// (keystone.Proxy handlers, the fallback, the default 405) to their
	// fasthttp handlers, so a route that is nothing but one of them is
	// dispatched without entering Lua.
	natives      map[*lua.LFunction]fasthttp.RequestHandler
	proxyFns     map[string]*lua.LFunction
	fallbackFn   *lua.LFunction
	notAllowedFn *lua.LFunction

	// hdrBuf and hdrEnds hold the response headers saved around a native
	// handler: keys and values back to back, hdrEnds their end offsets;
	// hdrRestore marks the pairs the handler's answer lacks.
	hdrBuf     []byte
	hdrEnds    []int
	hdrRestore []bool

	// wrote is set when the script wrote the response body itself
	// (w:Write, w:SetBody) and cleared when a native handler (a proxy)
	// replaced the response: only a body the script wrote gets a default
	// Content-Type.
	wrote bool
	// sniffHead and sniffType memoise the last defaultContentType: the
	// first 512 bytes of a body and the type sniffed from them. A handler
	// writing the same text each time (most do) sniffs it once per VM:
	// http.DetectContentType took ~1µs, a Hello World request 2µs.
	sniffHead []byte
	sniffType string

	// modules caches require results; loading holds the modules whose
	// chunk is running, to report require cycles.
	modules map[string]lua.LValue
	loading map[string]bool
}

// buildState collects what running the main chunk defines.
type buildState struct {
	errs ErrorList
}

// record notes a load error and lets the script go on, so one load reports
// every bad pattern or target at once, as `keystone check` wants.
func (b *buildState) record(e *Error) { b.errs = append(b.errs, e) }

// newState creates a sandboxed LState with the script's limits and the
// keystone bindings installed. It does not run the script.
func (s *Script) newState() *vm {
	L := lua.NewState(lua.Options{
		SkipOpenLibs:     true,
		CallStackSize:    s.cfg.CallStackSize,
		RegistrySize:     min(initialRegistrySize, s.cfg.RegistryMaxSize),
		RegistryMaxSize:  s.cfg.RegistryMaxSize,
		RegistryGrowStep: registryGrowStep,
	})
	v := &vm{
		s:        s,
		L:        L,
		dl:       newDeadline(),
		natives:  make(map[*lua.LFunction]fasthttp.RequestHandler),
		proxyFns: make(map[string]*lua.LFunction),
		modules:  make(map[string]lua.LValue),
		loading:  make(map[string]bool),
	}
	// Once per VM: the context never changes, only its timer is re-armed.
	L.SetContext(v.dl)
	v.openSandbox()
	v.openJSON()
	v.openKeystone()
	v.openChi()
	v.openRequest()
	v.openResponse()
	return v
}

// runMain runs the script's main chunk and returns the router it returned.
// Errors recorded by the DSL come first, then the run's own error.
func (v *vm) runMain() (*routerObj, ErrorList) {
	L := v.L
	v.build = &buildState{}
	defer func() { v.build = nil }()
	L.Push(L.NewFunctionFromProto(v.s.prog.proto))
	err := L.PCall(0, 1, nil)
	end := v.s.endPos()
	if err != nil {
		L.SetTop(0)
		return nil, append(v.build.errs, v.loadError(err, end))
	}
	ret := L.Get(-1)
	L.SetTop(0)
	errs := v.build.errs
	ud, ok := ret.(*lua.LUserData)
	r, isRouter := (*routerObj)(nil), false
	if ok {
		r, isRouter = ud.Value.(*routerObj)
	}
	switch {
	case !isRouter:
		return nil, append(errs, end.errorf("script must return the router from chi.NewRouter(), got %s", ret.Type()))
	case r.inline:
		return nil, append(errs, end.errorf("script must return the router from chi.NewRouter(), got an inline router from With or Group"))
	}
	return r, errs
}

// loadError turns a failed PCall at load into a positioned *Error.
func (v *vm) loadError(err error, where pos) *Error {
	msg := err.Error()
	var aerr *lua.ApiError
	if errors.As(err, &aerr) {
		msg = aerr.Object.String()
	}
	e := errorAt(where, msg)
	if v.dl.expired.Load() {
		e.Msg = fmt.Sprintf("script did not finish loading within %s", buildBudget)
	}
	return e
}

// call runs fn(w, req) for the request in ctx under a budget of Lua run
// time. keep reports whether the VM may serve another request: false after
// the deadline fired (its Done channel is closed for good) or after a Go
// panic (state unknown). A plain Lua error keeps the VM: PCall unwinds the
// Lua stack completely, and dropping the VM would let any client that can
// make a script raise an error force a VM rebuild per request.
func (v *vm) call(ctx *fasthttp.RequestCtx, fn lua.LValue, budget time.Duration) (keep bool, err error) {
	L := v.L
	v.ctx = ctx
	L.Push(fn)
	L.Push(v.w)
	L.Push(v.req)
	v.dl.arm(budget)
	v.wrote = false
	err = L.PCall(2, 0, nil)
	intime := v.dl.disarm()
	if v.wrote && err == nil {
		v.defaultContentType(ctx)
	}
	v.ctx = nil
	v.reqCtx = nil
	L.SetTop(0)
	keep = intime
	if err != nil {
		var aerr *lua.ApiError
		if errors.As(err, &aerr) && aerr.Type == lua.ApiErrorPanic {
			keep = false
		}
	}
	return keep, err
}

// compose applies chain (outermost first) to h the way chi's Chain does:
// chain[0](chain[1](...chain[n-1](h))). Each middleware is a Lua
// function(next) returning function(w, req).
func (v *vm) compose(chain []lua.LValue, h lua.LValue) (lua.LValue, error) {
	L := v.L
	for i := len(chain) - 1; i >= 0; i-- {
		L.Push(chain[i])
		L.Push(h)
		if err := L.PCall(1, 1, nil); err != nil {
			L.SetTop(0)
			return nil, err
		}
		next := L.Get(-1)
		L.SetTop(0)
		if _, ok := next.(*lua.LFunction); !ok {
			return nil, fmt.Errorf("%s middleware returned %s, expected a function(w, req)", funcPos(chain[i]), next.Type())
		}
		h = next
	}
	return h, nil
}

// funcPos names where a Lua function was defined, "file:line:", for errors.
func funcPos(fn lua.LValue) string {
	if f, ok := fn.(*lua.LFunction); ok && f.Proto != nil {
		return fmt.Sprintf("%s:%d:", f.Proto.SourceName, f.Proto.LineDefined)
	}
	return "[Go]:"
}

// newNative wraps a fasthttp handler as a Lua function h(w, req) that runs
// it on the current request with the Lua clock paused, since such handlers
// wait on the network and have their own timeouts.
func (v *vm) newNative(h fasthttp.RequestHandler) *lua.LFunction {
	fn := v.L.NewFunction(func(L *lua.LState) int {
		ctx := v.requestCtx(L)
		if !v.dl.pause() {
			L.RaiseError("%s", errTimeoutText)
		}
		v.keepHeaders(ctx)
		h(ctx)
		v.wrote = false
		v.restoreHeaders(ctx)
		v.dl.resume()
		return 0
	})
	v.natives[fn] = h
	return fn
}

// keepHeaders saves the response headers a script set before handing the
// request to a native handler, which (a proxy) replaces ctx.Response with
// the upstream's answer. restoreHeaders puts back those the answer lacks,
// so a middleware's w:Header():Set before next(w, req) survives
// keystone.Proxy as it survives net/http's ReverseProxy; on a conflict
// the upstream's value wins (set it after next to override). The buffers
// are the VM's, reused: no allocation once they have grown.
func (v *vm) keepHeaders(ctx *fasthttp.RequestCtx) {
	v.hdrBuf, v.hdrEnds = v.hdrBuf[:0], v.hdrEnds[:0]
	for k, val := range ctx.Response.Header.All() {
		if skipKeptHeader(k) {
			continue
		}
		v.hdrBuf = append(v.hdrBuf, k...)
		v.hdrEnds = append(v.hdrEnds, len(v.hdrBuf))
		v.hdrBuf = append(v.hdrBuf, val...)
		v.hdrEnds = append(v.hdrEnds, len(v.hdrBuf))
	}
}

func (v *vm) restoreHeaders(ctx *fasthttp.RequestCtx) {
	// Decide against the upstream's answer alone, before restoring
	// anything: a header the script set twice must come back twice.
	v.hdrRestore = v.hdrRestore[:0]
	for i, start := 0, 0; i+1 < len(v.hdrEnds); i += 2 {
		k := v.hdrBuf[start:v.hdrEnds[i]]
		start = v.hdrEnds[i+1]
		v.hdrRestore = append(v.hdrRestore, string(k) == fasthttp.HeaderSetCookie || len(ctx.Response.Header.PeekBytes(k)) == 0)
	}
	for i, start := 0, 0; i+1 < len(v.hdrEnds); i += 2 {
		k := v.hdrBuf[start:v.hdrEnds[i]]
		val := v.hdrBuf[v.hdrEnds[i]:v.hdrEnds[i+1]]
		start = v.hdrEnds[i+1]
		if v.hdrRestore[i/2] {
			ctx.Response.Header.AddBytesKV(k, val)
		}
	}
}

// skipKeptHeader reports headers that describe the body or the connection,
// which belong to whoever writes the body.
func skipKeptHeader(k []byte) bool {
	switch string(k) {
	case fasthttp.HeaderContentType, fasthttp.HeaderContentLength, fasthttp.HeaderContentEncoding,
		fasthttp.HeaderTransferEncoding, fasthttp.HeaderConnection, fasthttp.HeaderServer, fasthttp.HeaderDate:
		return true
	}
	return false
}

// errTimeoutText is the message gopher-lua raises when the context is done.
const errTimeoutText = "context deadline exceeded"

// requestCtx returns the bound request or raises a Lua error outside one.
func (v *vm) requestCtx(L *lua.LState) *fasthttp.RequestCtx {
	if v.ctx == nil {
		L.RaiseError("no request: req, w and handlers can only be used while a request is served")
	}
	return v.ctx
}

func (v *vm) close() {
	v.dl.stop()
	v.L.Close()
}

// defaultContentType gives a body the script wrote without a Content-Type
// the type net/http's ResponseWriter would: http.DetectContentType of its
// first 512 bytes ("text/plain; charset=utf-8" for text). The server runs
// with fasthttp's NoDefaultContentType, so that an upstream's answer
// without one passes unchanged; a script's answer would otherwise have
// none.
func (v *vm) defaultContentType(ctx *fasthttp.RequestCtx) {
	body := ctx.Response.Body()
	if len(body) == 0 || len(ctx.Response.Header.ContentType()) != 0 || ctx.Response.IsBodyStream() {
		return
	}
	// DetectContentType reads at most 512 bytes.
	head := body[:min(len(body), 512)]
	if v.sniffType == "" || !bytes.Equal(head, v.sniffHead) {
		v.sniffHead = append(v.sniffHead[:0], head...)
		v.sniffType = http.DetectContentType(head)
	}
	ctx.Response.Header.SetContentType(v.sniffType)
}
