package luavm

import (
	"context"
	"sync/atomic"
	"time"
)

// deadline is the context.Context each VM hands to L.SetContext once, at
// creation. gopher-lua then checks Done() before every instruction, so a
// closed Done channel stops any Lua loop at the next instruction with a
// "context deadline exceeded" error.
//
// context.WithTimeout per request would cost a timer, a cancelCtx and a
// goroutine-free but allocating propagation each time (~1µs, 3 allocations).
// Instead each VM owns one channel and one func timer for its whole life;
// the hot path only calls Reset and Stop, which allocate nothing (see
// BenchmarkDeadline and TestAllocsDeadline). The price is that a channel
// cannot be reopened: once the timer fires, the VM is discarded, which is
// what a timed-out VM deserves anyway.
//
// Ownership: arm, disarm, pause and resume are called only by the goroutine
// running the VM. The timer goroutine only runs expire. A deadline must not
// be copied.
type deadline struct {
	done  chan struct{}
	timer *time.Timer

	// expired is set by expire (timer goroutine) before done is closed,
	// and read by Err (VM goroutine, after <-done) and expire itself. The
	// CompareAndSwap makes a second firing harmless.
	expired atomic.Bool

	// lag0 is the scheduler lag (sched) when the running budget started,
	// extended the time added to it for lag since, maxExtend the most
	// that may be added. Written by arm and resume (VM goroutine, before
	// the timer is reset) and by expire (timer goroutine); atomics, as
	// the two meet only through the timer.
	lag0, extended, maxExtend atomic.Int64

	// Owned by the VM goroutine.
	end       time.Duration // when the running budget ends, on the monotonic() clock, before extensions
	remaining time.Duration // budget left while paused
	paused    bool
	fired     bool // a Stop returned false: the timer ran or is running
}

var _ context.Context = (*deadline)(nil)

// epoch anchors monotonic. time.Since on a time with a monotonic reading
// reads only the monotonic clock, where time.Now reads the wall clock too:
// one clock read fewer per request, which is most of the cost where clock
// reads are slow (virtual machines without a vDSO clock).
var epoch = time.Now()

func monotonic() time.Duration { return time.Since(epoch) }

func newDeadline() *deadline {
	d := &deadline{done: make(chan struct{})}
	// Created once per VM and stopped at once; the request path only
	// Resets it.
	d.timer = time.AfterFunc(time.Hour, d.expire)
	d.timer.Stop()
	return d
}

// expire runs when the budget's timer fires. If the scheduler kept
// goroutines waiting since the budget started (sched), the script lost that
// time to the host, not to its own work: the budget is extended by it, up
// to lagMaxExtend budgets, and only a budget the script had in full ends
// it.
func (d *deadline) expire() {
	if lag := sched.lag() - d.lag0.Load(); lag > 0 {
		ext := d.extended.Load()
		if grant := min(lag-ext, d.maxExtend.Load()-ext); grant > int64(lagNoise) {
			d.extended.Add(grant)
			d.timer.Reset(time.Duration(grant))
			return
		}
	}
	if d.expired.CompareAndSwap(false, true) {
		close(d.done)
	}
}

// arm starts a budget of run time.
func (d *deadline) arm(budget time.Duration) {
	d.end = monotonic() + budget
	d.paused = false
	d.startLag(budget)
	d.timer.Reset(budget)
}

// startLag starts counting scheduler lag against a running budget.
func (d *deadline) startLag(budget time.Duration) {
	d.lag0.Store(sched.lag())
	d.extended.Store(0)
	d.maxExtend.Store(int64(lagMaxExtend * budget))
}

// disarm stops the budget. It reports whether the deadline did not fire:
// false means Done is (or is about to be) closed and the VM must be
// discarded.
func (d *deadline) disarm() bool {
	if d.paused {
		d.paused = false
		return !d.fired
	}
	if !d.timer.Stop() {
		d.fired = true
	}
	return !d.fired
}

// pause stops the clock around a Go call that waits on the network, so
// upstream latency is not billed as Lua run time. It reports false if the
// deadline already fired; the caller then raises the timeout instead of
// starting the call.
func (d *deadline) pause() bool {
	if d.paused {
		return true
	}
	if d.fired || !d.timer.Stop() {
		d.fired = true
		return false
	}
	d.remaining = d.end + time.Duration(d.extended.Load()) - monotonic()
	d.paused = true
	return true
}

// resume restarts the clock with the budget left at pause.
func (d *deadline) resume() {
	if !d.paused {
		return
	}
	d.paused = false
	d.end = monotonic() + d.remaining
	d.startLag(max(d.remaining, 0))
	// A non-positive duration fires at once: the budget was already spent.
	d.timer.Reset(d.remaining)
}

// stop releases the timer of a VM being closed.
func (d *deadline) stop() {
	d.timer.Stop()
}

// Deadline reports no deadline: the budget pauses and resumes, so no fixed
// instant describes it, and gopher-lua only uses Done.
func (d *deadline) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done returns the channel closed when the budget runs out. It is the same
// channel for the life of the VM.
func (d *deadline) Done() <-chan struct{} { return d.done }

// Err returns context.DeadlineExceeded once Done is closed.
func (d *deadline) Err() error {
	if d.expired.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// Value returns nil: scripts reach request data through req, not the context.
func (d *deadline) Value(any) any { return nil }

// expiredNow reports, without blocking, whether Done is closed. Long Go
// builtins (json.encode of a large table) poll it.
func (d *deadline) expiredNow() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}
