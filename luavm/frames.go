package luavm

import lua "github.com/yuin/gopher-lua"

// gopher-lua (v1.1.2) keeps the call stack of an LState made with
// MinimizeStackMemory in segments of lua.FramesPerSegment frames, taken
// from and given back to one process-wide sync.Pool without being
// cleared: a frame keeps pointing at the function that last ran in it
// after it is popped. A new LState takes its first segment from that pool
// and holds it for its whole life, so the stale frames of whichever LState
// used the segment before stay reachable from it: a closed VM's functions,
// through their closures the VM and its Script, and through the Script's
// Host the retired server snapshot with all its tenants, pools and
// scripts. With 1,000 tenants and 20 scripts, 3 to 7 retired snapshots
// stayed alive that way, 15 MiB of live heap after a few reloads (issue 9;
// server.TestReloadHeapReturnsToBaseline).
//
// clearFrames fills the first segment of L's call stack with frames of
// frameClearer, which refers to nothing: run on a new LState, the segment
// it keeps holds no other LState's frames; run before LState.Close, the
// segment Close gives back to the pool holds none of L's. Segments beyond
// the first are held only while a call that deep runs; those a popped
// call gives back keep their frames until a later call reuses them or two
// garbage collections empty the pool.
func clearFrames(L *lua.LState) {
	L.Push(frameClearer)
	L.Push(frameDepths[lua.FramesPerSegment])
	// It cannot fail on a sound state; a VM dropped after a Go panic may
	// be in any state, and is closed anyway.
	_ = L.PCall(1, 0, nil)
	L.SetTop(0)
}

// frameClearer calls itself until it is n frames deep. It is shared by
// every LState: a Go function with no environment, upvalues or closure, so
// a stale frame pointing at it keeps nothing else alive.
var frameClearer = &lua.LFunction{IsG: true}

// frameDepths are its arguments, boxed once: a number made an LValue
// allocates.
var frameDepths [lua.FramesPerSegment + 1]lua.LValue

func init() {
	frameClearer.GFunction = clearFramesCall
	for i := range frameDepths {
		frameDepths[i] = lua.LNumber(i)
	}
}

func clearFramesCall(L *lua.LState) int {
	if n, _ := L.Get(1).(lua.LNumber); n > 1 {
		L.Push(frameClearer)
		L.Push(frameDepths[int(n)-1])
		L.Call(1, 0)
	}
	return 0
}
