package main

import (
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{9, 1, 5}, 5}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// runsFor makes three runs of a target whose median figures are known.
func runsFor(target string, rps, p99, cpu float64) []RunResult {
	var rs []RunResult
	for i, f := range []float64{0.9, 1, 1.2} {
		rs = append(rs, RunResult{Target: target, Rep: i + 1, Requests: 1000, Throughput: rps * f, P99: p99 * f, CPUPerReqUs: cpu * f})
	}
	return rs
}

func TestSummarizeRatiosAndSLOs(t *testing.T) {
	t.Parallel()
	zero := 0.0
	sc := &Scenario{Name: "s", Mode: "closed", Compare: "throughput", SLO: &SLO{
		P99: Duration{D: time.Millisecond}, ErrorRate: &zero,
		MinRatioVsNginx: 0.9, MinRatioVsHaproxy: 1.5, MaxCPURatioVsNginx: 1.1,
	}}
	sr := &ScenarioReport{Name: "s"}
	sr.Runs = append(sr.Runs, runsFor("keystone", 40000, 800, 22)...)
	sr.Runs = append(sr.Runs, runsFor("nginx", 50000, 500, 20)...)
	summarize(sr, sc, []*Target{{Name: "keystone"}, {Name: "nginx"}, {Name: "haproxy"}})
	ks := sr.summaryOf("keystone")
	if ks == nil || ks.Throughput != 40000 || ks.P99 != 800 || ks.Runs != 3 {
		t.Fatalf("keystone summary %+v", ks)
	}
	if len(sr.Ratios) != 1 || sr.Ratios[0].Other != "nginx" || sr.Ratios[0].Value != 0.8 || sr.Ratios[0].CPU != 1.1 {
		t.Fatalf("ratios %+v: want throughput 40000/50000 = 0.8 and CPU 22/20 = 1.1", sr.Ratios)
	}
	got := map[string]SLOCheck{}
	for _, c := range sr.SLO {
		got[c.Check] = c
	}
	for check, pass := range map[string]bool{"p99": true, "error_rate": true, "ratio_vs_nginx": false, "cpu_ratio_vs_nginx": true} {
		if c, ok := got[check]; !ok || c.Pass != pass || c.NA {
			t.Errorf("%s: %+v, want pass=%v", check, c, pass)
		}
	}
	if c := got["ratio_vs_haproxy"]; !c.NA {
		t.Errorf("haproxy did not run, so its ratio is n/a, not a miss: %+v", c)
	}
}

func TestCompareRatioIsHigherIsBetterForKeystone(t *testing.T) {
	t.Parallel()
	ks := &Summary{Throughput: 200, P50: 100, P99: 100, P999: 100, CPUPerReqUs: 10, RSSKiB: 50, PSSKiB: 40}
	o := &Summary{Throughput: 100, P50: 200, P99: 200, P999: 200, CPUPerReqUs: 20, RSSKiB: 100, PSSKiB: 80}
	for _, f := range compares {
		if r := compareRatio(f, ks, o); r != 2 {
			t.Errorf("%s: ratio %v, want 2 (Keystone twice as good)", f, r)
		}
	}
}

func TestMarkdownHasTheComparisonTable(t *testing.T) {
	t.Parallel()
	sr := &ScenarioReport{Name: "get-100b", Mode: "closed", Compare: "throughput", Method: "GET", Path: "/api/bytes/100"}
	sr.Runs = append(runsFor("keystone", 40000, 800, 22), runsFor("nginx", 50000, 500, 20)...)
	sr.Runs[0].ErrorKinds = map[string]int64{"status_503": 2}
	sr.Runs[0].ErrorSamples = map[string]string{"status_503": "no free connections"}
	sc := &Scenario{Mode: "closed", Compare: "throughput"}
	summarize(sr, sc, []*Target{{Name: "keystone"}, {Name: "nginx"}})
	sr.NotRun = []TargetInfo{{Name: "haproxy", Status: "not installed"}}
	r := &Report{Scenarios: []*ScenarioReport{sr, {Name: "http2", Skipped: "http/2 not implemented yet"}}, Failures: []string{"x"}}
	md := renderMarkdown(r)
	for _, want := range []string{
		"| Scenario | Figure | Keystone | nginx | HAProxy | Keystone vs nginx |",
		"| get-100b | max throughput | 40000 req/s | 50000 req/s | not installed | ×0.80 |",
		"| http2 | skipped: http/2 not implemented yet |",
		"status_503", "no free connections", "**FAILED:**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
}
