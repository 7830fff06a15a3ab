// Command bench is Keystone's load harness: it runs the scenarios of a
// YAML file against Keystone, nginx and HAProxy side by side and writes
// report.json, report.md and latency.svg.
//
//	go run ./bench -scenarios bench/scenarios/smoke.yaml -out /tmp/bench-smoke
//	go run ./bench -scenarios bench/scenarios/full.yaml -out bench/out/full -pprof bench/out/full/pprof
//
// It starts everything itself, on loopback, as separate processes: an
// upstream (this binary re-executed with KEYSTONE_BENCH_ROLE=upstream),
// each target with a generated configuration (Keystone built from
// ./cmd/keystone; nginx with its Lua module and HAProxy when they are on
// PATH), and a load generator per run (KEYSTONE_BENCH_ROLE=loadgen). On a
// machine with two or more CPUs the target under test gets the first half
// of them and the load generator and upstream the rest, via taskset.
//
// Every figure is a median over interleaved repetitions (keystone, nginx,
// haproxy, keystone, ...), and Keystone is compared with the others by
// ratios measured in the same run. The exit status is 1 when a target
// failed or a Keystone SLO was missed, 2 on a usage or setup error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	// The re-executed children: no flags, their input comes on stdin.
	switch os.Getenv(roleEnv) {
	case "upstream":
		if err := runUpstream(envOr("KEYSTONE_BENCH_LISTEN", "127.0.0.1:0")); err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
			os.Exit(1)
		}
		return
	case "loadgen":
		// KEYSTONE_BENCH_LOADGEN_PROFILE=FILE profiles the load generator
		// itself: for making it cheaper, since it shares CPUs with the
		// upstream.
		if f := os.Getenv("KEYSTONE_BENCH_LOADGEN_PROFILE"); f != "" {
			if stop, err := startCPUProfile(f); err == nil {
				defer stop()
			}
		}
		if err := runLoadgen(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(cli(os.Args[1:]))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// cli is main for the harness itself; it returns the exit status.
func cli(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o Options
	var targets, run string
	fs.StringVar(&o.Scenarios, "scenarios", "", "scenarios YAML `file` (bench/scenarios/smoke.yaml, full.yaml)")
	fs.StringVar(&o.Out, "out", "", "output `dir` for report.json, report.md, latency.svg (default bench/out/<suite name>)")
	fs.StringVar(&o.PprofDir, "pprof", "", "fetch Keystone CPU and alloc profiles (KEYSTONE_PPROF) into `dir` during one extra repetition per scenario")
	fs.StringVar(&o.KeystoneBin, "keystone", "", "use this prebuilt keystone `binary` instead of building ./cmd/keystone")
	fs.StringVar(&targets, "targets", "", "comma-separated `targets` to run (default: every target a scenario names)")
	fs.StringVar(&run, "run", "", "run only scenarios whose name matches this `regexp`")
	fs.DurationVar(&o.Duration, "duration", 0, "override every scenario's measured duration")
	fs.DurationVar(&o.Warmup, "warmup", 0, "override every scenario's warmup")
	fs.DurationVar(&o.Hold, "hold", 0, "override every idle scenario's hold")
	fs.DurationVar(&o.Timeout, "timeout", 0, "override every scenario's request timeout")
	fs.IntVar(&o.Reps, "reps", 0, "override every scenario's repetitions")
	fs.IntVar(&o.MaxConnections, "max-conns", 0, "cap every scenario's connections")
	fs.DurationVar(&o.Deadline, "deadline", 0, "override the suite's overall deadline")
	fs.BoolVar(&o.NoSLO, "no-slo", false, "report SLOs but do not fail the run on a miss")
	fs.Float64Var(&o.MaxOtherLoad, "max-other-load", 0.3, "discard and repeat a repetition during which other processes used more than this many `cores` (0: never)")
	fs.IntVar(&o.MaxRetries, "retries", 2, "repeat a disturbed repetition at most this many `times`")
	fs.StringVar(&o.ServerCPUs, "server-cpus", "", "CPUs for the target under test, like \"0\" or \"0-1\" (default: first half)")
	fs.StringVar(&o.ClientCPUs, "client-cpus", "", "CPUs for the load generator and upstream (default: second half)")
	fs.BoolVar(&o.KeepWork, "keep", false, "keep the temp directory with generated configs and logs")
	render := fs.String("render", "", "re-render report.md and latency.svg from this report.json `file` (into -out, default its directory) and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *render != "" {
		out := o.Out
		if out == "" {
			out = filepath.Dir(*render)
		}
		if err := rerender(*render, out); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		return 0
	}
	if o.Scenarios == "" {
		fmt.Fprintln(os.Stderr, "bench: -scenarios is required")
		fs.Usage()
		return 2
	}
	if o.Out == "" {
		o.Out = filepath.Join("bench", "out", strings.TrimSuffix(filepath.Base(o.Scenarios), filepath.Ext(o.Scenarios)))
	}
	if targets != "" {
		o.Targets = strings.Split(targets, ",")
	}
	if run != "" {
		re, err := regexp.Compile(run)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -run:", err)
			return 2
		}
		o.Run = re
	}
	o.Log = os.Stderr

	// SIGINT and SIGTERM cancel the run: the current load generator is
	// stopped, every child is killed, and the partial report is written.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := Run(ctx, o)
	if rep == nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	md := renderMarkdown(rep)
	if i := strings.Index(md, "\n## Scenarios"); i > 0 {
		md = md[:i]
	}
	fmt.Println(md)
	fmt.Printf("\nReports in %s (report.json, report.md, latency.svg); took %v.\n", o.Out, time.Since(start).Round(time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 1
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// startCPUProfile writes a CPU profile of this process to file until stop.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// rerender rewrites the reports of a past run from its report.json.
func rerender(file, out string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return writeReports(out, &r)
}
