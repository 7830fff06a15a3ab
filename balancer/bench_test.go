package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkPick bounds the per-request cost of choosing an upstream among 8
// available ones, for each policy: serially, and from GOMAXPROCS goroutines
// sharing one Picker (the production shape: one Picker per tenant snapshot,
// every request of the tenant through it), which measures contention on the
// policy's shared counter.
func BenchmarkPick(b *testing.B) {
	for _, policy := range policies {
		ups := pool(b, 8, 5, 1, 1, 3, 2, 2, 1, 4)
		p := mustPicker(b, policy, ups)
		b.Run(policy+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.Pick(0) < 0 {
					b.Fatal("no upstream")
				}
			}
		})
		b.Run(policy+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if p.Pick(0) < 0 {
						b.Fatal("no upstream")
					}
				}
			})
		})
	}
}

// BenchmarkPickWithRetry bounds a retry's pick: half the pool tried or
// down, so every policy skips entries and may take its fallback path.
func BenchmarkPickWithRetry(b *testing.B) {
	for _, policy := range policies {
		ups := pool(b, 8, 5, 1, 1, 3, 2, 2, 1, 4)
		unavailabilities[0].make(ups[1])
		unavailabilities[1].make(ups[3])
		tried := Set(0).With(0).With(5)
		p := mustPicker(b, policy, ups)
		b.Run(policy, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if p.Pick(tried) < 0 {
						b.Fatal("no upstream")
					}
				}
			})
		})
	}
}

// BenchmarkPickPoolSize shows how a pick scales with the pool: least_conn
// scans every upstream, the others touch a bounded number.
func BenchmarkPickPoolSize(b *testing.B) {
	for _, n := range []int{2, 16, 128} {
		ups := pool(b, n)
		for _, policy := range policies {
			p := mustPicker(b, policy, ups)
			b.Run(fmt.Sprintf("%s/%d", policy, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					p.Pick(0)
				}
			})
		}
	}
}

// BenchmarkUpstream bounds the per-request Upstream calls: Available (read
// by every pick, for every candidate), and per attempt the Outages check,
// the Acquire/Release pair and a successful ReportResult, serially and in
// parallel on one upstream.
func BenchmarkUpstream(b *testing.B) {
	u := pool(b, 1)[0]
	b.Run("Available/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			u.Available()
		}
	})
	b.Run("Available/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				u.Available()
			}
		})
	})
	b.Run("AcquireReleaseReport/serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = u.Outages()
			u.Acquire()
			u.ReportResult(true)
			u.Release()
		}
	})
	b.Run("AcquireReleaseReport/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = u.Outages()
				u.Acquire()
				u.ReportResult(true)
				u.Release()
			}
		})
	})
}
