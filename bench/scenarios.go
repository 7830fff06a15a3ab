package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Suite is one scenarios file: the run-wide bounds, the defaults every
// scenario inherits, and the scenarios in the order they run.
type Suite struct {
	// Deadline bounds the whole run; when it passes, the running load is
	// stopped, every child process is killed and the report is written with
	// what was measured. Default 45m.
	Deadline Duration `yaml:"deadline"`

	// Defaults fill the fields a scenario leaves unset.
	Defaults Defaults `yaml:"defaults"`

	// Scenarios run in file order. A scenario may take its rate from an
	// earlier one (RateFrom), so the order matters.
	Scenarios []Scenario `yaml:"scenarios"`

	// File is the path the suite was read from, for messages.
	File string `yaml:"-"`
}

// Defaults are the values a scenario inherits when it leaves a field unset.
type Defaults struct {
	// Warmup runs the same load before measuring, so connection pools, Lua
	// VM pools and CPU caches are warm. Default 2s.
	Warmup Duration `yaml:"warmup"`

	// Duration is the measured window of one repetition. Default 10s.
	Duration Duration `yaml:"duration"`

	// Timeout bounds one request; a request that takes longer counts as a
	// "timeout" error and its connection is replaced. Default 5s.
	Timeout Duration `yaml:"timeout"`

	// Reps is the number of interleaved repetitions per target (keystone,
	// nginx, haproxy, keystone, ...); the report quotes medians. At least 3.
	// Default 3.
	Reps int `yaml:"reps"`

	// Connections is the number of client connections. Default 64.
	Connections int `yaml:"connections"`

	// Targets are the servers compared. Default [keystone, nginx, haproxy].
	Targets []string `yaml:"targets"`
}

// Scenario is one measured workload, run against every target.
type Scenario struct {
	// Name identifies the scenario in reports and file names:
	// lowercase letters, digits and dashes. Required, unique.
	Name string `yaml:"name"`

	// Description is one line for the report.
	Description string `yaml:"description"`

	// Skip, when not empty, skips the scenario; the report shows it as
	// skipped with this reason, never as passed or failed.
	Skip string `yaml:"skip"`

	// Mode is "open" (constant rate, latency corrected for coordinated
	// omission), "closed" (Connections connections, each sending its next
	// request when the previous one answered: maximum throughput) or
	// "idle" (open Connections keep-alive connections, send one request on
	// each, hold them idle and measure the target's memory).
	Mode string `yaml:"mode"`

	// Protocol is "http1" (default) or "h2". The harness does not drive
	// HTTP/2 yet, so an h2 scenario must be skipped.
	Protocol string `yaml:"protocol"`

	// Route selects what the request exercises on every target:
	// "proxy" (a proxied route, /api/... with the prefix stripped),
	// "lua_hello" (a Lua handler answering "Hello World"),
	// "lua_proxy" (a Lua middleware that sets a request and a response
	// header around a proxied route), "tenants" (Tenants host-based
	// tenants, requests spread over their hosts), or "rate_limited" (a
	// proxied route behind a per-client-IP rate limit that never refuses:
	// Keystone's local GCRA beside nginx's limit_req). Default "proxy".
	Route string `yaml:"route"`

	// Method is the request method. Default GET, or POST when RequestBody
	// is set.
	Method string `yaml:"method"`

	// ResponseSize is the upstream response body size. Default 100 for
	// the proxied routes.
	ResponseSize Size `yaml:"response_size"`

	// RequestBody is the size of the request body sent; the upstream
	// answers with the number of bytes it received, which is checked.
	RequestBody Size `yaml:"request_body"`

	// Gzip sends "Accept-Encoding: gzip"; the upstream then answers with
	// a gzip-compressed body and "Content-Encoding: gzip", which the
	// proxies must pass through untouched (checked).
	Gzip bool `yaml:"gzip"`

	// Compress has the targets compress: the client sends
	// "Accept-Encoding: gzip", the upstream answers its JSON body
	// uncompressed (.../plain/N), and each target must answer gzip
	// (checked): Keystone with server.compression (gzip, level 5), nginx
	// with its gzip module (gzip_comp_level 5), HAProxy with its
	// compression filter. Route "proxy", GET only.
	Compress bool `yaml:"compress"`
	// UpstreamDelay makes the upstream wait this long before answering
	// (the request path carries "/delay/<ms>"), so every request stays in
	// flight at the target that long: what a slow upstream costs a proxy,
	// in memory per in-flight request and in errors. 0 to 10s.
	UpstreamDelay Duration `yaml:"upstream_delay"`

	// Tenants is the number of host-based tenants for route "tenants".
	// Default 1000.
	Tenants int `yaml:"tenants"`

	// KeystoneServer adds keys to Keystone's generated server block, to
	// measure a tuning knob (e.g. stream_request_body_over). Values are
	// written as YAML scalars.
	KeystoneServer map[string]string `yaml:"keystone_server"`

	// Connections overrides Defaults.Connections.
	Connections int `yaml:"connections"`

	// Rate is the constant request rate (req/s) of an open-loop scenario.
	Rate float64 `yaml:"rate"`

	// RateFrom derives an open-loop rate from an earlier closed-loop
	// scenario's measured throughput instead of Rate.
	RateFrom *RateFrom `yaml:"rate_from"`

	// Warmup, Duration, Timeout and Reps override Defaults.
	Warmup   Duration `yaml:"warmup"`
	Duration Duration `yaml:"duration"`
	Timeout  Duration `yaml:"timeout"`
	Reps     int      `yaml:"reps"`

	// Hold is how long an idle scenario keeps its connections open after
	// they are all established; memory is sampled during it. Default 3s.
	Hold Duration `yaml:"hold"`

	// Targets overrides Defaults.Targets.
	Targets []string `yaml:"targets"`

	// Compare is the figure the Keystone-vs-other ratios use:
	// "throughput" (default for closed), "p50", "p99" (default for open),
	// "p999", "cpu" (CPU time per request) or "rss" (default and only
	// choice for idle). Ratios are always "higher is better for Keystone":
	// Keystone÷other for throughput, other÷Keystone for the others.
	Compare string `yaml:"compare"`

	// Wrk cross-checks closed-loop throughput with wrk when it is
	// installed (one extra run per target, not used for SLOs).
	Wrk bool `yaml:"wrk"`

	// SLO lists the objectives Keystone must meet; a miss makes the run
	// exit non-zero. Nil: none.
	SLO *SLO `yaml:"slo"`
}

// RateFrom sets an open-loop rate to Factor times the median throughput a
// target reached in an earlier closed-loop scenario.
type RateFrom struct {
	// Scenario names an earlier closed-loop scenario. Required.
	Scenario string `yaml:"scenario"`
	// Target is whose throughput is used. Default nginx.
	Target string `yaml:"target"`
	// Factor scales it, 0 < factor <= 1. Default 0.5.
	Factor float64 `yaml:"factor"`
}

// SLO is what Keystone must achieve in one scenario. Zero fields are not
// checked. Latencies are medians over repetitions of each repetition's
// percentile.
type SLO struct {
	P50  Duration `yaml:"p50"`
	P90  Duration `yaml:"p90"`
	P99  Duration `yaml:"p99"`
	P999 Duration `yaml:"p999"`

	// ErrorRate is the highest accepted share of failed or dropped
	// requests, 0..1. Nil: not checked; 0: no error at all.
	ErrorRate *float64 `yaml:"error_rate"`

	// MinThroughput is the lowest accepted req/s (closed loop).
	MinThroughput float64 `yaml:"min_throughput"`

	// MaxCPUPerRequest is the most CPU time Keystone may spend per
	// request ("25us").
	MaxCPUPerRequest Duration `yaml:"max_cpu_per_request"`

	// MaxRSS is the most resident memory of the Keystone process (idle).
	MaxRSS Size `yaml:"max_rss"`

	// MinRatioVsNginx and MinRatioVsHaproxy bound the Compare ratio
	// ("higher is better for Keystone"); 1.0 means "at least as good".
	// Checked only when that target ran.
	MinRatioVsNginx   float64 `yaml:"min_ratio_vs_nginx"`
	MinRatioVsHaproxy float64 `yaml:"min_ratio_vs_haproxy"`

	// MaxCPURatioVsNginx bounds Keystone's CPU per request divided by
	// nginx's: 1.5 means "at most 50% more CPU per request than nginx".
	MaxCPURatioVsNginx float64 `yaml:"max_cpu_ratio_vs_nginx"`
}

// Duration is a time.Duration written as a Go duration string ("250ms").
// A value that does not parse is kept and reported by Validate with its
// position, instead of failing the decode without one.
type Duration struct {
	D   time.Duration
	bad string
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		d.bad = string(b)
		return nil
	}
	d.D = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.D.String()), nil }

// Size is a byte count written as an integer or with a unit: "100",
// "16KiB", "64KiB", "100MiB", "1GB". An unparsable value is reported by
// Validate with its position.
type Size struct {
	N   int64
	bad string
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := parseSize(string(b))
	if err != nil {
		s.bad = string(b)
		return nil
	}
	s.N = n
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(s.N, 10)), nil }

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		// Longest suffixes first so "KiB" is not read as "B".
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
		{"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, errors.New("bad size")
	}
	return n * mult, nil
}

// Modes, routes, targets and comparisons the harness knows.
var (
	modes     = []string{"open", "closed", "idle"}
	routes    = []string{"proxy", "lua_hello", "lua_proxy", "tenants", "rate_limited"}
	targetSet = []string{"keystone", "nginx", "haproxy"}
	compares  = []string{"throughput", "p50", "p99", "p999", "cpu", "rss"}
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// ErrorList is every problem found in a scenarios file, one
// "FILE:LINE:COL: field.path: message" per line.
type ErrorList []string

func (l ErrorList) Error() string { return strings.Join(l, "\n") }

// LoadSuite reads, defaults and validates a scenarios file. The error is an
// ErrorList naming every problem, each at its position in the file.
func LoadSuite(path string) (*Suite, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSuite(path, data)
}

// ParseSuite is LoadSuite on bytes already read; path names them in errors.
func ParseSuite(path string, data []byte) (*Suite, error) {
	s := &Suite{File: path}
	if err := yaml.UnmarshalWithOptions(data, s, yaml.DisallowUnknownField()); err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) && ye.GetToken() != nil {
			p := ye.GetToken().Position
			return nil, ErrorList{fmt.Sprintf("%s:%d:%d: %s", path, p.Line, p.Column, ye.GetMessage())}
		}
		return nil, ErrorList{fmt.Sprintf("%s: %v", path, err)}
	}
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		file = nil // positions are a nicety; validation still runs
	}
	v := &validator{file: file, path: path}
	s.applyDefaults()
	s.validate(v)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return s, nil
}

// applyDefaults fills unset fields from Defaults and then from the built-in
// defaults documented on each field.
func (s *Suite) applyDefaults() {
	d := &s.Defaults
	setDur(&s.Deadline, 45*time.Minute)
	setDur(&d.Warmup, 2*time.Second)
	setDur(&d.Duration, 10*time.Second)
	setDur(&d.Timeout, 5*time.Second)
	if d.Reps == 0 {
		d.Reps = 3
	}
	if d.Connections == 0 {
		d.Connections = 64
	}
	if len(d.Targets) == 0 {
		d.Targets = slices.Clone(targetSet)
	}
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		inheritDur(&sc.Warmup, d.Warmup)
		inheritDur(&sc.Duration, d.Duration)
		inheritDur(&sc.Timeout, d.Timeout)
		setDur(&sc.Hold, 3*time.Second)
		if sc.Reps == 0 {
			sc.Reps = d.Reps
		}
		if sc.Connections == 0 {
			sc.Connections = d.Connections
		}
		if len(sc.Targets) == 0 {
			sc.Targets = slices.Clone(d.Targets)
		}
		if sc.Protocol == "" {
			sc.Protocol = "http1"
		}
		if sc.Route == "" {
			sc.Route = "proxy"
		}
		if sc.Method == "" {
			sc.Method = "GET"
			if sc.RequestBody.N > 0 {
				sc.Method = "POST"
			}
		}
		if sc.ResponseSize.N == 0 && sc.ResponseSize.bad == "" && sc.Route != "lua_hello" {
			sc.ResponseSize.N = 100
		}
		if sc.Route == "tenants" && sc.Tenants == 0 {
			sc.Tenants = 1000
		}
		if sc.Compare == "" {
			switch sc.Mode {
			case "closed":
				sc.Compare = "throughput"
			case "idle":
				sc.Compare = "rss"
			default:
				sc.Compare = "p99"
			}
		}
		if rf := sc.RateFrom; rf != nil {
			if rf.Target == "" {
				rf.Target = "nginx"
			}
			if rf.Factor == 0 {
				rf.Factor = 0.5
			}
		}
	}
}

func setDur(d *Duration, def time.Duration) {
	if d.D == 0 && d.bad == "" {
		d.D = def
	}
}

func inheritDur(d *Duration, from Duration) {
	if d.D == 0 && d.bad == "" {
		*d = from
	}
}

// validator collects errors with the position of the field they concern.
type validator struct {
	file *ast.File
	path string
	errs ErrorList
}

// errf records "FILE:LINE:COL: field: message"; field is a YAML path
// without the "$." ("scenarios[2].rate"). When the field is absent from
// the file (a default), the nearest present parent gives the position.
func (v *validator) errf(field, format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf("%s: %s: %s", v.pos(field), field, fmt.Sprintf(format, args...)))
}

func (v *validator) pos(field string) string {
	if v.file == nil {
		return v.path
	}
	for f := field; f != ""; {
		if p, err := yaml.PathString("$." + f); err == nil {
			if n, err := p.FilterFile(v.file); err == nil && n != nil && n.GetToken() != nil {
				tp := n.GetToken().Position
				return fmt.Sprintf("%s:%d:%d", v.path, tp.Line, tp.Column)
			}
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return v.path
}

func (v *validator) dur(field string, d Duration, min, max time.Duration) {
	switch {
	case d.bad != "":
		v.errf(field, "expected a duration like %q, got %q", "10s", d.bad)
	case d.D < min || d.D > max:
		v.errf(field, "expected %v..%v, got %v", min, max, d.D)
	}
}

func (v *validator) size(field string, s Size) {
	if s.bad != "" {
		v.errf(field, "expected a size like %q or %q, got %q", "100", "64KiB", s.bad)
	}
}

func (s *Suite) validate(v *validator) {
	v.dur("deadline", s.Deadline, time.Second, 24*time.Hour)
	v.dur("defaults.warmup", s.Defaults.Warmup, 0, 10*time.Minute)
	v.dur("defaults.duration", s.Defaults.Duration, 100*time.Millisecond, 10*time.Minute)
	v.dur("defaults.timeout", s.Defaults.Timeout, time.Millisecond, time.Minute)
	validTargets(v, "defaults.targets", s.Defaults.Targets)
	if len(s.Scenarios) == 0 {
		v.errf("scenarios", "expected at least one scenario, got none")
	}
	seen := map[string]int{}
	var total time.Duration
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		f := fmt.Sprintf("scenarios[%d]", i)
		switch {
		case sc.Name == "":
			v.errf(f+".name", "required")
		case !nameRE.MatchString(sc.Name):
			v.errf(f+".name", "expected lowercase letters, digits and dashes, got %q", sc.Name)
		default:
			if j, dup := seen[sc.Name]; dup {
				v.errf(f+".name", "%q is also the name of scenarios[%d]", sc.Name, j)
			}
			seen[sc.Name] = i
		}
		sc.validate(v, f, s.Scenarios[:i])
		if sc.Skip == "" {
			total += sc.estimate()
		}
	}
	if s.Deadline.bad == "" && total > s.Deadline.D {
		v.errf("deadline", "%v is shorter than the scenarios' estimated %v; raise it or shorten the scenarios",
			s.Deadline.D, total.Round(time.Second))
	}
}

// estimate is a lower bound on the wall time of a scenario: every
// repetition of every target, plus a few seconds to start the targets.
func (sc *Scenario) estimate() time.Duration {
	per := sc.Warmup.D + sc.Duration.D
	if sc.Mode == "idle" {
		per = sc.Hold.D + 2*time.Second
	}
	return time.Duration(sc.Reps*len(sc.Targets))*per + 3*time.Second
}

func validTargets(v *validator, field string, ts []string) {
	seen := map[string]bool{}
	for i, t := range ts {
		if !slices.Contains(targetSet, t) {
			v.errf(fmt.Sprintf("%s[%d]", field, i), "expected one of %s, got %q", strings.Join(targetSet, ", "), t)
		}
		if seen[t] {
			v.errf(fmt.Sprintf("%s[%d]", field, i), "%q listed twice", t)
		}
		seen[t] = true
	}
}

func (sc *Scenario) validate(v *validator, f string, earlier []Scenario) {
	if !slices.Contains(modes, sc.Mode) {
		v.errf(f+".mode", "expected one of %s, got %q", strings.Join(modes, ", "), sc.Mode)
	}
	if !slices.Contains(routes, sc.Route) {
		v.errf(f+".route", "expected one of %s, got %q", strings.Join(routes, ", "), sc.Route)
	}
	switch sc.Protocol {
	case "http1":
	case "h2":
		if sc.Skip == "" {
			v.errf(f+".protocol", "h2 is not driven by the harness yet; set skip: with the reason")
		}
	default:
		v.errf(f+".protocol", "expected http1 or h2, got %q", sc.Protocol)
	}
	if !slices.Contains(compares, sc.Compare) {
		v.errf(f+".compare", "expected one of %s, got %q", strings.Join(compares, ", "), sc.Compare)
	} else if (sc.Mode == "idle") != (sc.Compare == "rss") {
		v.errf(f+".compare", "rss is the figure of idle scenarios and only of them; got %q for mode %q", sc.Compare, sc.Mode)
	}
	switch sc.Method {
	case "GET", "POST", "PUT":
	default:
		v.errf(f+".method", "expected GET, POST or PUT, got %q", sc.Method)
	}
	v.size(f+".response_size", sc.ResponseSize)
	v.size(f+".request_body", sc.RequestBody)
	if sc.RequestBody.N > 0 && sc.Method == "GET" {
		v.errf(f+".request_body", "a GET request has no body; set method: POST")
	}
	if sc.RequestBody.N > 64<<20 || sc.ResponseSize.N > 64<<20 {
		v.errf(f, "request_body and response_size must be at most 64MiB")
	}
	if sc.Route == "lua_hello" {
		if sc.ResponseSize.N != 0 || sc.Gzip || sc.RequestBody.N != 0 {
			v.errf(f+".route", "lua_hello answers a fixed \"Hello World\"; response_size, gzip and request_body do not apply")
		}
	}
	if sc.Compress && (sc.Gzip || sc.Route != "proxy" || sc.RequestBody.N != 0) {
		v.errf(f+".compress", "compress applies to GET responses of route proxy, without gzip")
	}
	if sc.Gzip && sc.Method != "GET" {
		v.errf(f+".gzip", "gzip applies to GET responses only, got method %q", sc.Method)
	}
	if sc.UpstreamDelay.D < 0 || sc.UpstreamDelay.D > 10*time.Second {
		v.errf(f+".upstream_delay", "expected 0 to 10s, got %s", sc.UpstreamDelay.D)
	} else if sc.UpstreamDelay.D > 0 && sc.Route == "lua_hello" {
		v.errf(f+".upstream_delay", "applies to the proxied routes, got route lua_hello")
	} else if sc.UpstreamDelay.D > 0 && sc.Timeout.D <= sc.UpstreamDelay.D {
		v.errf(f+".upstream_delay", "must be below the request timeout (%s), got %s", sc.Timeout.D, sc.UpstreamDelay.D)
	}
	if sc.Route == "tenants" && (sc.Tenants < 1 || sc.Tenants > 10000) {
		v.errf(f+".tenants", "expected 1..10000, got %d", sc.Tenants)
	}
	if sc.Route != "tenants" && sc.Tenants != 0 {
		v.errf(f+".tenants", "applies to route tenants only, got route %q", sc.Route)
	}
	maxConns := 20000
	if sc.Mode == "idle" {
		maxConns = 25000 // one loopback address pair has ~28k ephemeral ports
	}
	if sc.Connections < 1 || sc.Connections > maxConns {
		v.errf(f+".connections", "expected 1..%d, got %d", maxConns, sc.Connections)
	}
	if sc.Reps < 3 {
		v.errf(f+".reps", "expected at least 3 interleaved repetitions so medians mean something, got %d", sc.Reps)
	}
	v.dur(f+".warmup", sc.Warmup, 0, 10*time.Minute)
	v.dur(f+".duration", sc.Duration, 100*time.Millisecond, 10*time.Minute)
	v.dur(f+".timeout", sc.Timeout, time.Millisecond, time.Minute)
	v.dur(f+".hold", sc.Hold, 500*time.Millisecond, 10*time.Minute)
	validTargets(v, f+".targets", sc.Targets)
	switch sc.Mode {
	case "open":
		switch {
		case sc.Rate > 0 && sc.RateFrom != nil:
			v.errf(f+".rate", "set rate or rate_from, not both")
		case sc.Rate == 0 && sc.RateFrom == nil:
			v.errf(f+".rate", "an open-loop scenario needs rate: (req/s) or rate_from:")
		case sc.Rate < 0 || sc.Rate > 1e6:
			v.errf(f+".rate", "expected 0 < rate <= 1000000, got %v", sc.Rate)
		}
		if rf := sc.RateFrom; rf != nil {
			i := slices.IndexFunc(earlier, func(e Scenario) bool { return e.Name == rf.Scenario })
			switch {
			case rf.Scenario == "":
				v.errf(f+".rate_from.scenario", "required")
			case i < 0:
				v.errf(f+".rate_from.scenario", "expected the name of an earlier scenario, got %q", rf.Scenario)
			case earlier[i].Mode != "closed":
				v.errf(f+".rate_from.scenario", "%q is a %s scenario; a rate comes from a closed-loop one", rf.Scenario, earlier[i].Mode)
			case !slices.Contains(earlier[i].Targets, rf.Target):
				v.errf(f+".rate_from.target", "%q does not run in scenario %q", rf.Target, rf.Scenario)
			}
			if rf.Factor <= 0 || rf.Factor > 1 {
				v.errf(f+".rate_from.factor", "expected 0 < factor <= 1, got %v", rf.Factor)
			}
		}
	default:
		if sc.Rate != 0 || sc.RateFrom != nil {
			v.errf(f+".rate", "applies to open-loop scenarios only, got mode %q", sc.Mode)
		}
	}
	if sc.Wrk && sc.Mode != "closed" {
		v.errf(f+".wrk", "the wrk cross-check applies to closed-loop scenarios only")
	}
	if slo := sc.SLO; slo != nil {
		for _, d := range []struct {
			name string
			d    Duration
		}{{"p50", slo.P50}, {"p90", slo.P90}, {"p99", slo.P99}, {"p999", slo.P999}, {"max_cpu_per_request", slo.MaxCPUPerRequest}} {
			v.dur(f+".slo."+d.name, d.d, 0, time.Hour)
		}
		v.size(f+".slo.max_rss", slo.MaxRSS)
		if r := slo.ErrorRate; r != nil && (*r < 0 || *r > 1) {
			v.errf(f+".slo.error_rate", "expected 0..1, got %v", *r)
		}
		for _, r := range []struct {
			name string
			v    float64
		}{{"min_throughput", slo.MinThroughput}, {"min_ratio_vs_nginx", slo.MinRatioVsNginx}, {"min_ratio_vs_haproxy", slo.MinRatioVsHaproxy}, {"max_cpu_ratio_vs_nginx", slo.MaxCPURatioVsNginx}} {
			if r.v < 0 {
				v.errf(f+".slo."+r.name, "expected a positive number, got %v", r.v)
			}
		}
		if slo.MaxRSS.N > 0 && sc.Mode != "idle" {
			v.errf(f+".slo.max_rss", "applies to idle scenarios only, got mode %q", sc.Mode)
		}
		if sc.Mode == "idle" && (slo.P50.D+slo.P90.D+slo.P99.D+slo.P999.D > 0 || slo.MinThroughput > 0) {
			v.errf(f+".slo", "an idle scenario measures memory, not latency or throughput")
		}
		if !slices.Contains(sc.Targets, "keystone") {
			v.errf(f+".slo", "SLOs are Keystone's; the scenario does not run keystone")
		}
	}
}
