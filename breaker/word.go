package breaker

import "sync/atomic"

// word is the packed state of a Breaker, the value of Breaker.state:
//
//	bits  0-1   phase: a State
//	bits  2-23  generation, 22 bits, wrapping
//	bits 24-63  payload, by phase:
//	              closed     bucket number the closed period's window starts at
//	              open       deadline, milliseconds since the epoch (40 bits: 34 years)
//	              half-open  probes admitted (bits 24-43), probes succeeded (bits 44-63)
//
// The low 24 bits are gobreaker's (state, generation) pair, generation<<2 |
// phase. Packing the phase-specific payload beside them lets every
// transition, and every half-open admission or success, be one CAS: the
// deadline cannot be read without its generation, and a probe cannot be
// admitted into a generation that has just ended. A 128-bit word would not
// need the 22-bit generation, but Go has no 128-bit CAS; a pointer to an
// immutable state struct would, but would allocate on every probe.
//
// Generations wrap after 2^22 transitions. Done compares a token's
// generation for equality, so a stale token could be mistaken for a current
// one only if its request outlived exactly 4,194,304 transitions.
type word uint64

const (
	phaseBits    = 2
	genBits      = 22
	genMask      = 1<<genBits - 1
	payloadShift = phaseBits + genBits
	payloadMask  = 1<<(64-payloadShift) - 1

	probeBits     = 20
	probeMask     = 1<<probeBits - 1
	admittedShift = payloadShift
	successShift  = payloadShift + probeBits
	admittedOne   = word(1) << admittedShift
	successOne    = word(1) << successShift
)

func pack(phase State, gen uint32, payload uint64) word {
	return word(payload<<payloadShift | uint64(gen&genMask)<<phaseBits | uint64(phase))
}

func (w word) phase() State      { return State(w & (1<<phaseBits - 1)) }
func (w word) gen() uint32       { return uint32(w>>phaseBits) & genMask }
func (w word) payload() uint64   { return uint64(w) >> payloadShift }
func (w word) admitted() uint64  { return uint64(w>>admittedShift) & probeMask }
func (w word) successes() uint64 { return uint64(w>>successShift) & probeMask }

// numBuckets is the number of buckets Settings.Window is split into. Ten is
// the usual trade (Hystrix, resilience4j's time-based window): the window
// slides in 10% steps, and a sum reads 20 words.
const numBuckets = 10

// Each bucket counter is one word: count in the low 24 bits (saturating at
// 16,777,215 outcomes per bucket), stamp in the high 40: the low 8 bits of
// the closed generation and the low 32 bits of the absolute bucket number.
// Stamping the counter itself (rather than clearing buckets on rotation or
// on a transition) is what makes rotation and reset lock-free: a writer
// that finds a foreign stamp recycles the slot with one CAS, and a reader
// ignores slots whose stamp is not the one it expects.
//
// The stamp is narrower than the state it names, so it can alias: a slot
// left untouched for exactly a multiple of 2^32 buckets (136 years with a
// 10s Window, 49 days at the 10ms minimum) would be read as current. The
// reader's lower bound at the closed period's start bucket (the closed
// payload) removes aliasing between generations, which 8 bits alone could
// not.
const (
	countBits = 24
	countMask = 1<<countBits - 1
)

func stamp(gen uint32, idx int64) uint64 {
	return uint64(uint8(gen))<<32 | uint64(uint32(idx))
}

// window is the rolling outcome counter of the closed period. succ and fail
// are written by Breaker.Done (CAS, closed tokens only) and read by Done and
// Counts. Invariant: a slot counts toward the current window only if its
// stamp is exactly stamp(current generation, bucket) for one of the last
// numBuckets buckets at or after the closed period's start.
type window struct {
	succ [numBuckets]atomic.Uint64
	fail [numBuckets]atomic.Uint64
}

// record counts one outcome of generation gen in bucket idx of counter array
// arr (b.window.succ or b.window.fail).
func (b *Breaker) record(arr *[numBuckets]atomic.Uint64, gen uint32, idx int64) {
	slot := &arr[idx%numBuckets]
	want := stamp(gen, idx)
	for {
		old := slot.Load()
		got := old >> countBits
		var next uint64
		switch {
		case got == want:
			if old&countMask == countMask {
				return // saturated
			}
			next = old + 1
		case uint8(got>>32) == uint8(gen) && int32(uint32(got)-uint32(idx)) > 0:
			// Another writer already rotated the slot to a later bucket
			// while this one was computing idx: this outcome has left the
			// window, and recycling would discard the newer counts.
			return
		default:
			// The slot holds an older bucket or another generation.
			// Recycle it only if gen is still current, checked after
			// loading old (as in incConsecutive): a stale outcome must
			// not reset a slot a newer generation is filling.
			if word(b.state.Load()).gen() != gen {
				return
			}
			next = want<<countBits | 1
		}
		if slot.CompareAndSwap(old, next) {
			return
		}
	}
}

// sum returns the outcomes and failures of generation gen in the numBuckets
// buckets ending at idx, not counting buckets before start.
func (w *window) sum(gen uint32, idx, start int64) (requests, failures uint64) {
	var successes uint64
	for i := idx; i > idx-numBuckets && i >= start && i >= 0; i-- {
		want := stamp(gen, i)
		if v := w.succ[i%numBuckets].Load(); v>>countBits == want {
			successes += v & countMask
		}
		if v := w.fail[i%numBuckets].Load(); v>>countBits == want {
			failures += v & countMask
		}
	}
	return successes + failures, failures
}
