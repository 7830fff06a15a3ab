package main

import (
	"strings"
	"testing"
	"time"
)

func TestSuiteFilesAreValid(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"scenarios/smoke.yaml", "scenarios/full.yaml"} {
		s, err := LoadSuite(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		skipped := 0
		for _, sc := range s.Scenarios {
			if sc.Skip != "" {
				skipped++
			}
		}
		if skipped != 1 {
			t.Errorf("%s: %d skipped scenarios, want exactly the http2 placeholder", f, skipped)
		}
	}
}

func TestSuiteDefaults(t *testing.T) {
	t.Parallel()
	s, err := ParseSuite("x.yaml", []byte(`
defaults: {duration: 3s}
scenarios:
  - {name: a, mode: closed}
  - {name: b, mode: open, rate: 100, route: lua_hello, warmup: 0s}
  - {name: c, mode: closed, request_body: 64KiB, route: tenants}
  - {name: d, mode: open, rate_from: {scenario: a}}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c, d := s.Scenarios[0], s.Scenarios[1], s.Scenarios[2], s.Scenarios[3]
	if a.Duration.D != 3*time.Second || a.Warmup.D != 2*time.Second || a.Reps != 3 || a.Connections != 64 {
		t.Errorf("a: defaults not applied: %+v", a)
	}
	if a.Method != "GET" || a.Route != "proxy" || a.ResponseSize.N != 100 || a.Compare != "throughput" || len(a.Targets) != 3 {
		t.Errorf("a: built-in defaults not applied: %+v", a)
	}
	if b.ResponseSize.N != 0 || b.Compare != "p99" {
		t.Errorf("b: lua_hello got response_size %d compare %q", b.ResponseSize.N, b.Compare)
	}
	// An explicit zero warmup is inherited as the default, since zero
	// means unset; a scenario wanting none writes 1ms.
	if c.Method != "POST" || c.RequestBody.N != 64<<10 || c.Tenants != 1000 {
		t.Errorf("c: got method %q body %d tenants %d", c.Method, c.RequestBody.N, c.Tenants)
	}
	if d.RateFrom.Target != "nginx" || d.RateFrom.Factor != 0.5 {
		t.Errorf("d: rate_from defaults: %+v", d.RateFrom)
	}
}

func TestSuiteErrorsArePositioned(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "an unknown field names its line and column",
			yaml: "scenarios:\n  - name: a\n    mode: closed\n    durration: 1s\n",
			want: []string{`x.yaml:4:5: unknown field "durration"`},
		},
		{
			name: "a bad mode says what was expected and what was found",
			yaml: "scenarios:\n  - name: a\n    mode: opn\n",
			want: []string{`x.yaml:3:11: scenarios[0].mode: expected one of open, closed, idle, got "opn"`},
		},
		{
			name: "a bad duration is reported at its value",
			yaml: "scenarios:\n  - name: a\n    mode: closed\n    duration: 10x\n",
			want: []string{`x.yaml:4:15: scenarios[0].duration: expected a duration like "10s", got "10x"`},
		},
		{
			name: "every problem is reported, not just the first",
			yaml: "scenarios:\n  - name: A\n    mode: open\n  - name: b\n    mode: closed\n    rate: 5\n    reps: 1\n",
			want: []string{
				`scenarios[0].name: expected lowercase letters, digits and dashes, got "A"`,
				`scenarios[0].rate: an open-loop scenario needs rate:`,
				`scenarios[1].rate: applies to open-loop scenarios only`,
				`x.yaml:7:11: scenarios[1].reps: expected at least 3`,
			},
		},
		{
			name: "rate_from must name an earlier closed-loop scenario",
			yaml: "scenarios:\n  - name: o\n    mode: open\n    rate_from: {scenario: later}\n  - name: later\n    mode: closed\n",
			want: []string{`scenarios[0].rate_from.scenario: expected the name of an earlier scenario, got "later"`},
		},
		{
			name: "h2 must be skipped until the harness drives it",
			yaml: "scenarios:\n  - name: h\n    mode: closed\n    protocol: h2\n",
			want: []string{`scenarios[0].protocol: h2 is not driven by the harness yet`},
		},
		{
			name: "an unknown target is named",
			yaml: "scenarios:\n  - name: a\n    mode: closed\n    targets: [keystone, envoy]\n",
			want: []string{`x.yaml:4:25: scenarios[0].targets[1]: expected one of keystone, nginx, haproxy, got "envoy"`},
		},
		{
			name: "a deadline shorter than the scenarios is caught before running",
			yaml: "deadline: 10s\nscenarios:\n  - name: a\n    mode: closed\n",
			want: []string{`x.yaml:1:11: deadline: 10s is shorter than the scenarios' estimated`},
		},
		{
			name: "idle scenarios measure memory only",
			yaml: "scenarios:\n  - name: i\n    mode: idle\n    slo: {p99: 1ms}\n",
			want: []string{`scenarios[0].slo: an idle scenario measures memory, not latency or throughput`},
		},
		{
			name: "a bad size is reported with the expected form",
			yaml: "scenarios:\n  - name: a\n    mode: closed\n    response_size: 16 kilobytes\n",
			want: []string{`scenarios[0].response_size: expected a size like "100" or "64KiB", got "16 kilobytes"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseSuite("x.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"100": 100, "16KiB": 16384, "64 KiB": 65536, "1MiB": 1 << 20, "2KB": 2000, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5KiB", "KiB", "99999999999999999GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
