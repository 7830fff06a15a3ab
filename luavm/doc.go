// Package luavm runs tenant Lua scripts on the request path: compiled once,
// executed in pooled, sandboxed gopher-lua VMs, and written in a chi-shaped
// DSL whose routes are matched in Go by one fasthttp/router tree.
//
// A script builds routers and returns the root one:
//
//	local r = chi.NewRouter()
//	r:Use(function(next)
//	  return function(w, req)
//	    w:Header():Set("X-Served-By", "keystone")
//	    next(w, req)
//	  end
//	end)
//	r:Get("/hello", function(w, req) w:Write("Hello World") end)
//	r:Handle("/*", keystone.Proxy("api"))
//	return r
//
// The server loads it once per configuration snapshot and serves with it:
//
//	script, err := luavm.Load(cfg, scriptsFS, "hello.lua", luavm.Options{
//		Tenant: "api", PathPrefix: "/api", Host: host, Fallback: upstreamProxy,
//	})
//	// err is an ErrorList, one "FILE:LINE: message" per problem.
//	handler := script.Handler // a fasthttp.RequestHandler
//	defer script.Close()
//
// # How a request runs
//
// Load runs the script in a first VM, flattens the routers it built (Route,
// Group, Mount, With) into full patterns, each with its composed middleware
// chain, and registers them in a fasthttp/router tree. Every VM of the pool
// runs the same compiled FunctionProto once at creation and composes its own
// copy of every chain, in the same order, so route i of the tree is handler
// i of every VM. A request is matched in Go; only when a route has Lua to
// run does it take a VM from the pool, arm the VM's deadline, call the
// composed handler with the VM's req and w (rebound, not allocated), and
// hand the VM back. A Hello World route allocates nothing (see
// BenchmarkHelloWorld). A route that is only keystone.Proxy, and a miss
// with no middleware to run, never take a VM.
//
// # Limits
//
// Each request gets Config.MaxExecution of Lua run time, enforced through
// L.SetContext with a per-VM context whose Done channel a per-VM timer
// closes; the clock is paused while a Go call waits on the network. A VM
// whose deadline fired, or in which a Go panic was recovered, is discarded;
// one that raised an ordinary Lua error is kept. Builtins that could build
// huge strings in one call are capped by Config.MaxStringSize, and Lua
// patterns run on a matcher that polls the deadline while it backtracks
// (pattern.go), so no single builtin holds a VM far past MaxExecution.
// Scripts over Config.MaxScriptSize, or with a function of more than 2048
// constants (which gopher-lua compiles in quadratic time), are refused at
// load. The sandbox and the DSL are documented in docs/lua.md.
package luavm
