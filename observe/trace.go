package observe

import (
	"math/rand/v2"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/), the traceparent
// header of version 00:
//
//	00-<trace-id: 32 hex>-<parent-id: 16 hex>-<trace-flags: 2 hex>
//
// The gateway takes part in a trace as one span: it keeps the caller's
// trace id, sends its own span id to the upstream as the parent id, and
// passes tracestate on untouched.
//
// Ids are kept as their lower-case hex text: they arrive and leave as text
// and are logged as text, so decoding them would only be undone.

// TraceparentLen is the length of a version 00 traceparent value.
const TraceparentLen = 55

// FlagSampled is the sampled bit of trace-flags.
const FlagSampled = 0x01

// Trace is the gateway's span in a trace. The zero value is "no trace".
type Trace struct {
	// TraceID is the trace the request belongs to, in hex.
	TraceID [32]byte
	// ParentID is the caller's span id in hex; zero bytes when the
	// gateway started the trace.
	ParentID [16]byte
	// SpanID is the gateway's own span id in hex, sent upstream as the
	// parent-id.
	SpanID [16]byte
	// Flags are the trace-flags sent upstream.
	Flags byte
}

// ParseTraceparent parses a traceparent header value. It reports false for
// a value the spec says to treat as absent: wrong length or separators,
// upper-case or non-hex digits, version ff, an all-zero trace id or parent
// id, or a version 00 value with trailing data. A higher version is parsed
// by its version 00 prefix, as the spec asks, when what follows is "-".
func ParseTraceparent(v []byte) (t Trace, ok bool) {
	if len(v) < TraceparentLen || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return t, false
	}
	if !lowerHex(v[0:2]) || !lowerHex(v[3:35]) || !lowerHex(v[36:52]) || !lowerHex(v[53:55]) {
		return t, false
	}
	if v[0] == 'f' && v[1] == 'f' {
		return t, false
	}
	if len(v) > TraceparentLen && ((v[0] == '0' && v[1] == '0') || v[TraceparentLen] != '-') {
		return t, false
	}
	if allZero(v[3:35]) || allZero(v[36:52]) {
		return t, false
	}
	copy(t.TraceID[:], v[3:35])
	copy(t.ParentID[:], v[36:52])
	t.Flags = hexVal[v[54]] & FlagSampled // version 00 defines no other flag
	return t, true
}

// lowerHex reports whether b is all lower-case hex digits, the only ones
// the spec allows.
func lowerHex(b []byte) bool {
	var bad byte
	for _, c := range b {
		bad |= hexVal[c]
	}
	return bad&0xf0 == 0
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != '0' {
			return false
		}
	}
	return true
}

// hexVal maps a lower-case hex digit to its value and every other byte to
// 0xff: one table load per digit instead of two range tests.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// putHex writes x as 16 lower-case hex digits.
func putHex(dst []byte, x uint64) {
	for i := 15; i >= 0; i-- {
		dst[i] = hexDigits[x&0xf]
		x >>= 4
	}
}

// Continue makes t the gateway's span: a new span id under t's trace.
func (t *Trace) Continue() {
	putHex(t.SpanID[:], randomNonZero())
}

// Start begins a new trace with the gateway's span as its root. The
// sampled flag is set with probability ratio (0..1).
func (t *Trace) Start(ratio float64) {
	*t = Trace{}
	// A random 128-bit id is all zeros with probability 2^-128: only the
	// second half is made non-zero, which keeps the whole id non-zero.
	putHex(t.TraceID[:16], rand.Uint64())
	putHex(t.TraceID[16:], randomNonZero())
	putHex(t.SpanID[:], randomNonZero())
	if ratio >= 1 || (ratio > 0 && rand.Float64() < ratio) {
		t.Flags = FlagSampled
	}
}

// randomNonZero returns a random non-zero value. math/rand/v2's global
// source is a per-thread ChaCha8: allocation-free and safe for concurrent
// use; ids need to be unique, not secret.
func randomNonZero() uint64 {
	for {
		if x := rand.Uint64(); x != 0 {
			return x
		}
	}
}

// AppendTraceparent appends the traceparent the upstream is sent: version
// 00, t's trace id, the gateway's span id as parent-id, and t's flags.
func (t *Trace) AppendTraceparent(dst []byte) []byte {
	dst = append(dst, "00-"...)
	dst = append(dst, t.TraceID[:]...)
	dst = append(dst, '-')
	dst = append(dst, t.SpanID[:]...)
	return append(dst, '-', '0', hexDigits[t.Flags&0xf])
}

// AppendTraceID appends the trace id in hex.
func (t *Trace) AppendTraceID(dst []byte) []byte {
	return append(dst, t.TraceID[:]...)
}

// Valid reports whether t holds a trace.
func (t *Trace) Valid() bool { return t.TraceID != [32]byte{} }
