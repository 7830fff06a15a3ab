package luavm

import (
	"runtime"
	"testing"
)

// liveHeap returns the live heap after two collections (the second empties
// sync.Pool victim caches the first only moved).
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// heapPer returns the live heap each of n objects made by build holds,
// averaged: the heap delta with all n alive, divided by n.
func heapPer(n int, build func() any) int64 {
	keep := make([]any, 0, n)
	before := liveHeap()
	for range n {
		keep = append(keep, build())
	}
	after := liveHeap()
	runtime.KeepAlive(keep)
	return (after - before) / int64(n)
}

// TestMemoryEstimates measures what one VM and one request thread of the
// middleware + keystone.Proxy script hold on the heap, and checks the
// figures the memory budget charges (vmCost, threadCost) are not below
// them. A thread is measured after serving a request through the
// middleware, so the value stack it grew to is counted.
//
// Measured (go1.26, gopher-lua v1.1.2): a VM about 96 KiB, where it was
// 126 KiB with a fixed 200-frame call stack and a 1,024-slot registry (of
// which the LState alone 43 KiB, 14 KiB now; the sandbox and libraries
// are 26 KiB, the keystone, chi, json, req and w bindings 58 KiB); a
// request thread about 12 KiB.
func TestMemoryEstimates(t *testing.T) {
	e := newEnv(t)
	host := &slowHost{testHost: e.host, delay: 0}
	s := e.load(t, testConfig(nil), scriptFS(`
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    req:Header():Set("X-Gateway", "keystone")
    next(w, req)
    w:Header():Set("X-Served-By", "keystone")
  end
end)
r:Handle("/*", keystone.Proxy("slow"))
return r
`), "main.lua", Options{Host: host})
	const n = 200
	vmBytes := heapPer(n, func() any {
		v, _, errs := s.buildVM(false)
		if errs != nil {
			t.Fatal(errs)
		}
		return v
	})
	threadBytes := heapPer(n, func() any {
		th := s.newThread()
		v, _ := s.pool.getVM()
		ctx := newCtx("GET", "/x")
		if _, _, err := v.call(th, ctx, v.handlers[0], s.cfg.MaxExecution); err != nil || string(ctx.Response.Body()) != "slow done" {
			t.Fatalf("%v %q", err, ctx.Response.Body())
		}
		s.pool.unlock(v, false)
		return th
	})
	t.Logf("heap per VM %d B (charged %d), per request thread %d B (charged %d)", vmBytes, vmCost, threadBytes, threadCost)
	if vmBytes > vmCost {
		t.Errorf("a VM holds %d B, above the %d B vmCost the budget charges", vmBytes, vmCost)
	}
	if threadBytes > threadCost {
		t.Errorf("a thread holds %d B, above the %d B threadCost the budget charges", threadBytes, threadCost)
	}
}
