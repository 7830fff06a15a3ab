package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// logWriter sends the harness's progress lines to t.Log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildTestKeystone builds ./cmd/keystone into a temp dir, with -race when
// this test binary has it, so the smoke load also hunts data races in the
// gateway. A keystone that does not build fails the test: the bench suite
// exists to measure it.
func buildTestKeystone(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "keystone")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/keystone")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keystone does not build: %v\n%s", err, out)
	}
	return bin
}

// TestSmoke runs the smoke suite end to end with tiny durations: every
// route and mode against Keystone, and against nginx and HAProxy when they
// are installed ("not installed" otherwise). It checks correctness, not
// performance: every target must start and answer each scenario's request
// exactly as expected (the readiness probe sends it), no response under load
// may be wrong, and the three report files must be complete. Timing is not
// asserted: a shared VM can stall a process for hundreds of milliseconds,
// longer than a smoke window, so latency SLOs are off, the request timeout
// is long, and an empty window is not an error.
func TestSmoke(t *testing.T) {
	bin := buildTestKeystone(t)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Scenarios: "scenarios/smoke.yaml", Out: out, KeystoneBin: bin,
		Duration: 250 * time.Millisecond, Warmup: 50 * time.Millisecond, Hold: 300 * time.Millisecond,
		Timeout: 20 * time.Second, Reps: 1, MaxConnections: 100, NoSLO: true, Log: logWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) > 0 {
		t.Errorf("failures:\n%s", strings.Join(rep.Failures, "\n"))
	}
	suite, err := LoadSuite("scenarios/smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	installed := map[string]bool{"keystone": true}
	for _, ti := range rep.Targets {
		installed[ti.Name] = ti.Status == "ok"
		if ti.Status != "ok" && !strings.HasPrefix(ti.Status, "not installed") {
			t.Errorf("%s: status %q", ti.Name, ti.Status)
		}
	}

	// report.json parses and has every scenario, Keystone correct in each.
	data, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	if len(got.Scenarios) != len(suite.Scenarios) {
		t.Fatalf("report.json has %d scenarios, want %d", len(got.Scenarios), len(suite.Scenarios))
	}
	ran := map[string][]string{} // scenario → targets with latency lines
	requests := map[string]int64{}
	for i, sr := range got.Scenarios {
		sc := suite.Scenarios[i]
		if sc.Skip != "" {
			if sr.Skipped == "" || len(sr.Runs) > 0 {
				t.Errorf("%s: want reported as skipped, got %+v", sc.Name, sr)
			}
			continue
		}
		for _, target := range sc.Targets {
			s := sr.summaryOf(target)
			switch {
			case !installed[target]:
				if !slices.ContainsFunc(sr.NotRun, func(n TargetInfo) bool { return n.Name == target }) {
					t.Errorf("%s: %s is not installed but not reported so", sc.Name, target)
				}
			case s == nil:
				t.Errorf("%s: no results for %s", sc.Name, target)
			default:
				requests[target] += s.Requests
				// A wrong answer is a bug whatever the timing; a request
				// the generator could not send in time (dropped) is not.
				if s.Errors != 0 {
					t.Errorf("%s: %s: %d of %d requests failed: %v", sc.Name, target, s.Errors, s.Requests, s.ErrorKinds)
				}
				if len(s.Curve) > 0 {
					ran[sc.Name] = append(ran[sc.Name], target)
				}
			}
		}
	}
	for target, ok := range installed {
		if ok && requests[target] == 0 {
			t.Errorf("%s answered no request under load in any scenario", target)
		}
	}

	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| Scenario | Figure | Keystone | nginx | HAProxy | Keystone vs nginx |") {
		t.Errorf("report.md has no comparison table:\n%s", md)
	}

	svg, err := os.ReadFile(filepath.Join(out, "latency.svg"))
	if err != nil {
		t.Fatal(err)
	}
	paths := svgPaths(t, svg)
	for sc, targets := range ran {
		if !slices.Equal(paths[sc], targets) {
			t.Errorf("latency.svg %s: paths for %v, want one per target %v", sc, paths[sc], targets)
		}
	}
}
