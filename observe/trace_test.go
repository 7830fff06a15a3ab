package observe

import (
	"strings"
	"testing"
)

const validTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestParseTraceparent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		ok       bool
		flags    byte
	}{
		{"the spec's example", validTP, true, 1},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, 0},
		{"unknown flags are dropped in version 00", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", true, 1},
		{"a later version with more fields", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true, 1},
		{"a later version, exact length", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, 1},
		{"empty", "", false, 0},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
		{"version 00 with trailing data", validTP + "-x", false, 0},
		{"a later version with trailing data not after a dash", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false, 0},
		{"upper-case hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, 0},
		{"all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, 0},
		{"all-zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, 0},
		{"short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false, 0},
		{"wrong separator", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
		{"non-hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false, 0},
		{"spaces", " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, ok := ParseTraceparent([]byte(c.in))
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v", ok, c.ok)
			}
			if !ok {
				if tr.Valid() {
					t.Error("a rejected value returned a trace")
				}
				return
			}
			if got := string(tr.AppendTraceID(nil)); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Errorf("trace id %s", got)
			}
			if tr.Flags != c.flags {
				t.Errorf("flags %x, want %x", tr.Flags, c.flags)
			}
		})
	}
}

func TestContinueKeepsTheTraceAndMintsASpan(t *testing.T) {
	t.Parallel()
	tr, _ := ParseTraceparent([]byte(validTP))
	tr.Continue()
	out := string(tr.AppendTraceparent(nil))
	if !strings.HasPrefix(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || !strings.HasSuffix(out, "-01") {
		t.Fatalf("traceparent %s", out)
	}
	if out[36:52] == "00f067aa0ba902b7" || out[36:52] == "0000000000000000" {
		t.Errorf("parent id %s must be the gateway's new span", out[36:52])
	}
	back, ok := ParseTraceparent([]byte(out))
	if !ok || back.TraceID != tr.TraceID || back.ParentID != tr.SpanID || back.Flags != tr.Flags {
		t.Errorf("what the gateway sends does not parse back: %s", out)
	}
}

func TestStartHonoursTheSampleRatio(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ratio float64
		want  byte
	}{{1, FlagSampled}, {0, 0}} {
		var tr Trace
		tr.Start(c.ratio)
		if !tr.Valid() || tr.SpanID == ([16]byte{}) || tr.Flags != c.want {
			t.Errorf("ratio %v: %+v", c.ratio, tr)
		}
		if _, ok := ParseTraceparent(tr.AppendTraceparent(nil)); !ok {
			t.Errorf("started trace does not parse: %s", tr.AppendTraceparent(nil))
		}
	}
	sampled := 0
	for range 10000 {
		var tr Trace
		tr.Start(0.25)
		sampled += int(tr.Flags)
	}
	if sampled < 2000 || sampled > 3000 {
		t.Errorf("ratio 0.25 sampled %d of 10000", sampled)
	}
}

func FuzzParseTraceparent(f *testing.F) {
	for _, s := range []string{validTP, "", "ff-" + validTP[3:], validTP + "-", strings.Repeat("-", 55), "00-" + strings.Repeat("0", 52)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tr, ok := ParseTraceparent([]byte(s))
		if !ok {
			return
		}
		// What parses has the shape the spec requires and round-trips.
		if len(s) < TraceparentLen || !tr.Valid() || tr.ParentID == ([16]byte{}) {
			t.Fatalf("accepted %q", s)
		}
		tr.SpanID = tr.ParentID
		if got := string(tr.AppendTraceparent(nil)); got[3:52] != s[3:52] {
			t.Fatalf("round trip %q → %q", s, got)
		}
	})
}
