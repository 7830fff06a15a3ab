package luavm

import (
	"sync/atomic"
)

// pool holds the idle VMs of one script in a bounded channel.
//
// A VM taken with tryGet belongs to the caller until it is handed back with
// put or dropped with discard; it must be used by one goroutine at a time,
// and must not be used after put or discard (it may already serve another
// request). A broken VM (timed out, panicked) is discarded, never put.
//
// The channel's capacity is the VM cap, so put never finds it full while
// the live count respects the cap, and tryGet/put allocate nothing
// (TestAllocsPoolGetPut).
type pool struct {
	idle chan *vm

	// freed wakes one waiter when a VM is discarded, so the waiter can
	// create a replacement instead of sleeping until its deadline.
	freed chan struct{}

	// live counts VMs in existence, idle or busy. reserve increments it
	// before a VM is built and discard decrements it; it never exceeds
	// max. Read and written by any request goroutine.
	live atomic.Int64
	max  int64
}

func newPool(maxVMs int) *pool {
	return &pool{
		idle:  make(chan *vm, maxVMs),
		freed: make(chan struct{}, 1),
		max:   int64(maxVMs),
	}
}

// tryGet returns an idle VM, or nil without blocking.
func (p *pool) tryGet() *vm {
	select {
	case v := <-p.idle:
		return v
	default:
		return nil
	}
}

// put returns a healthy VM to the pool. It reports false if the pool is
// full, which only happens if the caller broke the reserve contract; the
// caller then closes the VM.
func (p *pool) put(v *vm) bool {
	select {
	case p.idle <- v:
		return true
	default:
		return false
	}
}

// reserve claims room for one more VM. On success the caller must build the
// VM and either put it or call unreserve.
func (p *pool) reserve() bool {
	if p.live.Add(1) <= p.max {
		return true
	}
	p.live.Add(-1)
	return false
}

// unreserve gives back a reservation or the slot of a dropped VM, and wakes
// one waiter.
func (p *pool) unreserve() {
	p.live.Add(-1)
	select {
	case p.freed <- struct{}{}:
	default:
	}
}
