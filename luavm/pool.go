package luavm

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/config"
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

// pool holds the VMs and threads of one script. The fields up to list are
// guarded by mu; list and the counters are atomics.
//
// A VM or thread taken from the pool belongs to the caller until it is
// given back or dropped; a broken one (timed out, panicked) is dropped,
// never given back. Taking and giving back an idle VM or thread allocate
// nothing (TestAllocsPoolGetPut); waiting does.
//
// Both are used in an order that leaves what a burst created unused once
// the burst is over, where trim finds it idle for longer than the idle
// TTL: idle threads are a stack (last in, first out), and VMs are tried
// oldest first (see getVM). A channel, the earlier shape, is first in,
// first out: it kept every burst VM looking busy.
type pool struct {
	mu sync.Mutex

	threads []*thread       // idle threads, most recently used last
	vmWait  []chan struct{} // requests waiting for a VM, oldest first: told to retry
	thWait  []chan bool     // requests waiting for room for a thread, oldest first
	vms     int             // VMs in existence or reserved, dropped ones excepted
	nthr    int             // threads in existence, idle, serving or reserved
	reaping bool            // a reaper goroutine is running
	closed  bool            // Close was called: nothing goes back to the idle lists

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

	// list holds the live VMs in creation order. Written under mu, copy
	// on write; read without a lock by every request looking for a VM.
	list atomic.Pointer[[]*vm]
	// nwait is len(vmWait), read by every unlock without mu.
	nwait atomic.Int32

	// Counters, written under mu or by the request that waited, read by
	// Stats without the lock.
	waits, waitNanos, waitTimeouts atomic.Int64
	inflight                       atomic.Int64
}

// Per-object memory, in bytes, that the memory budget charges
// (config.LuaVMCost and config.LuaThreadCost, which lua.max_memory's
// validation uses too): measured by TestMemoryEstimates (heap delta over many objects after GC, with the
// example middleware + keystone.Proxy script), which fails if either is
// below what it measures. A VM's own estimate covers the sandbox, the
// bindings and a small script; a script with large top-level tables costs
// more per VM, which lua.max_vms bounds.
const (
	vmCost     = int64(config.LuaVMCost)
	threadCost = int64(config.LuaThreadCost)
)

func newPool(cfg Config) *pool {
	p := &pool{
		poolSize:  cfg.PoolSize,
		maxVMs:    cfg.MaxVMs,
		maxMemory: cfg.MaxMemory,
		idleTTL:   int64(cfg.IdleVMTTL),
		stop:      make(chan struct{}),
		now:       func() int64 { return int64(monotonic()) },
	}
	p.list.Store(&[]*vm{})
	return p
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

// getVM locks a VM not running Lua, scanning from the oldest, or returns
// nil and whether the caller may create one (reserved: the caller builds
// it and calls addVM, or calls unreserveVM). The scan is lock-free: a
// TryLock per VM, allocation-free. Oldest first, so that under moderate
// load the newest VMs stay unused and trim finds them idle.
//
// A VM is a sync.Mutex, not a token handed from one goroutine to the
// next: with handoff, a VM belonged to a woken goroutine for as long as it
// waited for a CPU, and under 1,000 parked requests per VM those waits
// queued up (half the throughput of a plain proxy in the bench's
// lua-slow-upstream-1000). A free VM goes to whichever goroutine is
// running; sync.Mutex's starvation mode bounds the wait of one that
// loses too often.
func (p *pool) getVM() (v *vm, create bool) {
	for _, v := range *p.list.Load() {
		if v.mu.TryLock() {
			if v.dropped.Load() {
				v.mu.Unlock()
				continue
			}
			v.running.Store(true)
			return v, false
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.vms < p.maxVMs && p.memory()+vmCost <= p.maxMemory {
		p.vms++
		p.startReaper(p.vms > p.poolSize)
		return nil, true
	}
	return nil, false
}

// waitVM queues for a VM; the channel is told when one is unlocked or room
// for one freed. The caller scans again after queueing, so no wake-up is
// missed, and calls cancelVMWait if it stops waiting.
func (p *pool) waitVM() chan struct{} {
	ch := make(chan struct{}, 1)
	p.mu.Lock()
	p.vmWait = append(p.vmWait, ch)
	p.nwait.Store(int32(len(p.vmWait)))
	p.mu.Unlock()
	return ch
}

// cancelVMWait leaves the queue, passing on a wake-up already received.
func (p *pool) cancelVMWait(ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, w := range p.vmWait {
		if w == ch {
			p.vmWait = append(p.vmWait[:i], p.vmWait[i+1:]...)
			p.nwait.Store(int32(len(p.vmWait)))
			return
		}
	}
	p.wakeVMWaiter()
}

// addVM publishes a VM built for a reservation, locked by its builder.
func (p *pool) addVM(v *vm) {
	v.mu.Lock()
	v.running.Store(true)
	v.lastUsed.Store(p.now())
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.list.Load()
	list := append(make([]*vm, 0, len(old)+1), old...)
	list = append(list, v)
	p.list.Store(&list)
}

// removeVM takes v out of the list; mu is held.
func (p *pool) removeVM(v *vm) {
	old := *p.list.Load()
	list := make([]*vm, 0, len(old))
	for _, w := range old {
		if w != v {
			list = append(list, w)
		}
	}
	p.list.Store(&list)
}

// lockThis takes back the VM a parked request's Lua frames belong to,
// waiting for the Lua running on it now (one run, bounded by
// MaxExecution, per request ahead); the wait is not charged.
func (p *pool) lockThis(v *vm) {
	v.mu.Lock()
	v.running.Store(true)
	v.parked.Add(-1)
}

// unlock gives up a locked VM; park says the caller's request stays
// parked on it. It reports whether the VM must now be closed by the
// caller: it was dropped (a Go panic, the Script closed, trimmed) and no
// request is parked on it. No request can lock it after that: a dropped
// VM is out of the list, and one that locks it from an older copy of the
// list sees dropped and lets go without touching it.
func (p *pool) unlock(v *vm, park bool) (closeIt bool) {
	if park {
		v.parked.Add(1)
	} else {
		v.lastUsed.Store(p.now())
	}
	if v.dropped.Load() && v.parked.Load() == 0 && !v.closed {
		v.closed = true
		closeIt = true
	}
	v.running.Store(false)
	v.mu.Unlock()
	if p.nwait.Load() > 0 {
		p.mu.Lock()
		p.wakeVMWaiter()
		p.mu.Unlock()
	}
	return closeIt
}

// drop takes a locked VM out of service (a Go panic left its state
// unknown) and unlocks it; it reports whether the caller must close it.
func (p *pool) drop(v *vm) bool {
	p.mu.Lock()
	if !v.dropped.Swap(true) {
		p.removeVM(v)
		p.vms--
		p.wakeThreadWaiter()
	}
	p.mu.Unlock()
	return p.unlock(v, false)
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
		p.vmWait[0] <- struct{}{}
		p.vmWait = p.vmWait[1:]
		p.nwait.Store(int32(len(p.vmWait)))
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
	// Newest first: requests take the oldest free VM, so the newest are
	// the ones left idle. A VM with requests parked on it is not idle,
	// whatever its lastUsed: their Lua frames live in it.
	list := *p.list.Load()
	for i := len(list) - 1; i >= 0 && p.vms > p.poolSize; i-- {
		v := list[i]
		if v.parked.Load() != 0 || now-v.lastUsed.Load() < p.idleTTL || !v.mu.TryLock() {
			continue
		}
		if v.parked.Load() == 0 {
			v.dropped.Store(true)
			v.closed = true
			p.removeVM(v)
			p.vms--
			vms = append(vms, v)
		}
		v.mu.Unlock()
	}
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

// drain takes every VM out of service for Close and returns the idle
// threads and the VMs nobody is using, to close; a VM still running Lua,
// or with requests parked on it, is closed by the last of them (unlock).
func (p *pool) drain() ([]*vm, []*thread) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		close(p.stop)
	}
	p.closed = true
	var vms []*vm
	for _, v := range *p.list.Load() {
		v.dropped.Store(true)
		if v.mu.TryLock() {
			if v.parked.Load() == 0 && !v.closed {
				v.closed = true
				vms = append(vms, v)
			}
			v.mu.Unlock()
		}
	}
	p.list.Store(&[]*vm{})
	p.vms = 0
	threads := p.threads
	p.threads = nil
	p.nthr -= len(threads)
	return vms, threads
}

// reapEvery is how often the reaper looks for idle VMs: a quarter of the
// TTL, so a VM goes at most 1.25 TTL after its last request, within
// bounds that keep the goroutine cheap and tests quick.
func reapEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 10*time.Millisecond), 10*time.Second)
}

// adopt pools a VM and a thread built at load, before any request.
func (p *pool) adopt(v *vm, t *thread) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vms++
	p.nthr++
	v.lastUsed.Store(p.now())
	t.idleSince = p.now()
	list := append(append([]*vm(nil), *p.list.Load()...), v)
	p.list.Store(&list)
	p.threads = append(p.threads, t)
}

// stats fills the pool's part of st.
func (p *pool) stats(st *Stats) {
	p.mu.Lock()
	for _, v := range *p.list.Load() {
		if !v.running.Load() {
			st.VMsIdle++
		}
	}
	st.VMsLive = p.vms
	st.Threads = p.nthr
	st.MemoryBytes = p.memory()
	p.mu.Unlock()
	st.Inflight = int(p.inflight.Load())
	st.VMWaits = uint64(p.waits.Load())
	st.VMWaitTime = time.Duration(p.waitNanos.Load())
	st.VMWaitTimeouts = uint64(p.waitTimeouts.Load())
}
