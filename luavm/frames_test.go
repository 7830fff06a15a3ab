package luavm

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// deepScript answers /deep through 12 nested Lua calls, deeper than one
// segment of gopher-lua's call stack (lua.FramesPerSegment frames).
const deepScript = `
local function down(n, w)
  if n == 0 then w:Write("deep") return end
  down(n - 1, w)
end
local r = chi.NewRouter()
r:Get("/deep", function(w, req) down(12, w) end)
return r
`

// TestClosedScriptIsCollected: a closed Script, its VMs and its Host are
// garbage once nothing of the caller's refers to them, however many
// scripts are loaded after it. gopher-lua pools call-stack segments
// process-wide without clearing them, and before clearFrames the first
// segment of every new LState could hold frames of a closed VM, which
// kept that VM's Script and, in the server, a whole retired snapshot alive
// (issue 9).
func TestClosedScriptIsCollected(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(nil)
	var live atomic.Int64
	const rounds = 20
	var cur *Script
	for i := range rounds {
		// A Host of its own per script: what a server snapshot hands in.
		s, err := Load(cfg, scriptFS(deepScript), "main.lua", Options{Tenant: "api", Host: &testHost{upstreams: e.ups}})
		if err != nil {
			t.Fatal(err)
		}
		live.Add(1)
		runtime.AddCleanup(s, func(int) { live.Add(-1) }, i)
		for range 4 {
			ctx := newCtx("GET", "/deep")
			s.Handler(ctx)
			if got := string(ctx.Response.Body()); got != "deep" {
				t.Fatalf("round %d: body %q", i, got)
			}
		}
		if cur != nil {
			cur.Close()
		}
		cur = s
	}
	// Cleanups run on their own goroutine after the cycle that freed
	// their object.
	deadline := time.Now().Add(5 * time.Second)
	for live.Load() > 1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := live.Load(); n != 1 {
		t.Errorf("%d of %d closed scripts still reachable", n-1, rounds-1)
	}
	runtime.KeepAlive(cur)
	cur.Close()
}

// BenchmarkClearFrames bounds what clearFrames adds to creating and
// closing a VM or a request thread (a pool growing under a burst, trimmed
// after it): one Go call 8 frames deep, allocation-free.
func BenchmarkClearFrames(b *testing.B) {
	e := newEnv(b)
	s := e.load(b, testConfig(nil), scriptFS(deepScript), "main.lua", Options{})
	th := s.newThread()
	defer th.close()
	b.ReportAllocs()
	for b.Loop() {
		clearFrames(th.L)
	}
}
