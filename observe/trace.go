package observe

import (
	"encoding/hex"
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

// TraceparentLen is the length of a version 00 traceparent value.
const TraceparentLen = 55

// FlagSampled is the sampled bit of trace-flags.
const FlagSampled = 0x01

// Trace is the gateway's span in a trace. The zero value is "no trace".
type Trace struct {
	// TraceID is the trace the request belongs to.
	TraceID [16]byte
	// ParentID is the caller's span id; zero when the gateway started
	// the trace.
	ParentID [8]byte
	// SpanID is the gateway's own span id, sent upstream as parent-id.
	SpanID [8]byte
	// Flags are the trace-flags sent upstream.
	Flags byte
}

// ParseTraceparent parses a traceparent header value. It reports false for
// a value the spec says to treat as absent: wrong length or separators,
// upper-case or non-hex digits, version ff, an all-zero trace id or parent
// id, or a version 00 value with trailing data. A higher version is parsed
// by its version 00 prefix, as the spec asks, when what follows is "-".
func ParseTraceparent(v []byte) (t Trace, ok bool) {
	if len(v) < TraceparentLen {
		return t, false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return t, false
	}
	var ver [1]byte
	if !decodeLowerHex(ver[:], v[0:2]) || ver[0] == 0xff {
		return t, false
	}
	if len(v) > TraceparentLen && (ver[0] == 0 || v[TraceparentLen] != '-') {
		return t, false
	}
	var flags [1]byte
	if !decodeLowerHex(t.TraceID[:], v[3:35]) || !decodeLowerHex(t.ParentID[:], v[36:52]) ||
		!decodeLowerHex(flags[:], v[53:55]) {
		return Trace{}, false
	}
	if t.TraceID == ([16]byte{}) || t.ParentID == ([8]byte{}) {
		return Trace{}, false
	}
	t.Flags = flags[0] & FlagSampled // version 00 defines no other flag
	return t, true
}

// decodeLowerHex decodes src into dst (len(src) == 2*len(dst)), accepting
// only the lower-case hex digits the spec allows.
func decodeLowerHex(dst, src []byte) bool {
	var bad byte
	for i := range dst {
		hi, lo := hexVal[src[2*i]], hexVal[src[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
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

// Continue makes t the gateway's span: a new span id under t's trace.
func (t *Trace) Continue() {
	t.SpanID = randomSpanID()
}

// Start begins a new trace with the gateway's span as its root. The
// sampled flag is set with probability ratio (0..1).
func (t *Trace) Start(ratio float64) {
	*t = Trace{}
	for t.TraceID == ([16]byte{}) {
		a, b := rand.Uint64(), rand.Uint64()
		for i := range 8 {
			t.TraceID[i] = byte(a >> (8 * i))
			t.TraceID[8+i] = byte(b >> (8 * i))
		}
	}
	t.SpanID = randomSpanID()
	if ratio >= 1 || (ratio > 0 && rand.Float64() < ratio) {
		t.Flags = FlagSampled
	}
}

// randomSpanID returns a non-zero random span id. math/rand/v2's global
// source is a per-thread ChaCha8: allocation-free and safe for concurrent
// use; span ids need to be unique, not secret.
func randomSpanID() (id [8]byte) {
	for id == ([8]byte{}) {
		x := rand.Uint64()
		for i := range 8 {
			id[i] = byte(x >> (8 * i))
		}
	}
	return id
}

// AppendTraceparent appends the traceparent the upstream is sent: version
// 00, t's trace id, the gateway's span id as parent-id, and t's flags.
func (t *Trace) AppendTraceparent(dst []byte) []byte {
	dst = append(dst, "00-"...)
	dst = hex.AppendEncode(dst, t.TraceID[:])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, t.SpanID[:])
	dst = append(dst, '-')
	return hex.AppendEncode(dst, []byte{t.Flags})
}

// AppendTraceID appends the trace id in hex.
func (t *Trace) AppendTraceID(dst []byte) []byte {
	return hex.AppendEncode(dst, t.TraceID[:])
}

// Valid reports whether t holds a trace.
func (t *Trace) Valid() bool { return t.TraceID != [16]byte{} }
