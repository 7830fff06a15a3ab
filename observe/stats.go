package observe

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Method indexes: a fixed set, everything else is OTHER, so a client cannot
// grow the label space with made-up methods.
const (
	methodGET = iota
	methodHEAD
	methodPOST
	methodPUT
	methodPATCH
	methodDELETE
	methodOPTIONS
	methodOTHER
	numMethods
)

var methodNames = [numMethods]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}

// methodIndex maps a request method to its label slot without allocating.
func methodIndex(m []byte) int {
	switch string(m) {
	case "GET":
		return methodGET
	case "HEAD":
		return methodHEAD
	case "POST":
		return methodPOST
	case "PUT":
		return methodPUT
	case "PATCH":
		return methodPATCH
	case "DELETE":
		return methodDELETE
	case "OPTIONS":
		return methodOPTIONS
	}
	return methodOTHER
}

// knownCodes get a label of their own; any other status is counted under
// its class ("2xx"), and anything outside 100..599 under "other". The set
// keeps the label space bounded whatever an upstream answers.
var knownCodes = [...]int{
	200, 201, 202, 204, 206,
	301, 302, 304, 307, 308,
	400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 422, 429, 431,
	500, 501, 502, 503, 504,
}

// Upstream attempt outcomes that carry no status code: the request failed
// on the way (the code label names the failure).
const (
	// FailConnect: could not connect, nothing was sent.
	FailConnect = iota
	// FailTimeout: connecting or waiting for the answer timed out.
	FailTimeout
	// FailClosed: the connection broke before a complete answer.
	FailClosed
	// FailNoConns: the gateway's connection pool had no free connection.
	FailNoConns
	// FailTooLarge: the answer exceeded max_response_body.
	FailTooLarge
	numFailures
)

var failureNames = [numFailures]string{"connect_error", "timeout", "closed", "no_conns", "too_large"}

const (
	numClasses = 5 // 1xx..5xx
	// codeSlots: the known codes, then a slot per class, then "other".
	codeSlots = len(knownCodes) + numClasses + 1
	// upstreamSlots adds the failures after the code slots.
	upstreamSlots = codeSlots + numFailures
)

// codeSlot maps every int status to its label slot; filled by init.
var codeSlot [600]uint8

// codeNames are the code label values by slot.
var codeNames [upstreamSlots]string

func init() {
	for i := range codeSlot {
		codeSlot[i] = uint8(codeSlots - 1) // other
	}
	for c := 1; c <= numClasses; c++ {
		slot := len(knownCodes) + c - 1
		codeNames[slot] = string(rune('0'+c)) + "xx"
		for s := c * 100; s < c*100+100; s++ {
			codeSlot[s] = uint8(slot)
		}
	}
	for i, c := range knownCodes {
		codeSlot[c] = uint8(i)
		codeNames[i] = itoa(c)
	}
	codeNames[codeSlots-1] = "other"
	for i, n := range failureNames {
		codeNames[codeSlots+i] = n
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func statusSlot(code int) int {
	if code < 0 || code >= len(codeSlot) {
		return codeSlots - 1
	}
	return int(codeSlot[code])
}

// Bounds are the upper bounds of the duration histograms' buckets, in
// seconds; a last +Inf bucket catches the rest. They span a cached answer
// (0.5ms) to the longest default timeout (30s).
var Bounds = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// numBuckets includes +Inf.
const numBuckets = len(Bounds) + 1

// boundNanos are Bounds as durations, so an observation compares integers.
var boundNanos = func() (b [len(Bounds)]time.Duration) {
	for i, s := range Bounds {
		b[i] = time.Duration(s * float64(time.Second))
	}
	return b
}()

// hist is one shard of a duration histogram. Each bucket counts the
// observations in its own range (not cumulative); the exposition sums
// them into Prometheus' cumulative "le" buckets.
type hist struct {
	buckets [numBuckets]atomic.Uint64
	sum     atomic.Int64 // nanoseconds
}

func (h *hist) observe(d time.Duration) {
	i := 0
	for i < len(boundNanos) && d > boundNanos[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(int64(d))
}

// HistSnapshot is a histogram's state summed over its shards.
type HistSnapshot struct {
	// Buckets counts observations per bucket of Bounds, then +Inf; not
	// cumulative.
	Buckets [numBuckets]uint64
	// Count is the number of observations.
	Count uint64
	// Sum is the sum of the observations.
	Sum time.Duration
}

func (s *HistSnapshot) add(h *hist) {
	for i := range h.buckets {
		n := h.buckets[i].Load()
		s.Buckets[i] += n
		s.Count += n
	}
	s.Sum += time.Duration(h.sum.Load())
}

// numShards is how many copies of each counter set exist: enough that
// requests on different connections rarely write the same cache line,
// bounded so a route costs at most a few tens of KiB.
var numShards = func() int {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < 16 {
		n <<= 1
	}
	return n
}()

// Shard picks the counter shard of a request from a value that differs
// between concurrent requests and stays put for one connection (fasthttp's
// RequestCtx.ConnID): one connection is served by one goroutine at a time,
// so requests on different connections spread over the shards.
type Shard uint64

// pad keeps shards on separate cache lines (128 bytes: adjacent-line
// prefetch on x86 pairs lines).
type pad [128]byte

// requestShard is one shard of a RouteStats.
type requestShard struct {
	counts   [numMethods][codeSlots]atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	dur      hist
	_        pad
}

// RouteStats counts the requests of one tenant route: requests by method
// and status, their durations and bytes. It is resolved once when a
// snapshot is built and kept across snapshots by the Registry; Observe is
// lock-free and allocation-free. A RouteStats must not be copied.
type RouteStats struct {
	tenant, route string
	shards        []requestShard
}

// Observe records one request: its method, status, duration and request
// and response body sizes. A nil RouteStats records nothing.
func (r *RouteStats) Observe(s Shard, method []byte, status int, d time.Duration, in, out int64) {
	if r == nil {
		return
	}
	sh := &r.shards[uint64(s)&uint64(len(r.shards)-1)]
	sh.counts[methodIndex(method)][statusSlot(status)].Add(1)
	if in > 0 {
		sh.bytesIn.Add(uint64(in))
	}
	if out > 0 {
		sh.bytesOut.Add(uint64(out))
	}
	sh.dur.observe(d)
}

// upstreamShard is one shard of an UpstreamStats.
type upstreamShard struct {
	counts [upstreamSlots]atomic.Uint64
	dur    hist
	_      pad
}

// UpstreamStats counts the attempts of one tenant to one upstream. Like
// RouteStats it is resolved at build, kept by the Registry, lock-free and
// must not be copied.
type UpstreamStats struct {
	tenant, url string
	shards      []upstreamShard
}

// ObserveStatus records an attempt the upstream answered with status.
func (u *UpstreamStats) ObserveStatus(s Shard, status int, d time.Duration) {
	if u == nil {
		return
	}
	sh := &u.shards[uint64(s)&uint64(len(u.shards)-1)]
	sh.counts[statusSlot(status)].Add(1)
	sh.dur.observe(d)
}

// ObserveFailure records an attempt that failed with one of the Fail*
// outcomes.
func (u *UpstreamStats) ObserveFailure(s Shard, failure int, d time.Duration) {
	if u == nil {
		return
	}
	if failure < 0 || failure >= numFailures {
		failure = FailClosed
	}
	sh := &u.shards[uint64(s)&uint64(len(u.shards)-1)]
	sh.counts[codeSlots+failure].Add(1)
	sh.dur.observe(d)
}

// TenantStats holds what is counted per tenant rather than per route or
// upstream: retries, and the Lua script's run time and errors.
type TenantStats struct {
	name string
	// retries is written by every retry of the tenant, read by scrapes.
	retries atomic.Uint64
	_       pad
	script  *ScriptStats
}

// Retry counts one retry of an upstream attempt.
func (t *TenantStats) Retry() {
	if t != nil {
		t.retries.Add(1)
	}
}

// Script returns the tenant's script counters.
func (t *TenantStats) Script() *ScriptStats {
	if t == nil {
		return nil
	}
	return t.script
}

// Lua error kinds of ScriptStats.Error.
const (
	// LuaError: the script raised an error.
	LuaError = iota
	// LuaTimeout: the script ran past lua.max_execution.
	LuaTimeout
	// LuaBusy: no VM became free before the deadline (503).
	LuaBusy
	numLuaErrors
)

var luaErrorNames = [numLuaErrors]string{"error", "timeout", "busy"}

// ScriptStats counts a tenant script's run time and errors.
type ScriptStats struct {
	errors [numLuaErrors]atomic.Uint64
	shards []scriptShard
}

type scriptShard struct {
	dur hist
	_   pad
}

// Observe records the Lua time of one request.
func (s *ScriptStats) Observe(sh Shard, d time.Duration) {
	if s == nil {
		return
	}
	s.shards[uint64(sh)&uint64(len(s.shards)-1)].dur.observe(d)
}

// Error counts one script failure of kind LuaError, LuaTimeout or LuaBusy.
func (s *ScriptStats) Error(kind int) {
	if s == nil || kind < 0 || kind >= numLuaErrors {
		return
	}
	s.errors[kind].Add(1)
}
