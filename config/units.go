package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// String formats d the way time.Duration does ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as a Go duration string, so a Config encoded to JSON
// or YAML (the admin config endpoint) reads "15s", not 15000000000.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string ("250ms", "1m30s"). A bare
// number other than 0 is rejected: "15" could mean seconds or nanoseconds.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := parseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// parseDuration is time.ParseDuration with a message written for config
// users. Go accepts a unit-less "0", and so do we: zero is zero in any unit.
func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("expected a duration such as \"15s\", got %q", s)
	}
	return Duration(v), nil
}

// Byte multiples accepted in sizes.
const (
	KiB Size = 1 << 10 // 1024 bytes
	MiB Size = 1 << 20 // 1024 KiB
	GiB Size = 1 << 30 // 1024 MiB
)

// sizeUnits maps a lowercased unit to its multiplier. Binary and decimal
// units both appear in the wild ("10MB" in nginx docs, "10MiB" in ours);
// taking both, exactly, beats guessing which one a user meant.
var sizeUnits = map[string]int64{
	"b":   1,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"tb":  1000 * 1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// errSyntax is returned by small parsers whose caller writes the message.
var errSyntax = errors.New("config: syntax error")

// ParseSize parses a byte count with an optional unit: "1048576", "512KiB",
// "10MiB", "1GiB", "64KB", "10MB", "1GB", "100B". Units are
// case-insensitive; the number is a non-negative integer.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		if strings.HasPrefix(t, "-") {
			return 0, fmt.Errorf("expected a size of at least 0, got %q", s)
		}
		return 0, fmt.Errorf("expected a size such as \"10MiB\" or a byte count, got %q", s)
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	mult := int64(1)
	if unit != "" {
		m, ok := sizeUnits[unit]
		if !ok {
			return 0, fmt.Errorf("expected a size such as \"10MiB\" or a byte count, got %q", s)
		}
		mult = m
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

// String formats s with the largest unit that divides it exactly, binary
// units first: 10485760 is "10MiB", 64000 is "64KB", 1000001 is "1000001B".
func (s Size) String() string {
	if s == 0 {
		return "0B"
	}
	if s < 0 {
		return strconv.FormatInt(int64(s), 10) + "B"
	}
	for _, u := range [...]struct {
		name string
		n    int64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	} {
		if int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText writes s with its unit ("10MiB").
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size as ParseSize does.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseStatusRange parses a status code ("200"), an inclusive range
// ("200-399") or a class ("2xx"), each within 100..599.
func ParseStatusRange(s string) (StatusRange, error) {
	bad := fmt.Errorf("expected a status code such as 200, a range such as \"200-399\" or a class such as \"2xx\", got %q", s)
	t := strings.TrimSpace(s)
	var r StatusRange
	switch {
	case len(t) == 3 && (t[1] == 'x' || t[1] == 'X') && (t[2] == 'x' || t[2] == 'X'):
		if t[0] < '1' || t[0] > '5' {
			return StatusRange{}, fmt.Errorf("expected a status class from \"1xx\" to \"5xx\", got %q", s)
		}
		c := int(t[0]-'0') * 100
		return StatusRange{Min: c, Max: c + 99}, nil
	case strings.Contains(t, "-"):
		lo, hi, _ := strings.Cut(t, "-")
		var err1, err2 error
		r.Min, err1 = atoiStatus(strings.TrimSpace(lo))
		r.Max, err2 = atoiStatus(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil {
			return StatusRange{}, bad
		}
	default:
		n, err := atoiStatus(t)
		if err != nil {
			return StatusRange{}, bad
		}
		r = StatusRange{Min: n, Max: n}
	}
	if r.Min < 100 || r.Max > 599 {
		return StatusRange{}, fmt.Errorf("expected status codes within 100..599, got %q", s)
	}
	if r.Min > r.Max {
		return StatusRange{}, fmt.Errorf("expected a range with its lower bound first, got %q", s)
	}
	return r, nil
}

// atoiStatus parses up to three decimal digits: strconv.Atoi would accept
// "+200" and "0200".
func atoiStatus(s string) (int, error) {
	if len(s) == 0 || len(s) > 3 {
		return 0, errSyntax
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errSyntax
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, nil
}

// String formats r as "200", "2xx" or "200-399", the forms ParseStatusRange
// reads.
func (r StatusRange) String() string {
	switch {
	case r.Min == r.Max:
		return strconv.Itoa(r.Min)
	case r.Min%100 == 0 && r.Max == r.Min+99:
		return strconv.Itoa(r.Min/100) + "xx"
	default:
		return strconv.Itoa(r.Min) + "-" + strconv.Itoa(r.Max)
	}
}

// MarshalText writes r as String does.
func (r StatusRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses r as ParseStatusRange does.
func (r *StatusRange) UnmarshalText(text []byte) error {
	v, err := ParseStatusRange(string(text))
	if err != nil {
		return err
	}
	*r = v
	return nil
}
