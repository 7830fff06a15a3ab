package server

import (
	"strings"
	"testing"
	"time"
)

func TestParseKeepAliveTimeout(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, value string
		want        time.Duration
	}{
		{"a timeout alone", "timeout=5", 5 * time.Second},
		{"a timeout and a max", "timeout=5, max=100", 5 * time.Second},
		{"a max first", "max=100, timeout=15", 15 * time.Second},
		{"any case, spaces around", "  Timeout=2 ,max=3", 2 * time.Second},
		{"no timeout", "max=100", 0},
		{"an empty value", "", 0},
		{"a zero timeout", "timeout=0", 0},
		{"a negative timeout", "timeout=-5", 0},
		{"a fractional timeout", "timeout=1.5", 0},
		{"a timeout with no value", "timeout=", 0},
		{"an absurd timeout", "timeout=99999999999999999999", 0},
		{"a quoted timeout", `timeout="5"`, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := time.Duration(parseKeepAliveTimeout([]byte(tt.value))); got != tt.want {
				t.Errorf("parseKeepAliveTimeout(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

// FuzzParseKeepAliveTimeout: an upstream's Keep-Alive header is untrusted;
// parsing it never panics and gives 0 or a bounded whole number of seconds
// from a timeout= parameter.
func FuzzParseKeepAliveTimeout(f *testing.F) {
	for _, s := range []string{"timeout=5, max=100", "timeout=", ",,,", "timeout=18446744073709551616", "TIMEOUT=1", "timeout=5\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := parseKeepAliveTimeout([]byte(v))
		if d < 0 || d%int64(time.Second) != 0 {
			t.Fatalf("parseKeepAliveTimeout(%q) = %d", v, d)
		}
		if d > 0 && (!strings.Contains(strings.ToLower(v), "timeout=") || d > (1<<20+10)*int64(time.Second)) {
			t.Fatalf("parseKeepAliveTimeout(%q) = %v", v, time.Duration(d))
		}
	})
}
