package config

import "testing"

func TestExpandEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{"A": "alpha", "EMPTY": "", "DOLLAR": "$B ${A}"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name string
		in   string
		want string
		err  string
	}{
		{"no reference", "plain text", "plain text", ""},
		{"a reference", "${A}", "alpha", ""},
		{"a reference in text", "x-${A}-y", "x-alpha-y", ""},
		{"an unset reference", "[${UNSET}]", "[]", ""},
		{"a default for an unset variable", "${UNSET:-dflt}", "dflt", ""},
		{"a default for an empty variable", "${EMPTY:-dflt}", "dflt", ""},
		{"a set variable ignores its default", "${A:-dflt}", "alpha", ""},
		{"an empty default", "${UNSET:-}", "", ""},
		{"a default with a colon", "${UNSET:-127.0.0.1:9001}", "127.0.0.1:9001", ""},
		{"nested defaults", "${UNSET:-${ALSO:-${A}}}", "alpha", ""},
		{"a $$ escape", "$${A}", "${A}", ""},
		{"a $$ escape in a default", "${UNSET:-$$x}", "$x", ""},
		{"a lone $", "pa$word", "pa$word", ""},
		{"a trailing $", "cost$", "cost$", ""},
		{"values are not expanded again", "${DOLLAR}", "$B ${A}", ""},
		{"an unterminated reference", "${A", "", `expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${A"`},
		{"an empty name", "${}", "", `expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${}"`},
		{"a name starting with a digit", "${1X}", "", `expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${1X}"`},
		{"a shell operator we do not support", "${A:?missing}", "", `expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${A:?missing}"`},
		{"an unterminated default", "${UNSET:-x", "", `expected a variable reference such as "${NAME}" or "${NAME:-default}", got "${UNSET:-x"`},
		{"defaults nested too deep", "${U:-${U:-${U:-${U:-${U:-${U:-x}}}}}}", "", `variable defaults nested more than 4 deep in "${U:-${U:-x}}"`},
	}
	for _, tt := range tests {
		got, err := expandEnv(tt.in, lookup)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("%s: expandEnv(%q) error: got %v, want %q", tt.name, tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%s: expandEnv(%q): got %q, %v; want %q", tt.name, tt.in, got, err, tt.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	keys := []string{"listen", "read_timeout", "write_timeout", "max_conns", "max_conns_per_ip"}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"a dropped letter", "listn", "listen"},
		{"a wrong case", "Listen", "listen"},
		{"two edits", "red_timout", "read_timeout"},
		{"three edits are too far", "rd_tmeot", ""},
		{"the closest wins", "max_con", "max_conns"},
		{"nothing close", "colour", ""},
		{"a very long key", string(make([]byte, 1000)), ""},
	}
	for _, tt := range tests {
		if got := Suggest(tt.in, keys); got != tt.want {
			t.Errorf("%s: Suggest(%q): got %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}
