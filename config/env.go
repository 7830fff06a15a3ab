package config

import (
	"fmt"
	"strings"
)

// maxEnvNesting caps ${A:-${B:-...}} nesting. Two levels cover every real use
// ("prefer A, then B, then a literal"); the cap keeps recursion bounded on
// hostile input.
const maxEnvNesting = 4

// expandEnv replaces ${NAME} and ${NAME:-default} in s with values from
// lookup, and $$ with a literal $. Like the shell, ":-" uses the default
// when NAME is unset or empty; an unset NAME without a default expands to
// "". Values from the environment are inserted as they are, never expanded
// again. A "$" followed by anything else is kept, so a password such as
// "pa$word" needs no escaping.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	return expandEnvDepth(s, lookup, 0)
}

func expandEnvDepth(s string, lookup func(string) (string, bool), depth int) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
			continue
		case '{':
		default:
			b.WriteByte('$')
			i++
			continue
		}
		ref, val, err := expandRef(s[i:], lookup, depth)
		if err != nil {
			return "", err
		}
		b.WriteString(val)
		i += len(ref)
	}
	return b.String(), nil
}

// expandRef expands the reference at the start of s, which begins with
// "${". It returns the reference's text and its value.
func expandRef(s string, lookup func(string) (string, bool), depth int) (ref, val string, err error) {
	j := 2
	for j < len(s) && isEnvNameByte(s[j], j == 2) {
		j++
	}
	name := s[2:j]
	if name == "" {
		return "", "", malformedRef(s)
	}
	if j < len(s) && s[j] == '}' {
		v, _ := lookup(name)
		return s[:j+1], v, nil
	}
	if !strings.HasPrefix(s[j:], ":-") {
		return "", "", malformedRef(s)
	}
	// The default runs to the matching "}", so it may itself hold a
	// reference: ${PRIMARY:-${FALLBACK:-127.0.0.1:9001}}.
	start := j + 2
	open := 1
	k := start
	for ; k < len(s) && open > 0; k++ {
		switch {
		case s[k] == '$' && k+1 < len(s) && s[k+1] == '$':
			k++
		case s[k] == '$' && k+1 < len(s) && s[k+1] == '{':
			open++
			k++
		case s[k] == '}':
			open--
		}
	}
	if open > 0 {
		return "", "", malformedRef(s)
	}
	ref = s[:k]
	if v, ok := lookup(name); ok && v != "" {
		return ref, v, nil
	}
	if depth >= maxEnvNesting {
		return "", "", fmt.Errorf("variable defaults nested more than %d deep in %q", maxEnvNesting, clip(ref))
	}
	def, err := expandEnvDepth(s[start:k-1], lookup, depth+1)
	if err != nil {
		return "", "", err
	}
	return ref, def, nil
}

// isEnvNameByte reports whether c may appear in a variable name: letters,
// digits and "_", not starting with a digit (as POSIX shells require).
func isEnvNameByte(c byte, first bool) bool {
	switch {
	case c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
		return true
	case c >= '0' && c <= '9':
		return !first
	}
	return false
}

// malformedRef describes a bad reference at the start of s: up to its
// closing brace, or the rest of s.
func malformedRef(s string) error {
	if k := strings.IndexByte(s, '}'); k >= 0 {
		s = s[:k+1]
	}
	return fmt.Errorf(`expected a variable reference such as "${NAME}" or "${NAME:-default}", got %q`, clip(s))
}

// clip shortens s for a message; a value can be a whole file in a hostile
// input.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
