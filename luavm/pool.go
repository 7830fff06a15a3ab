package luavm

import (
	"sync"
	"sync/atomic"
	"time"
)

// A request to a script runs on two pooled objects:
//
//   - a thread (a gopher-lua LState made by lua.NewState and pointed at a
//     VM's globals for the request: its own value stack, call stack and
//     deadline, about 12 KiB), held for the whole request;
//   - a VM (the script's globals, libraries and composed handlers, about
//     130 KiB), held only while Lua runs. A Go call that waits on the
//     network (keystone.Proxy handlers, keystone.http, the Fallback)
//     parks: it hands the VM back for other requests and takes the same
//     VM back when the wait is over, since its Lua frames live in that
//     VM's closures.
//
// So in-flight requests cost a thread each, and VMs are needed only for
// the requests running Lua at the same instant. Before this split each
// in-flight request held a whole VM across its upstream wait: ~143 KiB per
// request and a script's concurrency capped at max_vms (issue 14). This is
// OpenResty's model (one Lua VM per worker, a coroutine per request)
// without yields: the parked Lua frames stay on the request's goroutine,
// so a pcall or a Lua middleware between the handler and the wait is no
// obstacle, where gopher-lua cannot yield across a pcall.
//
// Concurrency inside one VM is that of coroutines: a script sees another
// request's changes to its globals across a keystone.Proxy call, as in
// OpenResty, never while its own Lua code runs.

// pool holds the VMs and threads of one script. Every field below mu is
// guarded by it; the counters after it are atomics read by Stats.
//
// A VM or thread taken from the pool belongs to the caller until it is
// given back or dropped; a broken one (timed out, panicked) is dropped,
// never given back. Taking and giving back an idle VM or thread allocate
// nothing (TestAllocsPoolGetPut); waiting does.
//
// The idle lists are stacks, used last in first out: under steady load the
// same few VMs and threads stay warm, and what a burst created sinks to the
// bottom, where trim finds it idle for longer than the idle TTL. (A
// channel, the earlier shape, is first in first out and has a lock inside
// anyway: it kept every burst VM looking busy.)
type pool struct {
	mu sync.Mutex

	idle    []*vm       // unlocked VMs, most recently used last
	threads []*thread   // idle threads, most recently used last
	vmWait  []chan *vm  // requests waiting for any VM, oldest first; nil sent means "room freed, retry"
	thWait  []chan bool // requests waiting for room for a thread, oldest first
	vms     int         // VMs in existence, idle, running or reserved
	nthr    int         // threads in existence, idle, serving or reserved
	reaping bool        // a reaper goroutine is running
	closed  bool        // Close was called: nothing goes back to the idle lists

	// Limits, set at creation.
	poolSize  int
	maxVMs    int
	maxMemory int64
	idleTTL   int64 // nanoseconds

	// stop is closed by drain (Script.Close) to end the reaper.
	stop chan struct{}

	// reap, when set, is started (once at a time) when the pool grows
	// above PoolSize; it calls trim until trim reports nothing left.
	reap func()

	// now is the clock of idle times, in nanoseconds; tests replace it
	// before the first request to advance time instead of sleeping.
	now func() int64

	// Counters, written under mu or by the request that waited, read by
	// Stats without the lock.
	waits, waitNanos, waitTimeouts atomic.Int64
	inflight                       atomic.Int64
}

// Per-object memory, in bytes, that the memory budget charges: measured
// by TestMemoryEstimates (heap delta over many objects after GC, with the
// example middleware + keystone.Proxy script), which fails if either is
// below what it measures. A VM's own estimate covers the sandbox, the
// bindings and a small script; a script with large top-level tables costs
// more per VM, which lua.max_vms bounds.
const (
	vmCost     = 128 << 10
	threadCost = 16 << 10
)

func newPool(cfg Config) *pool {
	return &pool{
		poolSize:  cfg.PoolSize,
		maxVMs:    cfg.MaxVMs,
		maxMemory: cfg.MaxMemory,
		idleTTL:   int64(cfg.IdleVMTTL),
		stop:      make(chan struct{}),
		now:       func() int64 { return int64(monotonic()) },
	}
}

// memory is the budget in use; the caller holds mu.
func (p *pool) memory() int64 { return int64(p.vms)*vmCost + int64(p.nthr)*threadCost }

// getThread returns an idle thread; or, with create, room for a new one
// was reserved (the caller builds it, or calls unreserveThread); or, if
// enqueue, ch is where the caller waits for room (checked and queued under
// one lock, so no wake-up is missed).
func (p *pool) getThread(enqueue bool) (t *thread, create bool, ch chan bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.threads); n > 0 {
		t = p.threads[n-1]
		p.threads[n-1] = nil
		p.threads = p.threads[:n-1]
		return t, false, nil
	}
	// The budget always leaves room for PoolSize VMs: a thread alone
	// cannot run.
	if p.memory()+threadCost+int64(max(0, p.poolSize-p.vms))*vmCost <= p.maxMemory {
		p.nthr++
		p.startReaper(p.nthr > p.poolSize)
		return nil, true, nil
	}
	if enqueue {
		ch = make(chan bool, 1)
		p.thWait = append(p.thWait, ch)
	}
	return nil, false, ch
}

// cancelThreadWait leaves the queue; it reports false if a wake-up was
// already sent, which the caller then drains.
func (p *pool) cancelThreadWait(ch chan bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, w := range p.thWait {
		if w == ch {
			p.thWait = append(p.thWait[:i], p.thWait[i+1:]...)
			return true
		}
	}
	return false
}

// putThread gives back a healthy thread. It reports false after Close:
// the caller then closes it.
func (p *pool) putThread(t *thread) bool {
	p.mu.Lock()
	if p.closed {
		p.nthr--
		p.mu.Unlock()
		return false
	}
	t.idleSince = p.now()
	p.threads = append(p.threads, t)
	p.wakeThreadWaiter()
	p.mu.Unlock()
	return true
}

// unreserveThread gives back the room of a thread that was dropped or
// never built.
func (p *pool) unreserveThread() {
	p.mu.Lock()
	p.nthr--
	p.wakeThreadWaiter()
	p.wakeVMWaiter() // the budget they share has room again
	p.mu.Unlock()
}

// wakeThreadWaiter tells the oldest thread waiter to retry; mu is held.
func (p *pool) wakeThreadWaiter() {
	if len(p.thWait) > 0 {
		p.thWait[0] <- true
		p.thWait = p.thWait[1:]
	}
}

// getVM locks an idle VM; or, with create, room for a new one was
// reserved (the caller builds it, or calls unreserveVM); or, if enqueue,
// ch is where the caller waits for a VM handed over locked, or nil when
// room for a new one was freed.
func (p *pool) getVM(enqueue bool) (v *vm, create bool, ch chan *vm) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		v = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		v.busy = true
		return v, false, nil
	}
	if p.vms < p.maxVMs && p.memory()+vmCost <= p.maxMemory {
		p.vms++
		p.startReaper(p.vms > p.poolSize)
		return nil, true, nil
	}
	if enqueue {
		ch = make(chan *vm, 1)
		p.vmWait = append(p.vmWait, ch)
	}
	return nil, false, ch
}

// cancelVMWait leaves the queue; false means a VM or a wake-up was already
// sent, which the caller must take.
func (p *pool) cancelVMWait(ch chan *vm) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, w := range p.vmWait {
		if w == ch {
			p.vmWait = append(p.vmWait[:i], p.vmWait[i+1:]...)
			return true
		}
	}
	return false
}

// lockThis takes back the VM a parked request's Lua frames belong to,
// waiting for whoever runs Lua on it now; wake is the request's thread's
// channel. Requests resuming come before new ones: finishing them is what
// frees memory. The wait is short (one Lua run, bounded by MaxExecution,
// per request ahead) and uncharged.
func (p *pool) lockThis(v *vm, wake chan struct{}) {
	p.mu.Lock()
	v.parked--
	if !v.busy {
		// It may be on the idle stack: take it out.
		for i := len(p.idle) - 1; i >= 0; i-- {
			if p.idle[i] == v {
				copy(p.idle[i:], p.idle[i+1:])
				p.idle[len(p.idle)-1] = nil
				p.idle = p.idle[:len(p.idle)-1]
				break
			}
		}
		v.busy = true
		p.mu.Unlock()
		return
	}
	v.resumers = append(v.resumers, wake)
	p.mu.Unlock()
	<-wake
}

// unlock gives up a locked VM: to a request resuming on it, else (if it
// may serve new requests) to the oldest new request waiting or the idle
// stack. park says the caller's request stays parked on it. It reports
// whether the VM is now unused and must be closed by the caller: it was
// dropped (broken, or the script closed) and nobody is parked on it.
func (p *pool) unlock(v *vm, park bool) (closeIt bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if park {
		v.parked++
	}
	if len(v.resumers) > 0 {
		ch := v.resumers[0]
		v.resumers = v.resumers[1:]
		ch <- struct{}{}
		return false
	}
	v.busy = false
	if v.dropped || p.closed {
		if v.parked > 0 {
			// Off every list: the parked requests take it back
			// with lockThis, and the last one closes it.
			return false
		}
		p.vms--
		p.wakeVMWaiter()
		p.wakeThreadWaiter()
		return true
	}
	if len(p.vmWait) > 0 {
		ch := p.vmWait[0]
		p.vmWait = p.vmWait[1:]
		v.busy = true
		ch <- v
		return false
	}
	v.idleSince = p.now()
	p.idle = append(p.idle, v)
	return false
}

// unreserveVM gives back the room of a VM that was never built.
func (p *pool) unreserveVM() {
	p.mu.Lock()
	p.vms--
	p.wakeVMWaiter()
	p.wakeThreadWaiter()
	p.mu.Unlock()
}

// wakeVMWaiter tells the oldest VM waiter to retry; mu is held.
func (p *pool) wakeVMWaiter() {
	if len(p.vmWait) > 0 {
		p.vmWait[0] <- nil
		p.vmWait = p.vmWait[1:]
	}
}

// trim removes the VMs and threads above PoolSize that have been idle for
// the idle TTL, oldest first, and returns them for the caller to close
// outside the lock. It reports whether anything above PoolSize is left
// to watch.
func (p *pool) trim() (vms []*vm, threads []*thread, more bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	// A VM with requests parked on it is not idle, whatever its
	// idleSince: their Lua frames live in it.
	kept := p.idle[:0]
	for _, v := range p.idle {
		if p.vms > p.poolSize && v.parked == 0 && now-v.idleSince >= p.idleTTL {
			vms = append(vms, v)
			p.vms--
		} else {
			kept = append(kept, v)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	n := 0
	for n < len(p.threads) && p.nthr-n > p.poolSize && now-p.threads[n].idleSince >= p.idleTTL {
		n++
	}
	if n > 0 {
		threads = append(threads, p.threads[:n]...)
		p.threads = append(p.threads[:0], p.threads[n:]...)
		clear(p.threads[len(p.threads):cap(p.threads)][:n])
		p.nthr -= n
	}
	more = p.vms > p.poolSize || p.nthr > p.poolSize
	if !more {
		p.reaping = false
	}
	return vms, threads, more
}

// startReaper notes that a reaper must run when grew is true; mu is held.
// The Script starts it: see Script.reap.
func (p *pool) startReaper(grew bool) {
	if grew && !p.reaping && p.reap != nil {
		p.reaping = true
		go p.reap()
	}
}

// drain empties the idle lists for Close, except the VMs requests are
// parked on: the last of those requests closes them (unlock).
func (p *pool) drain() ([]*vm, []*thread) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		close(p.stop)
	}
	p.closed = true
	var vms []*vm
	for _, v := range p.idle {
		if v.parked == 0 {
			vms = append(vms, v)
		}
	}
	threads := p.threads
	p.idle, p.threads = nil, nil
	p.vms -= len(vms)
	p.nthr -= len(threads)
	return vms, threads
}

// reapEvery is how often the reaper looks for idle VMs: a quarter of the
// TTL, so a VM goes at most 1.25 TTL after its last request, within
// bounds that keep the goroutine cheap and tests quick.
func reapEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 10*time.Millisecond), 10*time.Second)
}

// drop unlocks a VM that must serve no new request (a Go panic left its
// state unknown); it reports whether the caller must close it now.
func (p *pool) drop(v *vm) bool {
	p.mu.Lock()
	v.dropped = true
	p.mu.Unlock()
	return p.unlock(v, false)
}

// adopt pools a VM and a thread built at load, before any request.
func (p *pool) adopt(v *vm, t *thread) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vms++
	p.nthr++
	v.idleSince, t.idleSince = p.now(), p.now()
	p.idle = append(p.idle, v)
	p.threads = append(p.threads, t)
}

// stats fills the pool's part of st.
func (p *pool) stats(st *Stats) {
	p.mu.Lock()
	st.VMsIdle = len(p.idle)
	st.VMsLive = p.vms
	st.Threads = p.nthr
	st.MemoryBytes = p.memory()
	p.mu.Unlock()
	st.Inflight = int(p.inflight.Load())
	st.VMWaits = uint64(p.waits.Load())
	st.VMWaitTime = time.Duration(p.waitNanos.Load())
	st.VMWaitTimeouts = uint64(p.waitTimeouts.Load())
}
