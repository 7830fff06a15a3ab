package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options are the harness's settings beyond the scenarios file; main fills
// them from flags, the test from its own tiny-run values.
type Options struct {
	// Scenarios is the scenarios YAML file. Required.
	Scenarios string
	// Out is the directory report.json, report.md and latency.svg go to.
	Out string
	// PprofDir, when set, makes the harness fetch CPU and allocation
	// profiles from Keystone (KEYSTONE_PPROF) during one extra, unreported
	// repetition of each scenario, and summarize them in the report.
	PprofDir string
	// KeystoneBin is a prebuilt keystone; empty builds ./cmd/keystone.
	KeystoneBin string
	// RaceKeystone builds keystone with -race (the test does, so the
	// smoke load also hunts data races in the gateway).
	RaceKeystone bool
	// Targets, when set, restricts the targets (for example to run
	// without keystone while it does not build).
	Targets []string
	// Run, when set, runs only the scenarios whose name matches it.
	Run *regexp.Regexp
	// Duration, Warmup, Hold, Timeout and Reps override every scenario's
	// when not zero; MaxConnections caps its connections. For quick runs
	// and tests.
	Duration, Warmup, Hold, Timeout time.Duration
	Reps, MaxConnections            int
	// Deadline overrides the suite's deadline when not zero.
	Deadline time.Duration
	// NoSLO reports SLOs without failing the run on a miss.
	NoSLO bool
	// MaxOtherLoad, when positive, is the CPU (in cores) other processes
	// may use during a repetition; a repetition over it is discarded and
	// repeated, at most MaxRetries times.
	MaxOtherLoad float64
	MaxRetries   int
	// ServerCPUs and ClientCPUs override the CPU layout ("0", "1-3").
	ServerCPUs, ClientCPUs string
	// KeepWork keeps the temp directory with the generated configs.
	KeepWork bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// cpuLayout is which CPUs the targets get and which the load generator and
// upstream share.
type cpuLayout struct {
	Server []int  `json:"server_cpus"`
	Client []int  `json:"client_cpus"`
	Pinned bool   `json:"pinned"`
	Note   string `json:"note"`
}

// planLayout splits the CPUs the harness may use: the first half to the
// target under test (so each target gets the same, exclusive CPUs), the
// rest to the load generator and the upstream. With one CPU, or without
// taskset, nothing is pinned and the report says so.
func planLayout(serverSpec, clientSpec string, haveTaskset bool) (cpuLayout, error) {
	var set unix.CPUSet
	var cpus []int
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		for i := 0; i < 1024; i++ {
			if set.IsSet(i) {
				cpus = append(cpus, i)
			}
		}
	}
	if len(cpus) == 0 {
		cpus = []int{0}
	}
	if serverSpec != "" || clientSpec != "" {
		s, err1 := parseCPUs(serverSpec)
		c, err2 := parseCPUs(clientSpec)
		if err := errors.Join(err1, err2); err != nil {
			return cpuLayout{}, err
		}
		if len(s) == 0 || len(c) == 0 {
			return cpuLayout{}, errors.New("-server-cpus and -client-cpus go together")
		}
		return cpuLayout{Server: s, Client: c, Pinned: haveTaskset, Note: "layout from flags"}, nil
	}
	if len(cpus) < 2 || !haveTaskset {
		note := "only one CPU"
		if !haveTaskset {
			note = "taskset not found"
		}
		return cpuLayout{Server: cpus, Client: cpus, Note: note + ": targets, load generator and upstream share all CPUs; compare ratios only"}, nil
	}
	half := len(cpus) / 2
	return cpuLayout{
		Server: cpus[:half], Client: cpus[half:], Pinned: true,
		Note: fmt.Sprintf("target under test pinned to CPU %s (GOMAXPROCS / worker_processes / nbthread = %d); load generator and upstream pinned to CPU %s",
			cpuList(cpus[:half]), half, cpuList(cpus[half:])),
	}, nil
}

// parseCPUs parses "0", "0,2", "1-3".
func parseCPUs(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if isRange && err == nil {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a {
			return nil, fmt.Errorf("bad CPU list %q: expected like \"0\", \"0,2\" or \"1-3\"", s)
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// raiseNofile lifts RLIMIT_NOFILE as far as allowed, for the harness and
// (inherited) every child: the idle scenario holds 10,000 connections on
// each side. It returns the soft limit in force.
func raiseNofile() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	// Root may raise the hard limit too (CAP_SYS_RESOURCE), up to nr_open.
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return want.Cur
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// harness is one run of a suite.
type harness struct {
	opts    Options
	suite   *Suite
	procs   *procSet
	layout  cpuLayout
	self    string // this executable, re-executed for the upstream and load generator
	work    string // temp dir: generated configs, logs
	nofile  uint64
	targets map[string]*Target
	order   []string // target names in interleaving order

	upstream      string // upstream address
	upstreamProc  *child
	upstreamStdin *os.File // never written; closing it (exit) stops the upstream

	mu     sync.Mutex // guards report while writing it
	report *Report
	logw   io.Writer
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.logw, "bench: "+format+"\n", args...)
}

// roleEnv selects a child role when the harness executable re-executes
// itself: "upstream" or "loadgen".
const roleEnv = "KEYSTONE_BENCH_ROLE"

// Run runs the suite and writes the reports. The returned report is nil
// only when nothing could run; otherwise a non-nil error means the run is
// incomplete, and report.Failed says whether a target failed or an SLO was
// missed.
func Run(ctx context.Context, o Options) (*Report, error) {
	suite, err := LoadSuite(o.Scenarios)
	if err != nil {
		return nil, err
	}
	if o.Out == "" {
		return nil, errors.New("no output directory (-out)")
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	o.applyOverrides(suite)
	deadline := suite.Deadline.D
	if o.Deadline > 0 {
		deadline = o.Deadline
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()

	h := &harness{opts: o, suite: suite, procs: newProcSet(), logw: o.Log, targets: map[string]*Target{}}
	if h.logw == nil {
		h.logw = io.Discard
	}
	defer h.procs.killAll()
	if h.self, err = os.Executable(); err != nil {
		return nil, err
	}
	h.nofile = raiseNofile()
	if h.layout, err = planLayout(o.ServerCPUs, o.ClientCPUs, h.procs.tasksetc != ""); err != nil {
		return nil, err
	}
	if h.work, err = os.MkdirTemp("", "keystone-bench-"); err != nil {
		return nil, err
	}
	if o.KeepWork {
		h.logf("generated configs and logs kept in %s", h.work)
	} else {
		defer os.RemoveAll(h.work)
	}
	h.report = newReport(suite, h.layout)

	if err := h.discover(ctx); err != nil {
		return nil, err
	}
	if err := h.startUpstream(); err != nil {
		return nil, err
	}
	for i := range suite.Scenarios {
		sc := &suite.Scenarios[i]
		if o.Run != nil && !o.Run.MatchString(sc.Name) {
			continue
		}
		if ctx.Err() != nil {
			h.report.Failures = append(h.report.Failures, fmt.Sprintf("%s: not run: %v (deadline %v)", sc.Name, ctx.Err(), deadline))
			continue
		}
		h.runScenario(ctx, sc)
		if err := h.writeReports(); err != nil {
			return h.report, err
		}
	}
	h.report.Finished = time.Now()
	return h.report, h.writeReports()
}

// applyOverrides applies the quick-run options to every scenario.
func (o *Options) applyOverrides(s *Suite) {
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		if o.Duration > 0 {
			sc.Duration.D = o.Duration
		}
		if o.Warmup > 0 {
			sc.Warmup.D = o.Warmup
		}
		if o.Hold > 0 {
			sc.Hold.D = o.Hold
		}
		if o.Timeout > 0 {
			sc.Timeout.D = o.Timeout
		}
		if o.Reps > 0 {
			sc.Reps = o.Reps
		}
		if o.MaxConnections > 0 && sc.Connections > o.MaxConnections {
			sc.Connections = o.MaxConnections
		}
		if len(o.Targets) > 0 {
			sc.Targets = slices.DeleteFunc(sc.Targets, func(t string) bool { return !slices.Contains(o.Targets, t) })
		}
	}
}

// discover finds or builds the targets the scenarios need.
func (h *harness) discover(ctx context.Context) error {
	need := map[string]bool{}
	for _, sc := range h.suite.Scenarios {
		if sc.Skip == "" && (h.opts.Run == nil || h.opts.Run.MatchString(sc.Name)) {
			for _, t := range sc.Targets {
				need[t] = true
			}
		}
	}
	for _, name := range targetSet {
		if !need[name] {
			continue
		}
		h.order = append(h.order, name)
		var t *Target
		var err error
		switch {
		case name == "keystone" && h.opts.KeystoneBin != "":
			t, err = keystoneTarget(h.opts.KeystoneBin)
		case name == "keystone":
			var root string
			if root, err = moduleRoot("."); err == nil {
				h.logf("building keystone (./cmd/keystone in %s)", root)
				t, err = buildKeystone(ctx, root, h.work, h.opts.RaceKeystone)
			}
		default:
			t = discoverTarget(name)
		}
		if t != nil {
			h.targets[name] = t
			h.report.Targets = append(h.report.Targets, TargetInfo{Name: name, Version: t.Version, Status: t.Status})
		}
		if err != nil {
			// Keystone is what is under test: no keystone, no run.
			return fmt.Errorf("keystone: %w", err)
		}
		h.logf("%-8s %s %s", name, t.Status, t.Version)
	}
	return nil
}

// startUpstream starts the upstream process on the client CPUs.
func (h *harness) startUpstream() error {
	cmd := h.procs.command(h.layout.Client, childEnv("upstream", len(h.layout.Client)), h.self)
	// The write end of stdin stays open, unused, for the harness's life:
	// when the harness exits however it exits, the upstream reads EOF and
	// follows.
	stdin, stdout, err := pipes(cmd)
	if err != nil {
		return err
	}
	h.upstreamStdin = stdin
	c, err := h.procs.start("upstream", cmd, filepath.Join(h.work, "upstream.log"))
	closeChildEnds(cmd)
	if err != nil {
		return err
	}
	defer stdout.Close()
	var hello upstreamHello
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &hello)
	}
	if err != nil {
		return fmt.Errorf("upstream did not start: %v\n%s", err, c.logTail())
	}
	h.upstream, h.upstreamProc = hello.Addr, c
	return nil
}

// scanLog reads a target's log after it stopped. It returns up to five
// distinct warning or error lines (structured "level":"WARN"/"ERROR" or
// nginx/HAProxy [warn]/[alert]/[error]), and the first data race report
// of a race-built binary, if any.
func scanLog(path string) (notes []string, race string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ""
	}
	text := string(data)
	if i := strings.Index(text, "WARNING: DATA RACE"); i >= 0 {
		race = text[i:]
		if j := strings.Index(race[1:], "=================="); j > 0 {
			race = race[:j+1]
		}
		if len(race) > 4000 {
			race = race[:4000]
		}
	}
	counts := map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		l := strings.ToLower(line)
		if !strings.Contains(l, `"level":"warn`) && !strings.Contains(l, `"level":"error`) &&
			!strings.Contains(l, "[warn]") && !strings.Contains(l, "[error]") && !strings.Contains(l, "[alert]") &&
			!strings.Contains(l, "level=warn") && !strings.Contains(l, "level=error") {
			continue
		}
		key := clip([]byte(logNoise.ReplaceAllString(line, "")))
		if counts[key] == 0 && len(counts) >= 5 {
			continue
		}
		counts[key]++
	}
	for line, n := range counts {
		notes = append(notes, fmt.Sprintf("%d× %s", n, line))
	}
	slices.Sort(notes)
	return notes, race
}

// logNoise matches what differs between two occurrences of one log
// message: timestamps and nginx's "PID#TID: ".
var logNoise = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |\d+#\d+: |"time":"[^"]*",?`)

func appendUnique(xs []string, x string) []string {
	if slices.Contains(xs, x) {
		return xs
	}
	return append(xs, x)
}

// childEnv is the environment of a re-executed child: its role, its CPU
// count, and — when this binary is the race-enabled test binary — no
// one-second sleep at exit (the race runtime's atexit_sleep_ms default),
// which would add a second to every run.
func childEnv(role string, cpus int) []string {
	return []string{roleEnv + "=" + role, "GOMAXPROCS=" + strconv.Itoa(cpus),
		"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
}

// pipes connects the child's stdin and stdout to os.Pipe ends the caller
// owns. exec.Cmd's own StdoutPipe is closed by Wait as soon as the process
// exits, which races with reading its last line (the result); a plain
// *os.File is handed to the child as is and only the caller closes it.
func pipes(cmd *exec.Cmd) (stdin, stdout *os.File, err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	return inW, outR, nil
}

// closeChildEnds closes the parent's copies of the pipe ends pipes gave the
// child, so the parent sees EOF when the child exits.
func closeChildEnds(cmd *exec.Cmd) {
	if f, ok := cmd.Stdin.(*os.File); ok {
		f.Close()
	}
	if f, ok := cmd.Stdout.(*os.File); ok {
		f.Close()
	}
}

// freePort asks the kernel for an unused loopback port. Another process
// could take it before the target binds it; the target then fails to
// start and says so, which on a bench machine is rare enough.
func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// requestFor returns the request and the expected answer of a scenario.
func requestFor(sc *Scenario) (RequestSpec, Expect) {
	spec := RequestSpec{Method: sc.Method, Body: int(sc.RequestBody.N)}
	exp := Expect{Status: 200, BodyLen: -1}
	tail := "/bytes/" + strconv.FormatInt(sc.ResponseSize.N, 10)
	if sc.RequestBody.N > 0 {
		tail = "/echo"
		exp.Body = strconv.FormatInt(sc.RequestBody.N, 10)
	} else if !sc.Gzip && !sc.Compress {
		exp.BodyLen = int(sc.ResponseSize.N)
	}
	if sc.Compress {
		tail = "/plain/" + strconv.FormatInt(sc.ResponseSize.N, 10)
		spec.Headers = append(spec.Headers, "Accept-Encoding: gzip")
		exp.Encoding = "gzip"
	}
	if sc.Gzip {
		spec.Headers = append(spec.Headers, "Accept-Encoding: gzip")
		exp.Encoding = "gzip"
	}
	if sc.UpstreamDelay.D > 0 {
		tail = "/delay/" + strconv.FormatInt(sc.UpstreamDelay.D.Milliseconds(), 10) + tail
	}
	switch sc.Route {
	case "proxy":
		spec.Path = "/api" + tail
	case "lua_hello":
		spec.Path = "/lua/hello"
		exp.Body, exp.BodyLen = "Hello World", -1
	case "lua_proxy":
		spec.Path = "/mw" + tail
		// X-Lua proves the response half of the middleware ran,
		// X-Bench-Seen (echoed by the upstream) the request half.
		exp.Headers = []string{"X-Lua", "X-Bench-Seen"}
	case "tenants":
		spec.Path = tail
		spec.Hosts = tenantHosts(sc.Tenants)
	case "rate_limited":
		spec.Path = "/rl" + tail
	}
	return spec, exp
}

// scenarioRate resolves an open-loop rate, from rate_from when set. The
// reason is non-empty when it cannot be resolved.
func (h *harness) scenarioRate(sc *Scenario) (float64, string) {
	if sc.Mode != "open" {
		return 0, ""
	}
	rf := sc.RateFrom
	if rf == nil {
		return sc.Rate, ""
	}
	for _, sr := range h.report.Scenarios {
		if sr.Name != rf.Scenario {
			continue
		}
		for _, s := range sr.Summary {
			if s.Target == rf.Target && s.Throughput > 0 {
				return s.Throughput * rf.Factor, ""
			}
		}
	}
	return 0, fmt.Sprintf("rate_from: %s's throughput in %q was not measured", rf.Target, rf.Scenario)
}

// runScenario runs every repetition of one scenario against every target,
// interleaved, and adds it to the report.
func (h *harness) runScenario(ctx context.Context, sc *Scenario) {
	spec, exp := requestFor(sc)
	sr := &ScenarioReport{
		Name: sc.Name, Description: sc.Description, Mode: sc.Mode, Route: sc.Route, Method: sc.Method,
		Path: spec.Path, Connections: sc.Connections, Compare: sc.Compare, Reps: sc.Reps,
		Duration: sc.Duration.D.String(), Warmup: sc.Warmup.D.String(),
	}
	h.mu.Lock()
	h.report.Scenarios = append(h.report.Scenarios, sr)
	h.mu.Unlock()
	if sc.Skip != "" {
		sr.Skipped = sc.Skip
		h.logf("%s: skipped: %s", sc.Name, sc.Skip)
		return
	}
	rate, why := h.scenarioRate(sc)
	if why != "" {
		sr.Skipped = why
		h.logf("%s: skipped: %s", sc.Name, why)
		return
	}
	sr.Rate = rate
	var targets []*Target
	for _, name := range h.order {
		t := h.targets[name]
		if !slices.Contains(sc.Targets, name) {
			continue
		}
		if t.Status != "ok" {
			sr.NotRun = append(sr.NotRun, TargetInfo{Name: name, Status: t.Status})
			continue
		}
		targets = append(targets, t)
	}
	job := LoadJob{
		Mode: sc.Mode, Request: spec, Expect: exp, Connections: sc.Connections, Rate: rate,
		Warmup: sc.Warmup.D, Duration: sc.Duration.D, Timeout: sc.Timeout.D, Hold: sc.Hold.D,
	}
	h.logf("%s: %s %s %s, %d conns%s, %d reps × %v", sc.Name, sc.Mode, sc.Method, spec.Path, sc.Connections,
		rateNote(rate), sc.Reps, sc.Warmup.D+sc.Duration.D)

	// Idle scenarios measure memory, so every repetition gets a fresh
	// process; the others keep theirs (warm pools) across repetitions.
	fresh := sc.Mode == "idle"
	insts := map[string]*instance{}
	failed := map[string]bool{}
	fail := func(t string, err error) {
		failed[t] = true
		msg := fmt.Sprintf("%s/%s: %v", sc.Name, t, err)
		sr.Errors = append(sr.Errors, msg)
		h.report.Failures = append(h.report.Failures, msg)
		h.logf("%s", msg)
	}
	// stop ends an instance and reads its log: a data race (race-built
	// keystone) fails the scenario, warnings and errors are noted.
	stop := func(in *instance) {
		h.procs.stop(in.proc, 3*time.Second)
		for _, log := range []string{in.proc.logPath, filepath.Join(in.dir, "error.log")} {
			notes, race := scanLog(log)
			if race != "" {
				fail(in.target.Name, fmt.Errorf("data race:\n%s", race))
			}
			for _, n := range notes {
				sr.LogNotes = appendUnique(sr.LogNotes, in.target.Name+": "+n)
			}
		}
	}
	defer func() {
		for _, in := range insts {
			stop(in)
		}
	}()
	start := func(t *Target, pprof bool) (*instance, error) {
		if in := insts[t.Name]; in != nil {
			stop(in)
			delete(insts, t.Name)
		}
		in, note, err := h.launch(ctx, sc, t, spec, exp, pprof)
		if note != "" {
			sr.Notes = appendUnique(sr.Notes, note)
		}
		if err != nil {
			return nil, err
		}
		insts[t.Name] = in
		return in, nil
	}
	began := time.Now()
	defer func() { h.logf("%s: done in %v", sc.Name, time.Since(began).Round(time.Millisecond)) }()
	for _, t := range targets {
		if !fresh {
			t0 := time.Now()
			if _, err := start(t, false); err != nil {
				fail(t.Name, err)
			} else {
				h.logf("%s: %s ready in %v", sc.Name, t.Name, time.Since(t0).Round(time.Millisecond))
			}
		}
	}
	for rep := 1; rep <= sc.Reps && ctx.Err() == nil; rep++ {
		for _, t := range targets {
			if failed[t.Name] || ctx.Err() != nil {
				continue
			}
			in := insts[t.Name]
			if fresh {
				var err error
				if in, err = start(t, false); err != nil {
					fail(t.Name, err)
					continue
				}
			}
			for attempt := 1; ; attempt++ {
				r, err := h.measure(ctx, in, sc, job, nil)
				if err != nil {
					fail(t.Name, fmt.Errorf("rep %d: %w", rep, err))
					break
				}
				r.Scenario, r.Target, r.Rep = sc.Name, t.Name, rep
				// A repetition during which the rest of the machine used
				// more than MaxOtherLoad cores measured the neighbours as
				// much as the target: keep it on record, excluded from the
				// medians, and measure again (up to MaxRetries times).
				if lim := h.opts.MaxOtherLoad; lim > 0 && r.BackgroundCPU > lim && attempt <= h.opts.MaxRetries && ctx.Err() == nil {
					r.Discarded = fmt.Sprintf("other processes used %.2f cores (limit %.2f)", r.BackgroundCPU, lim)
					sr.Runs = append(sr.Runs, r)
					h.logf("%s: %-8s rep %d: discarded, %s; again", sc.Name, t.Name, rep, r.Discarded)
					continue
				}
				sr.Runs = append(sr.Runs, r)
				h.logf("%s: %-8s rep %d: %s", sc.Name, t.Name, rep, r.brief())
				break
			}
		}
	}
	if ctx.Err() != nil {
		fail("harness", fmt.Errorf("stopped during the scenario (%v); results are partial", ctx.Err()))
	}
	if h.opts.PprofDir != "" && ctx.Err() == nil {
		if t := h.targets["keystone"]; t != nil && t.Status == "ok" && slices.Contains(sc.Targets, "keystone") {
			sr.Pprof = h.profile(ctx, sc, t, job, start)
		}
	}
	if sc.Wrk && ctx.Err() == nil {
		for _, t := range targets {
			if in := insts[t.Name]; in != nil && !failed[t.Name] {
				sr.Wrk = append(sr.Wrk, h.wrk(ctx, in, sc, spec))
			}
		}
	}
	summarize(sr, sc, targets)
	if !h.opts.NoSLO {
		for _, c := range sr.SLO {
			if !c.Pass && !c.NA {
				h.report.Failures = append(h.report.Failures, fmt.Sprintf("%s: SLO %s: want %s, got %s", sc.Name, c.Check, c.Want, c.Got))
			}
		}
	}
}

func rateNote(rate float64) string {
	if rate == 0 {
		return ""
	}
	return fmt.Sprintf(" at %.0f req/s", rate)
}

// launch starts one target for a scenario and waits until it answers the
// scenario's request correctly.
func (h *harness) launch(ctx context.Context, sc *Scenario, t *Target, spec RequestSpec, exp Expect, pprof bool) (in *instance, note string, err error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	// Room for every client connection. nginx's worker_connections also
	// counts upstream connections, which writeNginx adds. HAProxy reserves
	// two file descriptors per connection and warns when RLIMIT_NOFILE is
	// lower, but an idle client connection holds one, so 10k idle
	// connections fit in a 20k limit.
	maxConns := max(sc.Connections+1024, 4096)
	if t.Name == "keystone" {
		maxConns = 100000
	}
	// HAProxy refuses to start when 2×maxconn exceeds RLIMIT_NOFILE,
	// which an unprivileged harness cannot raise past the hard limit.
	if lim := int(h.nofile-64) / 2; t.Name == "haproxy" && maxConns > lim {
		maxConns = lim
		note = fmt.Sprintf("haproxy: maxconn capped at %d by RLIMIT_NOFILE=%d (HAProxy reserves two descriptors per connection); connections beyond it wait and time out", lim, h.nofile)
	}
	p := targetParams{
		Dir:            filepath.Join(h.work, sc.Name, t.Name),
		Listen:         "127.0.0.1:" + strconv.Itoa(port),
		Upstream:       h.upstream,
		Procs:          len(h.layout.Server),
		KeepAlive:      max(sc.Connections, 1024),
		MaxConns:       maxConns,
		NoFile:         int(h.nofile),
		Root:           os.Geteuid() == 0,
		KeystoneServer: sc.KeystoneServer,
		Compress:       sc.Compress,
	}
	if sc.Route == "tenants" {
		p.Hosts = tenantHosts(sc.Tenants)
	}
	in, err = h.startTarget(ctx, t, p, pprof)
	if err != nil {
		return nil, note, err
	}
	reqs, err := buildRequests(spec, in.addr)
	if err != nil {
		h.procs.stop(in.proc, time.Second)
		return nil, note, err
	}
	if err := h.waitReady(ctx, in, reqs[0], &exp, 60*time.Second); err != nil {
		h.procs.stop(in.proc, time.Second)
		return nil, note, err
	}
	return in, note, nil
}

// measureHooks lets the profiler act at the measured window's start, or
// (idle) at the end of the hold, while every connection is still open.
type measureHooks struct {
	onStart func()
	onIdle  func()
}

// measure runs one load generator against one target instance and turns
// its result into a RunResult, sampling the target's /proc at the edges of
// the measured window.
func (h *harness) measure(ctx context.Context, in *instance, sc *Scenario, job LoadJob, hooks *measureHooks) (RunResult, error) {
	job.Addr = in.addr
	var r RunResult
	base, err := treeUsage(in.proc.Pid())
	if err != nil {
		return r, fmt.Errorf("%s is not running: %v\n%s", in.target.Name, err, in.proc.logTail())
	}
	cmd := h.procs.command(h.layout.Client, childEnv("loadgen", len(h.layout.Client)), h.self)
	stdin, stdout, err := pipes(cmd)
	if err != nil {
		return r, err
	}
	defer stdout.Close()
	defer stdin.Close()
	lg, err := h.procs.start("loadgen", cmd, filepath.Join(in.dir, "loadgen.log"))
	closeChildEnds(cmd)
	if err != nil {
		return r, err
	}
	defer h.procs.stop(lg, time.Second)
	if err := json.NewEncoder(stdin).Encode(job); err != nil {
		return r, err
	}
	// The load generator exits within its watchdog; this bounds the read
	// loop if it hangs anyway, or when the deadline passes.
	limit := job.Warmup + job.Duration + job.Hold + 2*job.Timeout + 90*time.Second
	stopRead := context.AfterFunc(ctx, func() { h.procs.stop(lg, 0) })
	defer stopRead()
	timer := time.AfterFunc(limit, func() { h.procs.stop(lg, 0) })
	defer timer.Stop()

	var u0, u1 procUsage
	var c0, c1, m0, m1 int64
	var t0, t1 time.Time
	clientTicks := func() int64 { return cpuNanos(lg.Pid()) + cpuNanos(h.upstreamProc.Pid()) }
	var res *LoadResult
	sc2 := bufio.NewScanner(stdout)
	sc2.Buffer(make([]byte, 1<<20), 64<<20)
	for sc2.Scan() {
		var ev loadEvent
		if err := json.Unmarshal(sc2.Bytes(), &ev); err != nil {
			return r, fmt.Errorf("loadgen: bad event %q: %v", clip(sc2.Bytes()), err)
		}
		switch ev.Event {
		case "measure_start":
			t0, c0, m0 = time.Now(), clientTicks(), machineBusyTicks()
			u0, _ = treeUsage(in.proc.Pid())
			if hooks != nil && hooks.onStart != nil {
				hooks.onStart()
			}
		case "measure_end":
			t1, c1, m1 = time.Now(), clientTicks(), machineBusyTicks()
			u1, _ = treeUsage(in.proc.Pid())
		case "idle_ready":
			// Hold the connections idle, then sample: memory a server
			// gives back from idle connections (buffers released, GC) is
			// not charged, memory it keeps is.
			sleepUntil(ctx, time.Now().Add(job.Hold))
			u, err := treeUsage(in.proc.Pid())
			if err == nil {
				r.RSSKiB, r.PSSKiB = u.RSSKiB, u.PSSKiB
			}
			r.Conns = ev.Conns
			if hooks != nil && hooks.onIdle != nil {
				hooks.onIdle()
			}
			io.WriteString(stdin, "release\n")
		case "result":
			res = ev.Result
		case "error":
			return r, errors.New(ev.Error)
		}
	}
	<-lg.done
	if res == nil || lg.err != nil {
		// A load generator that exits non-zero is broken even if it sent
		// a result (exit status 66: the race detector found a race).
		return r, fmt.Errorf("loadgen failed: %v\n%s", lg.err, lg.logTail())
	}
	if in.proc.Exited() {
		return r, fmt.Errorf("%s exited during the run: %v\n%s", in.target.Name, in.proc.err, in.proc.logTail())
	}
	if err := r.fill(res, sc, job); err != nil {
		return r, err
	}
	r.BaseRSSKiB = base.RSSKiB
	if sc.Mode != "idle" {
		r.RSSKiB, r.PSSKiB = u1.RSSKiB, u1.PSSKiB
		el := t1.Sub(t0).Seconds()
		r.CPUTicks = u1.Ticks - u0.Ticks
		cpu := float64(u1.CPUNanos-u0.CPUNanos) / 1e9
		if u0.CPUNanos == 0 {
			cpu = float64(r.CPUTicks) / clockTicks
		}
		if r.Requests > 0 {
			r.CPUPerReqUs = cpu * 1e6 / float64(r.Requests)
		}
		if el > 0 {
			r.ServerCPU = cpu / el / float64(len(h.layout.Server))
			r.ClientCPU = float64(c1-c0) / 1e9 / el / float64(len(h.layout.Client))
			// Whatever else ran: other users of a shared machine. The
			// 10ms tick granularity makes small values noise.
			r.BackgroundCPU = max(0, float64(m1-m0)/clockTicks-cpu-float64(c1-c0)/1e9) / el
		}
	} else if r.Conns > 0 {
		r.RSSPerConnKiB = float64(r.RSSKiB-r.BaseRSSKiB) / float64(r.Conns)
	}
	return r, nil
}

// profile runs one extra keystone repetition with KEYSTONE_PPROF set and
// fetches a CPU and an allocation profile over its measured window. The
// repetition is not part of the medians: profiling costs CPU.
func (h *harness) profile(ctx context.Context, sc *Scenario, t *Target, job LoadJob, start func(*Target, bool) (*instance, error)) *PprofInfo {
	info := &PprofInfo{}
	in, err := start(t, true)
	if err != nil {
		info.Error = err.Error()
		return info
	}
	secs := max(int(sc.Duration.D/time.Second)-1, 1)
	if err := os.MkdirAll(h.opts.PprofDir, 0o755); err != nil {
		info.Error = err.Error()
		return info
	}
	var wg sync.WaitGroup
	var errs [2]error
	fetch := func(i int, kind, file string) {
		defer wg.Done()
		url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", in.pprofAddr, kind, secs)
		errs[i] = httpToFile(ctx, url, file, time.Duration(secs+30)*time.Second)
	}
	if sc.Mode == "idle" {
		return h.profileIdle(ctx, sc, t, in, job)
	}
	cpuFile := filepath.Join(h.opts.PprofDir, sc.Name+".cpu.pprof")
	allocFile := filepath.Join(h.opts.PprofDir, sc.Name+".allocs.pprof")
	hooks := &measureHooks{onStart: func() {
		wg.Add(2)
		go fetch(0, "profile", cpuFile)
		go fetch(1, "allocs", allocFile)
	}}
	if _, err := h.measure(ctx, in, sc, job, hooks); err != nil {
		info.Error = err.Error()
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		info.Error = fmt.Sprintf("fetching profiles from KEYSTONE_PPROF=%s: %v", in.pprofAddr, err)
		return info
	}
	info.CPUFile, info.AllocFile = cpuFile, allocFile
	info.CPUTop = pprofTop(t.Bin, cpuFile, "")
	info.AllocTop = pprofTop(t.Bin, allocFile, "-sample_index=alloc_space")
	return info
}

// profileIdle fetches Keystone's heap profile and runtime memory
// statistics while an idle scenario holds its connections: where the
// resident memory per idle connection goes (goroutine stacks, buffers).
func (h *harness) profileIdle(ctx context.Context, sc *Scenario, t *Target, in *instance, job LoadJob) *PprofInfo {
	info := &PprofInfo{}
	heapFile := filepath.Join(h.opts.PprofDir, sc.Name+".heap.pprof")
	var errs []error
	hooks := &measureHooks{onIdle: func() {
		base := "http://" + in.pprofAddr + "/debug/pprof/"
		errs = append(errs, httpToFile(ctx, base+"heap?gc=1", heapFile, 30*time.Second))
		txt := heapFile + ".txt"
		if err := httpToFile(ctx, base+"heap?debug=1", txt, 30*time.Second); err == nil {
			info.MemStats = memStatLines(txt)
		}
		gr := filepath.Join(h.opts.PprofDir, sc.Name+".goroutine.txt")
		if err := httpToFile(ctx, base+"goroutine?debug=1", gr, 30*time.Second); err == nil {
			if b, err := os.ReadFile(gr); err == nil {
				info.MemStats = append(info.MemStats, firstLine(b))
			}
		}
	}}
	if _, err := h.measure(ctx, in, sc, job, hooks); err != nil {
		info.Error = err.Error()
	}
	if err := errors.Join(errs...); err != nil {
		info.Error = fmt.Sprintf("fetching the heap profile from KEYSTONE_PPROF=%s: %v", in.pprofAddr, err)
		return info
	}
	info.HeapFile = heapFile
	info.HeapTop = pprofTop(t.Bin, heapFile, "-sample_index=inuse_space")
	return info
}

// memStatLines picks the runtime.MemStats lines that explain resident
// memory out of a heap?debug=1 profile.
func memStatLines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"# Sys = ", "# HeapInuse = ", "# HeapIdle = ", "# HeapReleased = ", "# StackInuse = ", "# MSpanInuse = ", "# NumGC = "} {
			if strings.HasPrefix(l, k) {
				out = append(out, strings.TrimPrefix(l, "# "))
			}
		}
	}
	return out
}

func httpToFile(ctx context.Context, url, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop returns the first lines of `go tool pprof -top`, or nil when go
// is not on PATH.
func pprofTop(bin, file, extra string) []string {
	args := []string{"tool", "pprof", "-top", "-nodecount=15"}
	if extra != "" {
		args = append(args, extra)
	}
	out, err := exec.Command("go", append(args, bin, file)...).Output()
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	// Drop the File/Build ID/Type/Time preamble; keep from Duration on.
	for i, l := range lines {
		if strings.HasPrefix(l, "Duration:") {
			return lines[i:]
		}
	}
	return lines
}

// wrkRE pulls the throughput and error lines out of wrk's output.
var (
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSock   = regexp.MustCompile(`Socket errors: (.*)`)
)

// wrk cross-checks a closed-loop throughput with wrk, on the client CPUs.
// Only the req/s is used; wrk's latency percentiles are not
// coordinated-omission corrected and are not reported.
func (h *harness) wrk(ctx context.Context, in *instance, sc *Scenario, spec RequestSpec) WrkResult {
	w := WrkResult{Target: in.target.Name}
	bin, err := exec.LookPath("wrk")
	if err != nil {
		w.Error = "wrk not installed"
		return w
	}
	var lua strings.Builder
	fmt.Fprintf(&lua, "wrk.method = %q\n", spec.Method)
	if spec.Body > 0 {
		fmt.Fprintf(&lua, "wrk.body = string.rep(\"k\", %d)\n", spec.Body)
	}
	for _, kv := range spec.Headers {
		k, v, _ := strings.Cut(kv, ":")
		fmt.Fprintf(&lua, "wrk.headers[%q] = %q\n", strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if len(spec.Hosts) > 0 {
		lua.WriteString("local hosts = {")
		for _, host := range spec.Hosts {
			fmt.Fprintf(&lua, "%q,", host)
		}
		lua.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i % #hosts + 1\n  wrk.headers[\"Host\"] = hosts[i]\n  return wrk.format()\nend\n")
	}
	script := filepath.Join(in.dir, "wrk.lua")
	if err := os.WriteFile(script, []byte(lua.String()), 0o644); err != nil {
		w.Error = err.Error()
		return w
	}
	threads := min(len(h.layout.Client), sc.Connections)
	secs := max(int((sc.Duration.D+time.Second-1)/time.Second), 1)
	cmd := h.procs.command(h.layout.Client, nil, bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(sc.Connections),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s", "-s", script, "http://"+in.addr+spec.Path)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	c, err := h.procs.start("wrk", cmd, "")
	if err != nil {
		w.Error = err.Error()
		return w
	}
	select {
	case <-c.done:
	case <-ctx.Done():
	case <-time.After(time.Duration(secs)*time.Second + 30*time.Second):
	}
	h.procs.stop(c, time.Second)
	if m := wrkRPS.FindStringSubmatch(out.String()); m != nil {
		w.RPS, _ = strconv.ParseFloat(m[1], 64)
	} else {
		w.Error = "no Requests/sec in wrk output: " + clip([]byte(out.String()))
	}
	if m := wrkNon2xx.FindStringSubmatch(out.String()); m != nil {
		w.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSock.FindStringSubmatch(out.String()); m != nil {
		w.SocketErrors = strings.TrimSpace(m[1])
	}
	return w
}

// writeReports writes report.json, report.md and latency.svg.
func (h *harness) writeReports() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return writeReports(h.opts.Out, h.report)
}
