package server

import (
	"math/bits"
	"sync/atomic"
)

// inflight tracks the requests being served so that Shutdown can write an
// access line for each one its grace period cuts off: the process exits
// with their handlers still running, and their own line would never be
// written. It exists only while the access log is on.
//
// It is a fixed table of slots, one published *reqState each, written with
// a CAS on arrival and a store on completion: no lock and no allocation on
// the request path. A request that finds no free slot within maxProbe of
// its start (more requests in flight than the table is made for) is not
// tracked, and is not logged if it is cut off.
//
// What Shutdown reads of a tracked state is written before the state is
// published (request id, client, tenant, start, what the client sent) and
// not written again until the state is released; finish releases a state
// to the pool only if Shutdown has not started reading (cutoff), so a
// state is never reused under a reader.
type inflight struct {
	slots []atomic.Pointer[reqState]
	shift uint // 64 - log2(len(slots)), for the multiplicative hash
	// cutoff is set by Shutdown when the grace period ended; read by
	// finish, which then drops its state instead of pooling it.
	cutoff atomic.Bool
}

const (
	minInflightSlots = 64
	maxInflightSlots = 1 << 17 // 1 MiB of pointers
	maxProbe         = 32
)

// newInflight makes a table for up to maxConns requests in flight (fasthttp
// serves one request per connection at a time), twice as many slots so
// probes stay short.
func newInflight(maxConns int) *inflight {
	n := min(max(2*maxConns, minInflightSlots), maxInflightSlots)
	n = 1 << bits.Len(uint(n-1)) // round up to a power of two
	return &inflight{slots: make([]atomic.Pointer[reqState], n), shift: uint(64 - bits.TrailingZeros(uint(n)))}
}

// add publishes rs in a free slot, starting at one derived from key (the
// connection id, so concurrent requests start apart), and records the slot
// in rs.slot (-1 when the table is full around it).
func (f *inflight) add(rs *reqState, key uint64) {
	start := (key * 0x9E3779B97F4A7C15) >> f.shift // Fibonacci hashing
	mask := uint64(len(f.slots) - 1)
	for i := range uint64(maxProbe) {
		idx := (start + i) & mask
		s := &f.slots[idx]
		if s.Load() == nil && s.CompareAndSwap(nil, rs) {
			rs.slot = int32(idx)
			return
		}
	}
	rs.slot = -1
}

// remove takes rs out of its slot.
func (f *inflight) remove(rs *reqState) {
	if rs.slot >= 0 {
		f.slots[rs.slot].Store(nil)
		rs.slot = -1
	}
}

// cutOff marks the end of the grace period and calls log for each request
// still in flight whose access line no one has written yet.
func (f *inflight) cutOff(log func(rs *reqState)) {
	f.cutoff.Store(true)
	for i := range f.slots {
		if rs := f.slots[i].Load(); rs != nil && rs.logged.CompareAndSwap(false, true) {
			log(rs)
		}
	}
}
