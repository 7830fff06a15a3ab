//go:build !race

package balancer

import (
	"testing"
	"time"
)

// TestAllocs is the allocation budget of the request path: picking with
// every policy (all available, and with skips and the fallback), and the
// per-request Upstream calls, must never allocate.
func TestAllocs(t *testing.T) {
	ups := pool(t, 8, 5, 1, 1, 3, 2, 2, 1, 4)
	clk := &fakeClock{}
	outlier := mustUpstream(t, UpstreamConfig{
		URL: "http://h:1", Clock: clk.Now,
		Outlier: OutlierConfig{ConsecutiveFailures: 3, Backoff: time.Second, MaxBackoff: time.Minute},
	})
	for _, policy := range policies {
		p := mustPicker(t, policy, ups)
		if n := testing.AllocsPerRun(1000, func() { p.Pick(0) }); n != 0 {
			t.Errorf("%s: Pick allocates %v times", policy, n)
		}
		tried := Set(0).With(0).With(1).With(2).With(3).With(4).With(5).With(6)
		if n := testing.AllocsPerRun(1000, func() { p.Pick(tried) }); n != 0 {
			t.Errorf("%s: Pick with skips and the fallback allocates %v times", policy, n)
		}
	}
	perRequest := map[string]func(){
		"Available":         func() { ups[0].Available() },
		"Acquire/Release":   func() { ups[0].Acquire(); ups[0].Release() },
		"ReportResult ok":   func() { outlier.ReportResult(true) },
		"ReportResult fail": func() { outlier.ReportResult(false); clk.Advance(time.Minute) },
		"Inflight":          func() { ups[0].Inflight() },
	}
	for name, f := range perRequest {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v times", name, n)
		}
	}
}
