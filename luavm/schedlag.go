package luavm

import (
	"sync"
	"sync/atomic"
	"time"
)

// schedLag measures how long the Go scheduler keeps runnable goroutines
// waiting: a goroutine sleeps lagTick at a time and adds how much later
// than asked it woke up. On a host short of CPU every goroutine waits
// alike, so the sum stands for the time a running script lost to the
// scheduler: max_execution is wall-clock time while Lua runs (gopher-lua
// can only be stopped through its context), and without this a starved
// process times out scripts that ran far less than their budget (2–7 of
// 17,500 requests in the 1,000-client test of issue 14 on a loaded 2-core
// machine). A deadline that fires extends itself by the lag measured since
// it was armed, up to lagMaxExtend budgets (deadline.expire).
//
// The meter runs while at least one Script is open (acquire in LoadProgram,
// release in Close): one goroutine for the process, 200 wake-ups a second.
type schedLag struct {
	// total is the lateness summed so far, in nanoseconds. Written by the
	// meter goroutine only; read by deadlines when armed and when they
	// fire. It only grows.
	total atomic.Int64

	mu    sync.Mutex // guards users and stop
	users int
	stop  chan struct{}
}

// sched is the process's meter: scheduling delay is a property of the
// process, not of a script, and one goroutine measures it for all.
var sched schedLag

const (
	lagTick = 5 * time.Millisecond
	// lagNoise is lateness not counted: timer slack on an idle host.
	lagNoise = time.Millisecond
	// lagMaxExtend bounds the extension: a script holds its VM at most
	// (1+lagMaxExtend) × max_execution, however starved the host.
	lagMaxExtend = 4
)

// acquire starts the meter for its first user.
func (m *schedLag) acquire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users++; m.users == 1 {
		m.stop = make(chan struct{})
		go m.run(m.stop)
	}
}

// release stops the meter after its last user.
func (m *schedLag) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users--; m.users == 0 {
		close(m.stop)
	}
}

func (m *schedLag) run(stop <-chan struct{}) {
	t := time.NewTimer(lagTick)
	defer t.Stop()
	last := monotonic()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := monotonic()
		if late := now - last - lagTick; late > lagNoise {
			m.total.Add(int64(late))
		}
		last = now
		t.Reset(lagTick)
	}
}

// lag returns the lateness summed so far.
func (m *schedLag) lag() int64 { return m.total.Load() }
