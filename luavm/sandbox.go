package luavm

import (
	"log/slog"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// The sandbox opens base, table, string, math and a reduced os, then
// removes or replaces every function that reaches outside the VM:
//
//   - dofile, loadfile: read the host file system.
//   - load, loadstring: compile code at request time, defeating compile-once
//     (gopher-lua has no bytecode loader to restrict to; text chunks would
//     still be parsed per call). Scripts use require instead.
//   - module, require: replaced by a require that only reads .lua files from
//     the script's own fs.FS, compiled once per script.
//   - getfenv, setfenv: rewire environments; nothing in the DSL needs them.
//   - collectgarbage: a stop-the-world GC of the whole gateway on demand.
//   - newproxy, _printregs: undocumented gopher-lua helpers.
//   - print: would write to the gateway's stdout; logs at debug instead.
//   - string.dump: unsupported by gopher-lua anyway.
//   - math.randomseed: would reseed the process-wide math/rand source that
//     other tenants share; a no-op.
//   - os: only time, clock, date and difftime remain.
//
// io, debug, package, coroutine and channel are never opened. coroutine in
// particular would make gopher-lua derive a context.WithCancel (and a
// goroutine) from the VM's deadline for every coroutine. Reading any name
// removed here raises "NAME is not available in scripts" (see
// unavailableIndex).
var removedGlobals = []string{
	"dofile", "loadfile", "load", "loadstring", "module", "require",
	"getfenv", "setfenv", "collectgarbage", "newproxy", "_printregs",
}

var keptOSFuncs = []string{"time", "clock", "date", "difftime"}

// unavailableLibs are the standard globals never opened in the sandbox.
// Reading one (or one of removedGlobals) raises "io is not available in
// scripts" instead of the puzzling "attempt to index a non-table
// object(nil)" that io.open would give.
var unavailableLibs = []string{"io", "debug", "package", "coroutine", "channel"}

// removedFields are the library functions the sandbox removes from tables
// it keeps.
var removedFields = map[string][]string{
	lua.OsLibName:     {"execute", "exit", "getenv", "remove", "rename", "setenv", "setlocale", "tmpname"},
	lua.StringLibName: {"dump"},
}

func (v *vm) openSandbox() {
	L := v.L
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.OsLibName, lua.OpenOs},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	g := L.G.Global
	for _, name := range removedGlobals {
		g.RawSetString(name, lua.LNil)
	}

	full := L.GetGlobal(lua.OsLibName).(*lua.LTable)
	os := L.NewTable()
	for _, name := range keptOSFuncs {
		os.RawSetString(name, full.RawGetString(name))
	}
	L.SetGlobal(lua.OsLibName, os)

	str := L.GetGlobal(lua.StringLibName).(*lua.LTable)
	str.RawSetString("dump", lua.LNil)
	math := L.GetGlobal(lua.MathLibName).(*lua.LTable)
	math.RawSetString("randomseed", L.NewFunction(func(*lua.LState) int { return 0 }))

	L.SetGlobal("print", L.NewFunction(v.print))
	L.SetGlobal("require", L.NewFunction(v.require))
	v.openLimits(g, str, L.GetGlobal(lua.TabLibName).(*lua.LTable))

	// Only a miss reaches __index: present globals stay plain table hits.
	gone := map[string]bool{}
	for _, name := range append(unavailableLibs, removedGlobals...) {
		if g.RawGetString(name) == lua.LNil {
			gone[name] = true
		}
	}
	g.Metatable = unavailableIndex(L, "", gone)
	for lib, names := range removedFields {
		fields := map[string]bool{}
		for _, n := range names {
			fields[n] = true
		}
		L.GetGlobal(lib).(*lua.LTable).Metatable = unavailableIndex(L, lib+".", fields)
	}
}

// unavailableIndex returns a metatable whose __index raises "PREFIXname is
// not available in scripts" for the names in gone, and returns nil for
// any other missing key.
func unavailableIndex(L *lua.LState, prefix string, gone map[string]bool) *lua.LTable {
	mt := L.NewTable()
	mt.RawSetString("__index", L.NewFunction(func(L *lua.LState) int {
		if k, ok := L.Get(2).(lua.LString); ok && gone[string(k)] {
			L.RaiseError("%s%s is not available in scripts", prefix, string(k))
		}
		L.Push(lua.LNil)
		return 1
	}))
	return mt
}

// print logs its arguments, tab-separated as Lua's print, at debug level.
func (v *vm) print(L *lua.LState) int {
	n := L.GetTop()
	var b []byte
	for i := 1; i <= n; i++ {
		if i > 1 {
			b = append(b, '\t')
		}
		b = append(b, L.Get(i).String()...)
	}
	v.logger().Debug(clipLog(string(b)), v.requestAttrs()...)
	return 0
}

// require loads a module from the script's fs.FS: "lib.auth" is
// "lib/auth.lua". The module is compiled once per Script and run once per
// VM; its return value (true if none) is cached in the VM.
func (v *vm) require(L *lua.LState) int {
	name := L.CheckString(1)
	if got, ok := v.modules[name]; ok {
		L.Push(got)
		return 1
	}
	if v.loading[name] {
		L.RaiseError("require %q: loop while loading the module", name)
	}
	path, ok := modulePath(name)
	if !ok {
		L.ArgError(1, "invalid module name "+quote(name)+": expected dot-separated names of letters, digits, '_' or '-'")
	}
	proto, err := v.s.module(path)
	if err != nil {
		L.RaiseError("require %q: %s", name, err.Error())
	}
	v.loading[name] = true
	L.Push(L.NewFunctionFromProto(proto))
	L.Push(lua.LString(name))
	// An unprotected call: a module error unwinds to the caller's pcall
	// or to the request's, with the module's own position.
	func() {
		defer delete(v.loading, name)
		L.Call(1, 1)
	}()
	ret := L.Get(-1)
	L.Pop(1)
	if ret == lua.LNil {
		ret = lua.LTrue
	}
	v.modules[name] = ret
	L.Push(ret)
	return 1
}

// module returns the compiled module at path, compiling it on first use.
// Compiled modules and compile errors are cached for the Script's life.
func (s *Script) module(path string) (*lua.FunctionProto, error) {
	s.modMu.Lock()
	defer s.modMu.Unlock()
	if m, ok := s.modules[path]; ok {
		return m.proto, m.err
	}
	var m compiledModule
	file := s.prog.file(path)
	src, rerr := readScript(s.prog.fsys, path, file, s.prog.maxSize)
	if rerr != nil {
		rerr.Msg = strings.Replace(rerr.Msg, "script", "module", 1)
		m.err = rerr
	} else if proto, cerr := compileChunk(src, file); cerr != nil {
		m.err = cerr
	} else {
		m.proto = proto
	}
	s.modules[path] = m
	return m.proto, m.err
}

type compiledModule struct {
	proto *lua.FunctionProto
	err   error
}

// logger returns the script's logger.
func (v *vm) logger() *slog.Logger { return v.s.log }

// requestAttrs returns the request id attribute when a request is bound.
func (v *vm) requestAttrs() []any {
	if v.ctx == nil {
		return nil
	}
	return []any{slog.String("request_id", v.s.requestID(v.ctx))}
}
