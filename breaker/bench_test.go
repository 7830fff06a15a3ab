package breaker

import (
	"testing"
	"time"
)

func benchBreaker() *Breaker {
	return New(Settings{
		FailureThreshold: 5, FailureRatio: 0.5, MinRequests: 20, Window: 10 * time.Second,
		OpenTimeout: 30 * time.Second,
	})
}

// BenchmarkAllowDone bounds the breaker's cost per proxied request on a
// healthy upstream: Allow (one atomic load) plus a successful Done (a state
// load, a read of the failure run, a clock read and one CAS on the current
// window bucket), with the production settings and the real clock.
func BenchmarkAllowDone(b *testing.B) {
	br := benchBreaker()
	b.ReportAllocs()
	for b.Loop() {
		tok, _ := br.Allow()
		br.Done(tok, true)
	}
}

// BenchmarkAllowDoneParallel is BenchmarkAllowDone from GOMAXPROCS
// goroutines on one breaker, as when one upstream takes all the traffic: it
// bounds the contention on the shared window bucket.
func BenchmarkAllowDoneParallel(b *testing.B) {
	br := benchBreaker()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok, _ := br.Allow()
			br.Done(tok, true)
		}
	})
}

// BenchmarkAllowOpen bounds the cost of rejecting a request while open: one
// load and one clock read.
func BenchmarkAllowOpen(b *testing.B) {
	br := benchBreaker()
	for range 5 {
		tok, _ := br.Allow()
		br.Done(tok, false)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := br.Allow(); ok {
			b.Fatal("open breaker admitted a request")
		}
	}
}

// BenchmarkAvailable bounds the per-upstream cost a picker pays to skip open
// breakers: one atomic load while closed.
func BenchmarkAvailable(b *testing.B) {
	br := benchBreaker()
	b.ReportAllocs()
	for b.Loop() {
		if !br.Available() {
			b.Fatal("closed breaker unavailable")
		}
	}
}
