package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a config file, positioned where the user can fix
// it. Line and Col are 1-based; both are 0 when the problem has no place in
// the file (a missing required section, an unreadable file).
type Error struct {
	// File is the config file's name as given to Load or Parse.
	File string
	// Line and Col locate the offending key or value, 1-based.
	Line, Col int
	// Path is the field path, such as "tenants[1].upstreams[0].url";
	// empty for problems with the document as a whole.
	Path string
	// Msg says what was expected and what was found, lowercase, without a
	// trailing period.
	Msg string

	// err is the cause, for an error that wraps one (a file that cannot be
	// read), so that errors.Is(err, fs.ErrNotExist) works through an
	// ErrorList.
	err error
}

// Unwrap returns the cause of e, if any.
func (e *Error) Unwrap() error { return e.err }

// Error formats e as "FILE:LINE:COL: PATH: MSG", the shape compilers use so
// that editors can jump to the spot. "PATH: " is left out when Path is empty,
// ":COL" when the column is unknown (Lua runtime errors carry only a line)
// and ":LINE:COL" when the position is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Line > 0 && e.Col > 0 {
		fmt.Fprintf(&b, ":%d", e.Col)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem Load or Parse found, sorted by position. It is
// the error they return for a file that does not load, so a user fixes all
// problems in one pass instead of one per run.
type ErrorList []*Error

// Error formats the list one error per line, in the order of the list
// (Load and Parse sort it by line, then column).
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors of the list, so errors.As finds an *Error in it.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// maxErrors caps how many errors one parse collects. A hostile or mangled
// file can otherwise produce one error per node (millions); nobody reads
// past the first screenful, and the cap keeps memory bounded.
const maxErrors = 200

// errorSet collects positioned errors during one parse, deduplicated: an
// aliased node is decoded once per alias and would repeat its errors.
type errorSet struct {
	file string
	list ErrorList
	seen map[errorKey]bool
	full bool
}

// errorKey identifies an error for deduplication.
type errorKey struct {
	line, col int
	path, msg string
}

func newErrorSet(file string) *errorSet {
	return &errorSet{file: file, seen: make(map[errorKey]bool)}
}

// add records an error at line:col (0:0 when unknown).
func (s *errorSet) add(line, col int, path, format string, args ...any) {
	if s.full {
		return
	}
	e := &Error{File: s.file, Line: line, Col: col, Path: path, Msg: fmt.Sprintf(format, args...)}
	k := errorKey{line, col, path, e.Msg}
	if s.seen[k] {
		return
	}
	s.seen[k] = true
	if len(s.list) == maxErrors {
		s.full = true
		return
	}
	s.list = append(s.list, e)
}

func (s *errorSet) empty() bool { return len(s.list) == 0 }

// sorted returns the errors ordered by line then column; errors at the same
// spot keep the order they were found in. When the cap was hit, a last
// unpositioned error says so.
func (s *errorSet) sorted() ErrorList {
	l := s.list
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Col < l[j].Col
	})
	if s.full {
		l = append(l, &Error{File: s.file,
			Msg: fmt.Sprintf("too many errors (more than %d), stopping", maxErrors)})
	}
	return l
}
