//go:build !race

package luavm

import (
	"testing"
	"time"
)

// Allocation budgets of the hot path, as fasthttp's allocation_test.go.
// Not built with -race, which allocates on its own.

func TestAllocsPoolGetPut(t *testing.T) {
	e := newEnv(t)
	s := e.load(t, testConfig(&logBuffer{}), scriptFS(helloScript), "main.lua", Options{})
	n := testing.AllocsPerRun(1000, func() {
		t, v, _ := s.acquire()
		s.release(t, v)
	})
	if n != 0 {
		t.Errorf("pool get/put: %v allocs, want 0", n)
	}
}

func TestAllocsDeadline(t *testing.T) {
	d := newDeadline()
	defer d.stop()
	n := testing.AllocsPerRun(1000, func() {
		d.arm(time.Hour) // never fires, however loaded the machine
		d.pause()
		d.resume()
		if !d.disarm() {
			t.Fatal("deadline fired")
		}
	})
	if n != 0 {
		t.Errorf("deadline arm/pause/resume/disarm: %v allocs, want 0", n)
	}
}

func TestAllocsHelloWorld(t *testing.T) {
	e := newEnv(t)
	s := e.load(t, testConfig(&logBuffer{}), scriptFS(helloScript), "main.lua", Options{})
	ctx := newCtx("GET", "/hello")
	n := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		s.Handler(ctx)
	})
	if n > 10 {
		t.Errorf("Lua Hello World: %v allocs, want at most 10", n)
	}
}
