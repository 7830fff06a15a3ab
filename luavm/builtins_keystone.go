package luavm

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// EnvPrefix is the prefix of the environment variables keystone.Env may
// read. A gateway's environment also holds its admin token and the
// secrets its config expands; tenant scripts must not see those, so the
// operator opts variables in by naming them KEYSTONE_SCRIPT_*.
const EnvPrefix = "KEYSTONE_SCRIPT_"

// keystoneExports are the functions of the keystone module, CamelCase
// like chi's.
var keystoneExports = map[string]func(v *vm, L *lua.LState) int{
	"Proxy": (*vm).proxy,
	"Log":   (*vm).logLua,
	"Env":   (*vm).env,
	// Runtime routes (runtime_routes.go).
	"Routes":      (*vm).luaRoutes,
	"AddRoute":    (*vm).luaAddRoute,
	"RemoveRoute": (*vm).luaRemoveRoute,
}

// storeExports are the functions of keystone.store.
var storeExports = map[string]func(v *vm, L *lua.LState) int{
	"Get":    (*vm).storeGet,
	"Set":    (*vm).storeSet,
	"Incr":   (*vm).storeIncr,
	"Delete": (*vm).storeDelete,
}

// httpExports are the functions of keystone.http.
var httpExports = map[string]func(v *vm, L *lua.LState) int{
	"Get":  func(v *vm, L *lua.LState) int { return v.httpDo(L, fasthttp.MethodGet, 1) },
	"Post": func(v *vm, L *lua.LState) int { return v.httpDo(L, fasthttp.MethodPost, 1) },
	"Do":   func(v *vm, L *lua.LState) int { return v.httpDo(L, "", 1) },
}

// setFuncs binds exports to this VM and sets them in t.
func (v *vm) setFuncs(t *lua.LTable, exports map[string]func(v *vm, L *lua.LState) int) *lua.LTable {
	for name, f := range exports {
		t.RawSetString(name, v.L.NewFunction(func(L *lua.LState) int { return f(v, L) }))
	}
	return t
}

func (v *vm) openKeystone() {
	L := v.L
	mod := v.setFuncs(L.NewTable(), keystoneExports)
	mod.RawSetString("store", v.setFuncs(L.NewTable(), storeExports))
	mod.RawSetString("limit", v.setFuncs(L.NewTable(), limitExports))
	mod.RawSetString("http", v.setFuncs(L.NewTable(), httpExports))
	mod.RawSetString("auth", v.openAuth())
	L.SetGlobal("keystone", mod)
	v.fallbackFn = v.newNative(v.s.fallback)
	v.notAllowedFn = v.newNative(v.s.notAllowed)
}

// proxy is keystone.Proxy(target): a handler h(w, req) running the Host's
// proxy handler for target on the current request. Targets are resolved
// when the script loads, so an unknown one is a load error at this line;
// the handler ignores its arguments and always serves the bound request.
func (v *vm) proxy(L *lua.LState) int {
	target := v.s.opts.Tenant
	if L.GetTop() >= 1 {
		target = L.CheckString(1)
	}
	if fn, ok := v.proxyFns[target]; ok {
		L.Push(fn)
		return 1
	}
	h, err := v.s.proxyHandler(target)
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "keystone.Proxy(") {
			// The Host may already have named the call; say it once.
			msg = fmt.Sprintf("keystone.Proxy(%q): %s", target, msg)
		}
		if v.build == nil {
			L.RaiseError("%s", msg)
		}
		v.build.record(callerPos(L).errorf("%s", msg))
		h = func(ctx *fasthttp.RequestCtx) {
			v.s.host.WriteError(ctx, fasthttp.StatusBadGateway, "unknown proxy target")
		}
	}
	fn := v.newNative(h)
	v.proxyFns[target] = fn
	L.Push(fn)
	return 1
}

// proxyHandler resolves a keystone.Proxy target once per Script.
func (s *Script) proxyHandler(target string) (fasthttp.RequestHandler, error) {
	if h, ok := s.proxies[target]; ok {
		return h, nil
	}
	if s.loading {
		h, err := s.host.ProxyHandler(target)
		if err == nil {
			s.proxies[target] = h
		}
		return h, err
	}
	if h, ok := s.lateProxies.Load(target); ok {
		return h.(fasthttp.RequestHandler), nil
	}
	h, err := s.host.ProxyHandler(target)
	if err != nil {
		return nil, err
	}
	s.lateProxies.Store(target, h)
	return h, nil
}

// logLua is keystone.Log(level, msg, fields): level is debug, info, warn
// or error; fields a table of string keys to strings, numbers or booleans.
func (v *vm) logLua(L *lua.LState) int {
	var level slog.Level
	switch lv := L.CheckString(1); lv {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		L.ArgError(1, "level must be debug, info, warn or error, got "+quote(lv))
	}
	msg := L.CheckString(2)
	fields := L.OptTable(3, nil)
	log := v.logger()
	if !log.Enabled(context.Background(), level) {
		return 0
	}
	var attrs []slog.Attr
	if v.ctx != nil {
		attrs = append(attrs, slog.String("request_id", v.s.requestID(v.ctx)))
	}
	if fields != nil {
		// The first maxLogFields keys in order, kept while walking: a
		// table of a million fields is neither copied nor sorted whole,
		// and the walk polls the deadline.
		var keys []string
		vals := map[string]lua.LValue{}
		n := 0
		trim := func() {
			slices.Sort(keys)
			for _, k := range keys[min(len(keys), maxLogFields):] {
				delete(vals, k)
			}
			keys = keys[:min(len(keys), maxLogFields)]
		}
		fields.ForEach(func(k, val lua.LValue) {
			if n++; n%pollSteps == 0 && v.dl.expiredNow() {
				L.RaiseError("%s", errTimeoutText)
			}
			ks := k.String()
			keys = append(keys, ks)
			vals[ks] = val
			if len(keys) == 4*maxLogFields {
				trim()
			}
		})
		trim()
		if n > maxLogFields {
			attrs = append(attrs, slog.Int("fields_dropped", n-maxLogFields))
		}
		for _, k := range keys {
			attrs = append(attrs, luaAttr(clipLog(k), vals[k]))
		}
	}
	log.LogAttrs(context.Background(), level, clipLog(msg), attrs...)
	return 0
}

func luaAttr(k string, val lua.LValue) slog.Attr {
	switch x := val.(type) {
	case lua.LString:
		return slog.String(k, clipLog(string(x)))
	case lua.LBool:
		return slog.Bool(k, bool(x))
	case lua.LNumber:
		if f := float64(x); f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return slog.Int64(k, int64(f))
		}
		return slog.Float64(k, float64(x))
	}
	return slog.String(k, val.Type().String())
}

// env is keystone.Env(name): os.Getenv for names starting with EnvPrefix;
// other names are an error, so a script cannot probe the gateway's secrets.
func (v *vm) env(L *lua.LState) int {
	name := L.CheckString(1)
	if !strings.HasPrefix(name, EnvPrefix) {
		L.ArgError(1, "only variables named "+EnvPrefix+"* can be read, got "+quote(name))
	}
	if val, ok := os.LookupEnv(name); ok {
		L.Push(lua.LString(val))
	} else {
		L.Push(lua.LNil)
	}
	return 1
}

// ttlArg reads an optional TTL in seconds.
func ttlArg(L *lua.LState, n int) time.Duration {
	secs := float64(L.OptNumber(n, 0))
	if secs < 0 || math.IsNaN(secs) || secs > 1e9 {
		L.ArgError(n, "ttl must be 0 (no expiry) or a positive number of seconds")
	}
	return time.Duration(secs * float64(time.Second))
}

func (v *vm) storeGet(L *lua.LState) int {
	if val, ok := v.s.store.Get(L.CheckString(1)); ok {
		L.Push(lua.LString(val))
	} else {
		L.Push(lua.LNil)
	}
	return 1
}

func (v *vm) storeSet(L *lua.LState) int {
	key := L.CheckString(1)
	L.CheckTypes(2, lua.LTString, lua.LTNumber)
	val := lua.LVAsString(L.Get(2))
	v.checkStoreSize(L, key, val)
	v.s.store.Set(key, val, ttlArg(L, 3))
	return 0
}

// storeIncr is keystone.store.Incr(key, delta, ttl) → new value, or nil, err.
func (v *vm) storeIncr(L *lua.LState) int {
	key := L.CheckString(1)
	delta := L.OptNumber(2, 1)
	if delta != lua.LNumber(int64(delta)) {
		L.ArgError(2, "delta must be an integer")
	}
	n, err := v.s.store.Incr(key, int64(delta), ttlArg(L, 3))
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString(err.Error()))
		return 2
	}
	L.Push(lua.LNumber(n))
	return 1
}

func (v *vm) storeDelete(L *lua.LState) int {
	v.s.store.Delete(L.CheckString(1))
	return 0
}
