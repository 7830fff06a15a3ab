package config_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want config.Size
		err  string
	}{
		{"a byte count", "1048576", 1 << 20, ""},
		{"bytes with a unit", "100B", 100, ""},
		{"kibibytes", "512KiB", 512 << 10, ""},
		{"mebibytes", "10MiB", 10 << 20, ""},
		{"gibibytes", "1GiB", 1 << 30, ""},
		{"tebibytes", "2TiB", 2 << 40, ""},
		{"kilobytes", "64KB", 64000, ""},
		{"megabytes", "10MB", 10_000_000, ""},
		{"gigabytes", "1GB", 1_000_000_000, ""},
		{"units ignore case", "10mib", 10 << 20, ""},
		{"a space before the unit", "10 MiB", 10 << 20, ""},
		{"zero", "0", 0, ""},
		{"a negative size", "-1", 0, `expected a size of at least 0, got "-1"`},
		{"a fraction", "1.5GiB", 0, `expected a size such as "10MiB" or a byte count, got "1.5GiB"`},
		{"an unknown unit", "10XB", 0, `expected a size such as "10MiB" or a byte count, got "10XB"`},
		{"a unit alone", "MiB", 0, `expected a size such as "10MiB" or a byte count, got "MiB"`},
		{"an empty string", "", 0, `expected a size such as "10MiB" or a byte count, got ""`},
		{"a product that overflows", "9000000TiB", 0, `size "9000000TiB" is too large`},
		{"a number that overflows", "99999999999999999999", 0, `size "99999999999999999999" is too large`},
	}
	for _, tt := range tests {
		got, err := config.ParseSize(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("%s: ParseSize(%q) error: got %v, want %q", tt.name, tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%s: ParseSize(%q): got %d, %v; want %d", tt.name, tt.in, got, err, tt.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   config.Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1024, "1KiB"},
		{10 << 20, "10MiB"},
		{64000, "64KB"},
		{1000001, "1000001B"},
		{3 << 40, "3TiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String(): got %q, want %q", int64(tt.in), got, tt.want)
		}
		if back, err := config.ParseSize(tt.want); err != nil || back != tt.in {
			t.Errorf("ParseSize(%q) does not round-trip: got %d, %v", tt.want, back, err)
		}
	}
}

func TestParseStatusRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want config.StatusRange
		err  string
	}{
		{"a code", "200", config.StatusRange{Min: 200, Max: 200}, ""},
		{"a range", "200-399", config.StatusRange{Min: 200, Max: 399}, ""},
		{"a range with spaces", "200 - 299", config.StatusRange{Min: 200, Max: 299}, ""},
		{"a class", "2xx", config.StatusRange{Min: 200, Max: 299}, ""},
		{"a class in capitals", "5XX", config.StatusRange{Min: 500, Max: 599}, ""},
		{"the lowest code", "100", config.StatusRange{Min: 100, Max: 100}, ""},
		{"the highest code", "599", config.StatusRange{Min: 599, Max: 599}, ""},
		{"a code too low", "99", config.StatusRange{}, `expected status codes within 100..599, got "99"`},
		{"a code too high", "600", config.StatusRange{}, `expected status codes within 100..599, got "600"`},
		{"a range past 599", "500-600", config.StatusRange{}, `expected status codes within 100..599, got "500-600"`},
		{"a range upside down", "399-200", config.StatusRange{}, `expected a range with its lower bound first, got "399-200"`},
		{"a class of 6xx", "6xx", config.StatusRange{}, `expected a status class from "1xx" to "5xx", got "6xx"`},
		{"a signed code", "+200", config.StatusRange{}, `expected a status code such as 200, a range such as "200-399" or a class such as "2xx", got "+200"`},
		{"a word", "ok", config.StatusRange{}, `expected a status code such as 200, a range such as "200-399" or a class such as "2xx", got "ok"`},
		{"a half range", "200-", config.StatusRange{}, `expected a status code such as 200, a range such as "200-399" or a class such as "2xx", got "200-"`},
	}
	for _, tt := range tests {
		got, err := config.ParseStatusRange(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("%s: ParseStatusRange(%q) error: got %v, want %q", tt.name, tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%s: ParseStatusRange(%q): got %+v, %v; want %+v", tt.name, tt.in, got, err, tt.want)
		}
	}
}

func TestStatusRangeContainsAndString(t *testing.T) {
	t.Parallel()
	r := config.StatusRange{Min: 200, Max: 399}
	if !r.Contains(200) || !r.Contains(399) || r.Contains(199) || r.Contains(400) {
		t.Error("Contains must include both bounds and nothing outside them")
	}
	for in, want := range map[config.StatusRange]string{
		{Min: 200, Max: 200}: "200",
		{Min: 200, Max: 299}: "2xx",
		{Min: 200, Max: 399}: "200-399",
	} {
		if got := in.String(); got != want {
			t.Errorf("%+v.String(): got %q, want %q", in, got, want)
		}
	}
}

func TestDurationText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want time.Duration
		err  string
	}{
		{"milliseconds", "250ms", 250 * time.Millisecond, ""},
		{"mixed units", "1m30s", 90 * time.Second, ""},
		{"a unit-less zero", "0", 0, ""},
		{"a negative duration", "-1s", -time.Second, ""},
		{"a bare number", "15", 0, `expected a duration such as "15s", got "15"`},
		{"a word", "soon", 0, `expected a duration such as "15s", got "soon"`},
	}
	for _, tt := range tests {
		var d config.Duration
		err := d.UnmarshalText([]byte(tt.in))
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("%s: UnmarshalText(%q) error: got %v, want %q", tt.name, tt.in, err, tt.err)
		case tt.err == "" && (err != nil || d.D() != tt.want):
			t.Errorf("%s: UnmarshalText(%q): got %v, %v; want %v", tt.name, tt.in, d, err, tt.want)
		}
	}
}

func TestUnitsMarshalAsText(t *testing.T) {
	t.Parallel()
	v := struct {
		D config.Duration
		S config.Size
		R config.StatusRange
	}{config.Duration(1500 * time.Millisecond), 10 * config.MiB, config.StatusRange{Min: 200, Max: 299}}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"D":"1.5s","S":"10MiB","R":"2xx"}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	var back struct {
		D config.Duration
		S config.Size
		R config.StatusRange
	}
	if err := json.Unmarshal(b, &back); err != nil || back != v {
		t.Errorf("round trip: got %+v, %v; want %+v", back, err, v)
	}
}
