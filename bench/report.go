package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// reportVersion is bumped when report.json changes incompatibly, so tools
// reading the history can tell.
const reportVersion = 1

// Report is one run of a suite: report.json is this struct, report.md and
// latency.svg are rendered from it.
type Report struct {
	Version   int               `json:"version"`
	Suite     string            `json:"suite"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Host      HostInfo          `json:"host"`
	Layout    cpuLayout         `json:"layout"`
	Targets   []TargetInfo      `json:"targets"`
	Scenarios []*ScenarioReport `json:"scenarios"`
	// Failures lists every target failure and SLO miss; the run exits
	// non-zero when it is not empty.
	Failures []string `json:"failures"`
}

// Failed reports whether a target failed or an SLO was missed.
func (r *Report) Failed() bool { return len(r.Failures) > 0 }

// HostInfo describes the machine, for comparing runs across history.
type HostInfo struct {
	CPUs      int    `json:"cpus"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
}

// TargetInfo is a target's version and whether it could run.
type TargetInfo struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Status  string `json:"status"`
}

// ScenarioReport is one scenario's runs, medians, ratios and SLO checks.
type ScenarioReport struct {
	Name        string  `json:"name"`
	Description string  `json:"description,omitempty"`
	Mode        string  `json:"mode"`
	Route       string  `json:"route"`
	Method      string  `json:"method"`
	Path        string  `json:"path"`
	Connections int     `json:"connections"`
	Rate        float64 `json:"rate,omitempty"`
	Compare     string  `json:"compare"`
	Reps        int     `json:"reps"`
	Duration    string  `json:"duration"`
	Warmup      string  `json:"warmup"`
	// Skipped is the reason the scenario did not run, if it did not.
	Skipped string `json:"skipped,omitempty"`
	// NotRun lists targets of the scenario that are not installed.
	NotRun []TargetInfo `json:"not_run,omitempty"`
	Errors []string     `json:"errors,omitempty"`
	// Notes are the harness's remarks on how a target was run.
	Notes []string `json:"notes,omitempty"`
	// LogNotes are warning and error lines the targets logged.
	LogNotes []string    `json:"log_notes,omitempty"`
	Runs     []RunResult `json:"runs"`
	Summary  []Summary   `json:"summary"`
	Ratios   []Ratio     `json:"ratios,omitempty"`
	SLO      []SLOCheck  `json:"slo,omitempty"`
	Wrk      []WrkResult `json:"wrk,omitempty"`
	Pprof    *PprofInfo  `json:"pprof,omitempty"`
}

// RunResult is one repetition against one target. Latencies are in
// microseconds.
type RunResult struct {
	Scenario    string  `json:"scenario"`
	Target      string  `json:"target"`
	Rep         int     `json:"rep"`
	Mode        string  `json:"mode"`
	Rate        float64 `json:"rate,omitempty"`
	Connections int     `json:"connections"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	Dropped     int64   `json:"dropped"`
	// ErrorRate is (errors + dropped) ÷ (requests + dropped).
	ErrorRate    float64           `json:"error_rate"`
	ErrorKinds   map[string]int64  `json:"error_kinds,omitempty"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	Throughput   float64           `json:"throughput"`
	P50          float64           `json:"p50_us"`
	P90          float64           `json:"p90_us"`
	P99          float64           `json:"p99_us"`
	P999         float64           `json:"p999_us"`
	Max          float64           `json:"max_us"`
	// ServiceP99 is the p99 from the actual send, uncorrected.
	ServiceP99 float64 `json:"service_p99_us"`
	// GenLagP50 and GenLagP99 are the generator's own send lateness
	// (open loop), not charged to the target.
	GenLagP50 float64 `json:"gen_lag_p50_us,omitempty"`
	GenLagP99 float64 `json:"gen_lag_p99_us,omitempty"`
	// CPUTicks is the target's user+system clock ticks (1/100 s) from
	// /proc/PID/stat over the measured window, its child processes
	// included; CPUPerReqUs is the target's CPU time per request in
	// microseconds, from the nanosecond schedstat counters of the same
	// processes (from the ticks when the kernel has no schedstat).
	CPUTicks    int64   `json:"cpu_ticks"`
	CPUPerReqUs float64 `json:"cpu_us_per_req"`
	// ServerCPU and ClientCPU are the busy share of the target's CPUs and
	// of the load generator + upstream CPUs over the window; a ClientCPU
	// near 1 means the client side, not the target, set the pace.
	ServerCPU float64 `json:"server_cpu_util"`
	ClientCPU float64 `json:"client_cpu_util"`
	// BackgroundCPU is the CPU, in cores, that processes other than the
	// target, load generator and upstream used during the window: on a
	// shared machine, a run with a high value is disturbed.
	BackgroundCPU float64 `json:"background_cpu_cores"`
	// RSSKiB and PSSKiB are the target's memory at the end of the window
	// (idle: with all connections open); BaseRSSKiB before the load.
	RSSKiB        int64   `json:"rss_kib"`
	PSSKiB        int64   `json:"pss_kib"`
	BaseRSSKiB    int64   `json:"base_rss_kib"`
	Conns         int     `json:"conns,omitempty"`
	RSSPerConnKiB float64 `json:"rss_per_conn_kib,omitempty"`
	ServerCloses  int64   `json:"server_closes,omitempty"`
	// Discarded, when set, says why this run is excluded from the
	// medians (it was repeated).
	Discarded string `json:"discarded,omitempty"`
	// Hist is the latency HDR histogram, V2-compressed and base64-encoded
	// (nanoseconds), for later analysis.
	Hist string `json:"hist"`
}

// Summary is the median over a target's repetitions of each figure.
type Summary struct {
	Target string `json:"target"`
	Runs   int    `json:"runs"`
	// Discarded counts runs repeated because the machine was busy.
	Discarded     int              `json:"discarded,omitempty"`
	Requests      int64            `json:"requests"`
	Errors        int64            `json:"errors"`
	Dropped       int64            `json:"dropped"`
	ErrorRate     float64          `json:"error_rate"`
	ErrorKinds    map[string]int64 `json:"error_kinds,omitempty"`
	Throughput    float64          `json:"throughput"`
	P50           float64          `json:"p50_us"`
	P90           float64          `json:"p90_us"`
	P99           float64          `json:"p99_us"`
	P999          float64          `json:"p999_us"`
	Max           float64          `json:"max_us"`
	ServiceP99    float64          `json:"service_p99_us"`
	GenLagP99     float64          `json:"gen_lag_p99_us,omitempty"`
	CPUPerReqUs   float64          `json:"cpu_us_per_req"`
	ServerCPU     float64          `json:"server_cpu_util"`
	ClientCPU     float64          `json:"client_cpu_util"`
	BackgroundCPU float64          `json:"background_cpu_cores"`
	RSSKiB        int64            `json:"rss_kib"`
	PSSKiB        int64            `json:"pss_kib"`
	RSSPerConnKiB float64          `json:"rss_per_conn_kib,omitempty"`
	Conns         int              `json:"conns,omitempty"`
	// Curve is [percentile, latency µs] pairs, each the median over
	// repetitions: the lines of latency.svg.
	Curve [][2]float64 `json:"curve,omitempty"`
}

// Ratio compares Keystone with another target.
type Ratio struct {
	Other string `json:"other"`
	// Figure is the scenario's Compare figure; Value is "higher is better
	// for Keystone": Keystone÷other for throughput, other÷Keystone for
	// latency, CPU and memory.
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	// CPU is Keystone's CPU per request ÷ the other's (lower is better).
	CPU float64 `json:"cpu_ratio,omitempty"`
}

// SLOCheck is one objective checked against Keystone's medians.
type SLOCheck struct {
	Check string `json:"check"`
	Want  string `json:"want"`
	Got   string `json:"got"`
	Pass  bool   `json:"pass"`
	// NA is set when the check could not apply (the other target is not
	// installed); it is not a failure.
	NA bool `json:"na,omitempty"`
}

// WrkResult is a wrk cross-check of closed-loop throughput.
type WrkResult struct {
	Target       string  `json:"target"`
	RPS          float64 `json:"rps"`
	Non2xx       int64   `json:"non_2xx,omitempty"`
	SocketErrors string  `json:"socket_errors,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// PprofInfo is where a scenario's Keystone profiles went and their tops.
type PprofInfo struct {
	CPUFile   string   `json:"cpu_file,omitempty"`
	AllocFile string   `json:"alloc_file,omitempty"`
	CPUTop    []string `json:"cpu_top,omitempty"`
	AllocTop  []string `json:"alloc_top,omitempty"`
	// HeapFile, HeapTop and MemStats are taken while an idle scenario
	// holds its connections: in-use heap and the runtime's memory split.
	HeapFile string   `json:"heap_file,omitempty"`
	HeapTop  []string `json:"heap_top,omitempty"`
	MemStats []string `json:"mem_stats,omitempty"`
	Error    string   `json:"error,omitempty"`
}

func newReport(s *Suite, layout cpuLayout) *Report {
	var u unix.Utsname
	unix.Uname(&u)
	return &Report{
		Version: reportVersion, Suite: s.File, Started: time.Now(), Layout: layout,
		Host:     HostInfo{CPUs: runtime.NumCPU(), Kernel: unix.ByteSliceToString(u.Release[:]), GoVersion: runtime.Version()},
		Failures: []string{},
	}
}

// decodeHist decodes an encoded latency histogram.
func decodeHist(b []byte) (*hdrhistogram.Histogram, error) {
	if len(b) == 0 {
		return newHist(), nil
	}
	return hdrhistogram.Decode(b)
}

// usAt is the latency at percentile p in microseconds.
func usAt(h *hdrhistogram.Histogram, p float64) float64 {
	return float64(h.ValueAtQuantile(p)) / 1e3
}

// fill copies a load result into r, extracting the percentiles.
func (r *RunResult) fill(res *LoadResult, sc *Scenario, job LoadJob) error {
	lat, err := decodeHist(res.Latency)
	if err != nil {
		return fmt.Errorf("latency histogram: %w", err)
	}
	svc, err := decodeHist(res.Service)
	if err != nil {
		return fmt.Errorf("service histogram: %w", err)
	}
	lag, err := decodeHist(res.GenLag)
	if err != nil {
		return fmt.Errorf("lag histogram: %w", err)
	}
	r.Mode, r.Rate, r.Connections = res.Mode, job.Rate, job.Connections
	r.Requests, r.Errors, r.Dropped = res.Requests, res.Errors, res.Dropped
	r.ErrorKinds, r.ErrorSamples = res.ErrorKinds, res.ErrorSamples
	if res.Dropped > 0 {
		if r.ErrorKinds == nil {
			r.ErrorKinds = map[string]int64{}
		}
		r.ErrorKinds["dropped"] += res.Dropped
	}
	if n := res.Requests + res.Dropped; n > 0 {
		r.ErrorRate = float64(res.Errors+res.Dropped) / float64(n)
	}
	r.Throughput = res.Throughput
	r.P50, r.P90, r.P99, r.P999 = usAt(lat, 50), usAt(lat, 90), usAt(lat, 99), usAt(lat, 99.9)
	r.Max = float64(lat.Max()) / 1e3
	r.ServiceP99 = usAt(svc, 99)
	if lag.TotalCount() > 0 {
		r.GenLagP50, r.GenLagP99 = usAt(lag, 50), usAt(lag, 99)
	}
	r.ServerCloses = res.ServerCloses
	r.Hist = string(res.Latency)
	if res.Conns > 0 {
		r.Conns = res.Conns
	}
	return nil
}

// brief is a one-line progress summary of a run.
func (r *RunResult) brief() string {
	if r.Mode == "idle" {
		return fmt.Sprintf("%d conns, RSS %s (%.1f KiB/conn), %d errors", r.Conns, kib(r.RSSKiB), r.RSSPerConnKiB, r.Errors)
	}
	s := fmt.Sprintf("%.0f req/s, p50 %s p99 %s p99.9 %s, %d/%d errors, CPU %.1fµs/req (server %.0f%%, client %.0f%%)",
		r.Throughput, us(r.P50), us(r.P99), us(r.P999), r.Errors+r.Dropped, r.Requests+r.Dropped, r.CPUPerReqUs, 100*r.ServerCPU, 100*r.ClientCPU)
	if len(r.ErrorKinds) > 0 {
		s += fmt.Sprintf(" %v", r.ErrorKinds)
	}
	return s
}

// curvePoints are the percentiles plotted: evenly spaced on the
// -log10(1-p) axis from 0 to 99.99.
func curvePoints() []float64 {
	var ps []float64
	for x := 0.0; x <= 4.0001; x += 0.1 {
		ps = append(ps, 100*(1-math.Pow(10, -x)))
	}
	return ps
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianOf is the median of one figure over runs.
func medianOf(runs []RunResult, f func(*RunResult) float64) float64 {
	xs := make([]float64, len(runs))
	for i := range runs {
		xs[i] = f(&runs[i])
	}
	return median(xs)
}

// summarize computes each target's medians, Keystone's ratios to the
// others and the SLO checks.
func summarize(sr *ScenarioReport, sc *Scenario, targets []*Target) {
	for _, t := range targets {
		var runs []RunResult
		discarded := 0
		for _, r := range sr.Runs {
			switch {
			case r.Target != t.Name:
			case r.Discarded != "":
				discarded++
			default:
				runs = append(runs, r)
			}
		}
		if len(runs) == 0 {
			continue
		}
		s := Summary{Target: t.Name, Runs: len(runs), Discarded: discarded}
		for _, r := range runs {
			s.Requests += r.Requests
			s.Errors += r.Errors
			s.Dropped += r.Dropped
			for k, n := range r.ErrorKinds {
				if s.ErrorKinds == nil {
					s.ErrorKinds = map[string]int64{}
				}
				s.ErrorKinds[k] += n
			}
		}
		if n := s.Requests + s.Dropped; n > 0 {
			s.ErrorRate = float64(s.Errors+s.Dropped) / float64(n)
		}
		s.Throughput = medianOf(runs, func(r *RunResult) float64 { return r.Throughput })
		s.P50 = medianOf(runs, func(r *RunResult) float64 { return r.P50 })
		s.P90 = medianOf(runs, func(r *RunResult) float64 { return r.P90 })
		s.P99 = medianOf(runs, func(r *RunResult) float64 { return r.P99 })
		s.P999 = medianOf(runs, func(r *RunResult) float64 { return r.P999 })
		s.Max = medianOf(runs, func(r *RunResult) float64 { return r.Max })
		s.ServiceP99 = medianOf(runs, func(r *RunResult) float64 { return r.ServiceP99 })
		s.GenLagP99 = medianOf(runs, func(r *RunResult) float64 { return r.GenLagP99 })
		s.CPUPerReqUs = medianOf(runs, func(r *RunResult) float64 { return r.CPUPerReqUs })
		s.ServerCPU = medianOf(runs, func(r *RunResult) float64 { return r.ServerCPU })
		s.ClientCPU = medianOf(runs, func(r *RunResult) float64 { return r.ClientCPU })
		s.BackgroundCPU = medianOf(runs, func(r *RunResult) float64 { return r.BackgroundCPU })
		s.RSSKiB = int64(medianOf(runs, func(r *RunResult) float64 { return float64(r.RSSKiB) }))
		s.PSSKiB = int64(medianOf(runs, func(r *RunResult) float64 { return float64(r.PSSKiB) }))
		s.RSSPerConnKiB = medianOf(runs, func(r *RunResult) float64 { return r.RSSPerConnKiB })
		s.Conns = int(medianOf(runs, func(r *RunResult) float64 { return float64(r.Conns) }))
		if sc.Mode != "idle" {
			s.Curve = medianCurve(runs)
		}
		sr.Summary = append(sr.Summary, s)
	}
	ks := sr.summaryOf("keystone")
	if ks == nil {
		return
	}
	for _, other := range []string{"nginx", "haproxy"} {
		o := sr.summaryOf(other)
		if o == nil {
			continue
		}
		r := Ratio{Other: other, Figure: sc.Compare, Value: compareRatio(sc.Compare, ks, o)}
		if ks.CPUPerReqUs > 0 && o.CPUPerReqUs > 0 {
			r.CPU = ks.CPUPerReqUs / o.CPUPerReqUs
		}
		sr.Ratios = append(sr.Ratios, r)
	}
	if sc.SLO != nil {
		sr.SLO = checkSLO(sc.SLO, sr, ks)
	}
}

// medianCurve is, at each plotted percentile, the median over runs.
func medianCurve(runs []RunResult) [][2]float64 {
	hs := make([]*hdrhistogram.Histogram, 0, len(runs))
	for _, r := range runs {
		h, err := decodeHist([]byte(r.Hist))
		if err == nil && h.TotalCount() > 0 {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		return nil
	}
	var curve [][2]float64
	for _, p := range curvePoints() {
		xs := make([]float64, len(hs))
		for i, h := range hs {
			xs[i] = usAt(h, p)
		}
		curve = append(curve, [2]float64{p, median(xs)})
	}
	return curve
}

func (sr *ScenarioReport) summaryOf(target string) *Summary {
	for i := range sr.Summary {
		if sr.Summary[i].Target == target {
			return &sr.Summary[i]
		}
	}
	return nil
}

// compareRatio is "higher is better for Keystone" for the figure.
func compareRatio(figure string, ks, o *Summary) float64 {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	switch figure {
	case "throughput":
		return div(ks.Throughput, o.Throughput)
	case "p50":
		return div(o.P50, ks.P50)
	case "p999":
		return div(o.P999, ks.P999)
	case "cpu":
		return div(o.CPUPerReqUs, ks.CPUPerReqUs)
	case "rss":
		// PSS, when the kernel has it, counts nginx's master and worker
		// without double-counting the pages they share.
		if ks.PSSKiB > 0 && o.PSSKiB > 0 {
			return div(float64(o.PSSKiB), float64(ks.PSSKiB))
		}
		return div(float64(o.RSSKiB), float64(ks.RSSKiB))
	default:
		return div(o.P99, ks.P99)
	}
}

// checkSLO evaluates slo against Keystone's medians.
func checkSLO(slo *SLO, sr *ScenarioReport, ks *Summary) []SLOCheck {
	var out []SLOCheck
	lat := func(name string, want Duration, got float64) {
		if want.D > 0 {
			out = append(out, SLOCheck{Check: name, Want: "≤ " + us(float64(want.D)/1e3), Got: us(got), Pass: got <= float64(want.D)/1e3})
		}
	}
	lat("p50", slo.P50, ks.P50)
	lat("p90", slo.P90, ks.P90)
	lat("p99", slo.P99, ks.P99)
	lat("p99.9", slo.P999, ks.P999)
	if slo.ErrorRate != nil {
		out = append(out, SLOCheck{Check: "error_rate", Want: fmt.Sprintf("≤ %g", *slo.ErrorRate),
			Got:  fmt.Sprintf("%.4g (%d errors + %d dropped of %d)", ks.ErrorRate, ks.Errors, ks.Dropped, ks.Requests+ks.Dropped),
			Pass: ks.ErrorRate <= *slo.ErrorRate})
	}
	if slo.MinThroughput > 0 {
		out = append(out, SLOCheck{Check: "throughput", Want: fmt.Sprintf("≥ %.0f req/s", slo.MinThroughput),
			Got: fmt.Sprintf("%.0f req/s", ks.Throughput), Pass: ks.Throughput >= slo.MinThroughput})
	}
	if slo.MaxCPUPerRequest.D > 0 {
		want := float64(slo.MaxCPUPerRequest.D) / 1e3
		out = append(out, SLOCheck{Check: "cpu_per_request", Want: fmt.Sprintf("≤ %.1fµs", want),
			Got: fmt.Sprintf("%.1fµs", ks.CPUPerReqUs), Pass: ks.CPUPerReqUs <= want})
	}
	if slo.MaxRSS.N > 0 {
		out = append(out, SLOCheck{Check: "rss", Want: "≤ " + kib(slo.MaxRSS.N/1024), Got: kib(ks.RSSKiB), Pass: ks.RSSKiB*1024 <= slo.MaxRSS.N})
	}
	ratio := func(name, other string, want float64, cpu bool) {
		if want <= 0 {
			return
		}
		c := SLOCheck{Check: name}
		var r *Ratio
		for i := range sr.Ratios {
			if sr.Ratios[i].Other == other {
				r = &sr.Ratios[i]
			}
		}
		switch {
		case r == nil:
			c.Want, c.Got, c.NA = fmt.Sprintf("%g", want), other+" did not run", true
		case cpu:
			c.Want, c.Got, c.Pass = fmt.Sprintf("≤ %.2f", want), fmt.Sprintf("%.2f", r.CPU), r.CPU > 0 && r.CPU <= want
		default:
			c.Want, c.Got, c.Pass = fmt.Sprintf("≥ %.2f (%s)", want, r.Figure), fmt.Sprintf("%.2f", r.Value), r.Value >= want
		}
		out = append(out, c)
	}
	ratio("ratio_vs_nginx", "nginx", slo.MinRatioVsNginx, false)
	ratio("ratio_vs_haproxy", "haproxy", slo.MinRatioVsHaproxy, false)
	ratio("cpu_ratio_vs_nginx", "nginx", slo.MaxCPURatioVsNginx, true)
	return out
}

// us formats microseconds.
func us(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 1000:
		return fmt.Sprintf("%.0fµs", v)
	case v < 1e6:
		return fmt.Sprintf("%.2fms", v/1e3)
	default:
		return fmt.Sprintf("%.2fs", v/1e6)
	}
}

// kib formats KiB.
func kib(v int64) string {
	if v < 10*1024 {
		return fmt.Sprintf("%d KiB", v)
	}
	return fmt.Sprintf("%.1f MiB", float64(v)/1024)
}

// writeReports writes report.json, report.md and latency.svg into dir,
// each through a temp file so a reader never sees half a report.
func writeReports(dir string, r *Report) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"report.json": append(js, '\n'),
		"report.md":   []byte(renderMarkdown(r)),
		"latency.svg": []byte(renderSVG(r)),
	} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// targetTitle is a target's name as written in tables.
func targetTitle(t string) string {
	switch t {
	case "keystone":
		return "Keystone"
	case "haproxy":
		return "HAProxy"
	}
	return t
}

// figure formats a summary's value of a compare figure.
func figure(name string, s *Summary) string {
	switch name {
	case "throughput":
		return fmt.Sprintf("%.0f req/s", s.Throughput)
	case "p50":
		return us(s.P50)
	case "p999":
		return us(s.P999)
	case "cpu":
		return fmt.Sprintf("%.1fµs", s.CPUPerReqUs)
	case "rss":
		return kib(s.RSSKiB) + " (PSS " + kib(s.PSSKiB) + ")"
	default:
		return us(s.P99)
	}
}

func figureTitle(name string) string {
	switch name {
	case "throughput":
		return "max throughput"
	case "cpu":
		return "CPU/request"
	case "rss":
		return "RSS"
	case "p999":
		return "p99.9"
	}
	return name
}

// renderMarkdown renders the report for humans: a summary table with
// Keystone vs nginx vs HAProxy and ratios, the SLOs, then each scenario.
func renderMarkdown(r *Report) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Keystone bench report\n\n")
	w("Suite `%s`, started %s", r.Suite, r.Started.Format(time.RFC3339))
	if !r.Finished.IsZero() {
		w(", took %v", r.Finished.Sub(r.Started).Round(time.Second))
	}
	w(". Host: %d CPUs, Linux %s, %s.\n\n", r.Host.CPUs, r.Host.Kernel, r.Host.GoVersion)
	w("**CPU layout:** %s.\n\n", r.Layout.Note)
	w("All figures are medians over interleaved repetitions (keystone, nginx, haproxy, keystone, …) measured side by side in this run; ")
	w("on a shared machine compare ratios, not absolute values. Open-loop latencies are corrected for coordinated omission ")
	w("(measured from the intended send time whenever every connection was busy). Ratios are \"higher is better for Keystone\" ")
	w("(Keystone÷other for throughput, other÷Keystone for latency, CPU and memory); CPU ratio is Keystone÷other CPU per request (lower is better).\n\n")
	w("| Target | Version | Status |\n|---|---|---|\n")
	for _, t := range r.Targets {
		w("| %s | %s | %s |\n", targetTitle(t.Name), t.Version, t.Status)
	}
	w("\n## Summary\n\n")
	w("| Scenario | Figure | Keystone | nginx | HAProxy | Keystone vs nginx | Keystone vs HAProxy | CPU/req Keystone | CPU/req nginx | CPU/req HAProxy |\n")
	w("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Scenarios {
		if s.Skipped != "" {
			w("| %s | skipped: %s | | | | | | | | |\n", s.Name, s.Skipped)
			continue
		}
		cells := []string{s.Name, figureTitle(s.Compare)}
		for _, t := range []string{"keystone", "nginx", "haproxy"} {
			cells = append(cells, cell(s, t, func(x *Summary) string { return figure(s.Compare, x) }))
		}
		for _, t := range []string{"nginx", "haproxy"} {
			c := "—"
			for _, ra := range s.Ratios {
				if ra.Other == t {
					c = fmt.Sprintf("×%.2f", ra.Value)
				}
			}
			cells = append(cells, c)
		}
		for _, t := range []string{"keystone", "nginx", "haproxy"} {
			cells = append(cells, cell(s, t, func(x *Summary) string {
				if s.Mode == "idle" {
					return "—"
				}
				return fmt.Sprintf("%.1fµs", x.CPUPerReqUs)
			}))
		}
		w("| %s |\n", strings.Join(cells, " | "))
	}
	if len(r.Failures) > 0 {
		w("\n**FAILED:**\n\n")
		for _, f := range r.Failures {
			w("- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
	}
	var slo strings.Builder
	for _, s := range r.Scenarios {
		for _, c := range s.SLO {
			res := "pass"
			switch {
			case c.NA:
				res = "n/a"
			case !c.Pass:
				res = "**MISS**"
			}
			fmt.Fprintf(&slo, "| %s | %s | %s | %s | %s |\n", s.Name, c.Check, c.Want, c.Got, res)
		}
	}
	if slo.Len() > 0 {
		w("\n## SLOs (Keystone)\n\n| Scenario | Check | Want | Got | Result |\n|---|---|---|---|---|\n%s", slo.String())
	}
	w("\n## Scenarios\n")
	for _, s := range r.Scenarios {
		renderScenario(&b, s)
	}
	return b.String()
}

func cell(s *ScenarioReport, target string, f func(*Summary) string) string {
	if x := s.summaryOf(target); x != nil {
		return f(x)
	}
	for _, n := range s.NotRun {
		if n.Name == target {
			return "not installed"
		}
	}
	return "—"
}

func renderScenario(b *strings.Builder, s *ScenarioReport) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("\n### %s\n\n", s.Name)
	if s.Description != "" {
		w("%s\n\n", s.Description)
	}
	if s.Skipped != "" {
		w("Skipped: %s\n", s.Skipped)
		return
	}
	w("`%s %s`, %s loop, %d connections", s.Method, s.Path, s.Mode, s.Connections)
	if s.Rate > 0 {
		w(", %.0f req/s", s.Rate)
	}
	w(", %d reps × (%s warmup + %s)\n\n", s.Reps, s.Warmup, s.Duration)
	for _, n := range s.NotRun {
		w("- %s: %s\n", targetTitle(n.Name), n.Status)
	}
	for _, e := range s.Errors {
		w("- ERROR: %s\n", strings.ReplaceAll(e, "\n", " "))
	}
	for _, n := range s.Notes {
		w("- Note: %s\n", n)
	}
	if len(s.NotRun)+len(s.Errors)+len(s.Notes) > 0 {
		w("\n")
	}
	if s.Mode == "idle" {
		w("| Target | Connections | RSS | PSS | RSS before | KiB per connection | Errors |\n|---|---|---|---|---|---|---|\n")
		for _, x := range s.Summary {
			w("| %s | %d | %s | %s | %s | %.1f | %s |\n", targetTitle(x.Target), x.Conns, kib(x.RSSKiB), kib(x.PSSKiB),
				kib(medianBase(s, x.Target)), x.RSSPerConnKiB, errCell(&x))
		}
	} else {
		w("| Target | req/s | p50 | p90 | p99 | p99.9 | max | errors | CPU/req | server CPU | client CPU | other load | RSS |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range s.Summary {
			w("| %s | %.0f | %s | %s | %s | %s | %s | %s | %.1fµs | %.0f%% | %.0f%% | %.2f cores | %s |\n", targetTitle(x.Target), x.Throughput,
				us(x.P50), us(x.P90), us(x.P99), us(x.P999), us(x.Max), errCell(&x), x.CPUPerReqUs, 100*x.ServerCPU, 100*x.ClientCPU, x.BackgroundCPU, kib(x.RSSKiB))
		}
	}
	for _, ra := range s.Ratios {
		w("\nKeystone vs %s: %s ×%.2f", ra.Other, figureTitle(ra.Figure), ra.Value)
		if ra.CPU > 0 {
			w(", CPU per request ×%.2f (Keystone÷%s)", ra.CPU, ra.Other)
		}
		w(".")
	}
	if len(s.Ratios) > 0 {
		w("\n")
	}
	if s.Mode == "open" {
		for _, x := range s.Summary {
			if x.GenLagP99 > 0 {
				w("\nGenerator send lateness p99 (not charged to targets): ")
				for i, y := range s.Summary {
					if i > 0 {
						w(", ")
					}
					w("%s %s", targetTitle(y.Target), us(y.GenLagP99))
				}
				w(".\n")
				break
			}
		}
	}
	var repeated, disturbed, clientBound []string
	for _, x := range s.Summary {
		name := targetTitle(x.Target)
		if x.Discarded > 0 {
			repeated = append(repeated, fmt.Sprintf("%s %d", name, x.Discarded))
		}
		if x.BackgroundCPU > 0.25 {
			disturbed = append(disturbed, fmt.Sprintf("%s %.2f cores", name, x.BackgroundCPU))
		}
		if x.ClientCPU > 0.9 && s.Mode == "closed" {
			clientBound = append(clientBound, fmt.Sprintf("%s %.0f%%", name, 100*x.ClientCPU))
		}
	}
	if len(repeated) > 0 {
		w("\nRepetitions repeated because other processes loaded the machine (kept in report.json, not in the medians): %s.\n", strings.Join(repeated, ", "))
	}
	if len(disturbed) > 0 {
		w("\nDisturbed: other processes used (median) %s during the runs; prefer CPU/request and re-run when the machine is quiet.\n", strings.Join(disturbed, ", "))
	}
	if len(clientBound) > 0 {
		w("\nClient CPUs busy (load generator + upstream): %s — above 90%% the client side may have set the pace, so read throughput as a lower bound and CPU/request as the efficiency figure.\n", strings.Join(clientBound, ", "))
	}
	var kinds strings.Builder
	for _, r := range s.Runs {
		if r.Discarded != "" {
			continue
		}
		for k, n := range r.ErrorKinds {
			fmt.Fprintf(&kinds, "| %s | %d | %s | %d | %q |\n", targetTitle(r.Target), r.Rep, k, n, r.ErrorSamples[k])
		}
	}
	if kinds.Len() > 0 {
		w("\nErrors by kind:\n\n| Target | Rep | Kind | Count | First sample |\n|---|---|---|---|---|\n%s", kinds.String())
	}
	if len(s.LogNotes) > 0 {
		w("\nTarget log warnings and errors:\n\n")
		for _, n := range s.LogNotes {
			w("- `%s`\n", strings.ReplaceAll(n, "`", "'"))
		}
	}
	if len(s.Wrk) > 0 {
		w("\nwrk cross-check (closed loop, throughput only):\n\n| Target | wrk req/s | harness req/s | non-2xx | socket errors |\n|---|---|---|---|---|\n")
		for _, x := range s.Wrk {
			h := 0.0
			if sm := s.summaryOf(x.Target); sm != nil {
				h = sm.Throughput
			}
			if x.Error != "" {
				w("| %s | %s | %.0f | | |\n", targetTitle(x.Target), x.Error, h)
				continue
			}
			w("| %s | %.0f | %.0f | %d | %s |\n", targetTitle(x.Target), x.RPS, h, x.Non2xx, x.SocketErrors)
		}
	}
	if p := s.Pprof; p != nil {
		w("\nKeystone profiles (one extra, unreported repetition):")
		if p.Error != "" {
			w(" %s\n", p.Error)
		} else {
			for _, f := range []string{p.CPUFile, p.AllocFile, p.HeapFile} {
				if f != "" {
					w(" `%s`", f)
				}
			}
			w("\n")
			if len(p.MemStats) > 0 {
				w("\n```\n%s\n```\n", strings.Join(p.MemStats, "\n"))
			}
			if len(p.HeapTop) > 0 {
				w("\n```\n%s\n```\n", strings.Join(p.HeapTop, "\n"))
			}
			if len(p.CPUTop) > 0 {
				w("\n```\n%s\n```\n", strings.Join(p.CPUTop, "\n"))
			}
			if len(p.AllocTop) > 0 {
				w("\n```\n%s\n```\n", strings.Join(p.AllocTop, "\n"))
			}
		}
	}
}

func medianBase(s *ScenarioReport, target string) int64 {
	var xs []float64
	for _, r := range s.Runs {
		if r.Target == target {
			xs = append(xs, float64(r.BaseRSSKiB))
		}
	}
	return int64(median(xs))
}

func errCell(x *Summary) string {
	if x.Errors+x.Dropped == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%.2g%%)", x.Errors+x.Dropped, 100*x.ErrorRate)
}
