package luavm

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// vm is one sandboxed Lua state of a script, with everything a request
// needs already built: the script's routers flattened, each route's
// middleware chain composed (once, at creation), and the req, w and header
// userdata that are rebound to each request instead of allocated.
//
// A vm is locked by the goroutine that took it from the pool until it
// parks, unlocks or closes it; nothing in it is safe for concurrent use.
// Lua runs on the request's thread, pointed at the VM's globals; the
// fields ctx, reqCtx, cur and dl describe the request whose Lua runs now,
// and are rebound when a parked request takes the VM back (see pool).
// The timer goroutine of a deadline only closes the deadline's channel.
type vm struct {
	s *Script
	L *lua.LState // runs the main chunk and composes; requests run on threads

	// dl is the deadline of the Lua running now: the request thread's,
	// or own (the main LState's, which bounds building the VM) between
	// requests.
	dl, own *deadline

	// ctx is the request being served; nil between requests, so a binding
	// used outside a request fails instead of touching a recycled ctx.
	ctx *fasthttp.RequestCtx
	// reqCtx is req.Context: created on first use in a request, dropped
	// when it ends.
	reqCtx *lua.LTable
	// cur is the thread of the request running now.
	cur *thread

	// mu is held while Lua runs on the VM (see pool). running mirrors
	// it for Stats. parked counts requests waiting on the network whose
	// Lua frames live in this VM (changed by its lock holder, read by
	// the reaper). dropped marks a VM out of service: a new request that
	// locks it lets go at once. closed is set, under mu, by whoever is to
	// close it. lastUsed is when it last ran Lua, on the pool's clock.
	mu       sync.Mutex
	running  atomic.Bool
	parked   atomic.Int32
	dropped  atomic.Bool
	closed   bool
	lastUsed atomic.Int64

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

	// sniffHead and sniffType memoise the last defaultContentType: the
	// first 512 bytes of a body and the type sniffed from them. A handler
	// writing the same text each time (most do) sniffs it once per VM:
	// http.DetectContentType took ~1µs, a Hello World request 2µs. Used
	// only by the VM's lock holder.
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

// thread is the per-request part of running Lua: a value stack, a call
// stack and a deadline, pointed at a VM's globals while it serves. Threads
// are pooled per script and hop between the script's VMs; one belongs to
// one request at a time.
type thread struct {
	L    *lua.LState
	dl   *deadline
	g0   *lua.Global
	env0 *lua.LTable

	// The request's state while its VM is lent to others (parked).
	ctx    *fasthttp.RequestCtx
	reqCtx *lua.LTable
	vm     *vm

	// hdrBuf and hdrEnds hold the response headers saved around a native
	// handler: keys and values back to back, hdrEnds their end offsets;
	// hdrRestore marks the pairs the handler's answer lacks.
	hdrBuf     []byte
	hdrEnds    []int
	hdrRestore []bool

	// wrote is set when the script wrote the response body itself
	// (w:Write, w:SetBody) and cleared when a native handler (a proxy)
	// replaced the response: only a body the script wrote gets a default
	// Content-Type. Per request, so a thread's: another request may run
	// on the VM while this one is parked.
	wrote bool

	idleSince int64 // when it was last given back, on the pool's clock
}

// luaOptions are the LState options of VMs and threads. The value stack
// (registry) starts small and grows in registryGrowStep slots up to
// RegistryMaxSize; the call stack grows in segments up to CallStackSize
// instead of being allocated whole (MinimizeStackMemory): 28 KiB of the
// 43 KiB a bare LState cost at the earlier fixed 200 frames and 1,024
// slots (TestMemoryEstimates). gopher-lua pools those segments across
// LStates without clearing them: newThread, newState and close clear the
// first one (clearFrames).
func (s *Script) luaOptions() lua.Options {
	return lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       s.cfg.CallStackSize,
		RegistrySize:        min(initialRegistrySize, s.cfg.RegistryMaxSize),
		RegistryMaxSize:     s.cfg.RegistryMaxSize,
		RegistryGrowStep:    registryGrowStep,
		MinimizeStackMemory: true,
	}
}

// newThread creates a thread. Its LState's own (empty) globals are never
// used by Lua: call points it at a VM's, and back between requests so an
// idle thread keeps no VM alive (and LState.Close finds a Global).
func (s *Script) newThread() *thread {
	t := &thread{L: lua.NewState(s.luaOptions()), dl: newDeadline()}
	clearFrames(t.L)
	t.L.SetContext(t.dl)
	t.g0, t.env0 = t.L.G, t.L.Env
	return t
}

func (t *thread) close() {
	t.dl.stop()
	clearFrames(t.L)
	t.L.Close()
}

// newState creates a sandboxed LState with the script's limits and the
// keystone bindings installed. It does not run the script.
func (s *Script) newState() *vm {
	L := lua.NewState(s.luaOptions())
	clearFrames(L)
	own := newDeadline()
	v := &vm{
		s:        s,
		L:        L,
		own:      own,
		dl:       own,
		natives:  make(map[*lua.LFunction]fasthttp.RequestHandler),
		proxyFns: make(map[string]*lua.LFunction),
		modules:  make(map[string]lua.LValue),
		loading:  make(map[string]bool),
	}
	// Once per VM: the context never changes, only its timer is re-armed.
	L.SetContext(own)
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
		if ov := callStackOverflow(aerr); ov != nil {
			aerr = ov
		}
		msg = aerr.Object.String()
	}
	e := errorAt(where, msg)
	if v.dl.expired.Load() {
		e.Msg = fmt.Sprintf("script did not finish loading within %s", buildBudget)
	}
	return e
}

// call runs fn(w, req) for the request in ctx on thread t, under a budget
// of Lua run time; v is locked by the caller, and is again when call
// returns (parks in between give it back and take it back). keepThread
// reports whether t may serve another request: false after the deadline
// fired (its Done channel is closed for good). keepVM is false after a Go
// panic (state unknown). A plain Lua error keeps both: PCall unwinds the
// Lua stack completely, and dropping them would let any client that can
// make a script raise an error force a rebuild per request.
func (v *vm) call(t *thread, ctx *fasthttp.RequestCtx, fn lua.LValue, budget time.Duration) (keepThread, keepVM bool, err error) {
	L := t.L
	L.G, L.Env = v.L.G, v.L.Env
	t.ctx, t.vm = ctx, v
	v.bind(t)
	L.Push(fn)
	L.Push(v.w)
	L.Push(v.req)
	t.dl.arm(budget)
	t.wrote = false
	err = L.PCall(2, 0, nil)
	keepThread = t.dl.disarm()
	keepVM = true
	if t.wrote && err == nil {
		v.defaultContentType(ctx)
	}
	v.unbind()
	L.SetTop(0)
	L.G, L.Env = t.g0, t.env0
	t.ctx, t.reqCtx, t.vm = nil, nil, nil
	if err != nil {
		var aerr *lua.ApiError
		if errors.As(err, &aerr) && aerr.Type == lua.ApiErrorPanic {
			if ov := callStackOverflow(aerr); ov != nil {
				return keepThread, keepVM, ov
			}
			keepThread, keepVM = false, false
		}
	}
	return keepThread, keepVM, err
}

// callStackOverflow turns gopher-lua's "lua callstack overflow" panic
// into the "stack overflow" Lua error it means, positioned at the
// innermost Lua frame of the traceback, or returns nil for any other
// panic. With MinimizeStackMemory gopher-lua (v1.1.2) panics instead of
// raising: its segmented call stack's IsFull never reports full, so Push
// panics, before it changes anything, and PCall restores the stacks. The
// state is as after a Lua error, so the VM and thread are kept.
func callStackOverflow(aerr *lua.ApiError) *lua.ApiError {
	if aerr.Object == nil || aerr.Object.String() != "lua callstack overflow" {
		return nil
	}
	where := ""
	for _, line := range strings.Split(aerr.StackTrace, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, ": in "); i > 0 && !strings.HasPrefix(line, "[G]") {
			where = line[:i] + ": "
			break
		}
	}
	return &lua.ApiError{Type: lua.ApiErrorRun, Object: lua.LString(where + "stack overflow"), StackTrace: aerr.StackTrace}
}

// bind makes t's request the one v's bindings (req, w, req.Context, the
// deadline builtins poll) refer to.
func (v *vm) bind(t *thread) {
	v.cur, v.ctx, v.reqCtx, v.dl = t, t.ctx, t.reqCtx, t.dl
}

// unbind leaves v between requests.
func (v *vm) unbind() {
	v.cur, v.ctx, v.reqCtx, v.dl = nil, nil, nil, v.own
}

// park gives v to other requests while the current one waits on the
// network: its Lua clock stops and its req.Context is kept on its thread.
// It reports false, without parking, if the deadline already fired; the
// caller then raises the timeout instead of starting the wait. Between
// park and unpark the caller must touch nothing of v: other requests run
// Lua on it.
func (v *vm) park() (*thread, bool) {
	t := v.cur
	if !t.dl.pause() {
		return t, false
	}
	t.reqCtx = v.reqCtx
	v.unbind()
	if v.s.pool.unlock(v, true) {
		// unlock never closes a VM the caller is parked on.
		panic("luavm: parked VM released")
	}
	return t, true
}

// unpark takes back the VM t's request parked, waiting for the Lua
// running on it now (not charged to t's budget), and restarts t's clock.
func (t *thread) unpark() {
	v := t.vm
	v.s.pool.lockThis(v)
	v.bind(t)
	t.dl.resume()
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
		t, ok := v.park()
		if !ok {
			L.RaiseError("%s", errTimeoutText)
		}
		t.keepHeaders(ctx)
		// Deferred so that a panicking handler still takes the VM
		// back before PCall recovers the panic on this goroutine.
		defer t.unpark()
		h(ctx)
		t.wrote = false
		t.restoreHeaders(ctx)
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
// are the thread's, reused: no allocation once they have grown.
func (v *thread) keepHeaders(ctx *fasthttp.RequestCtx) {
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

func (v *thread) restoreHeaders(ctx *fasthttp.RequestCtx) {
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
	v.own.stop()
	clearFrames(v.L)
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
