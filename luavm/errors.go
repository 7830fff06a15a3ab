package luavm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/keystone-gateway/keystone/config"
)

// Sentinel errors. Compare with errors.Is; they are wrapped with context.
var (
	// ErrBusy reports that a request queued for Config.VMWait without
	// getting a VM and a thread: every VM ran Lua and MaxVMs or MaxMemory
	// forbade another, or MaxMemory held no more request threads.
	ErrBusy = errors.New("luavm: no VM became free before the deadline")

	// ErrClosed reports a VM requested from a closed Script.
	ErrClosed = errors.New("luavm: script is closed")

	// ErrNotInteger is returned by Store.Incr when the stored value is not
	// a base-10 int64.
	ErrNotInteger = errors.New("luavm: store value is not an integer")

	// ErrOverflow is returned by Store.Incr when the sum overflows int64.
	ErrOverflow = errors.New("luavm: store increment overflows int64")
)

// Error is one problem in a script, at a position in one of its files: a
// config.Error without a field path. Its text is "FILE:LINE:COL: message",
// the column omitted when unknown (gopher-lua's parser reports columns, its
// compiler and runtime only lines), so `keystone check` prints script and
// config problems alike.
type Error = config.Error

// ErrorList is every problem found while compiling or loading one script,
// in the order found, one Error per line of its text.
type ErrorList = config.ErrorList

// pos is a position in a script file.
type pos struct {
	file string
	line int
}

func (p pos) errorf(format string, args ...any) *Error {
	return &Error{File: p.file, Line: p.line, Msg: fmt.Sprintf(format, args...)}
}

// splitPos splits gopher-lua's "file:line: message" error text (the prefix
// RaiseError and the VM put on runtime errors) into its parts. ok is false
// when msg carries no position, as for error({...}) with a table value.
func splitPos(msg string) (file string, line int, rest string, ok bool) {
	for i := 0; i < len(msg); i++ {
		if msg[i] != ':' {
			continue
		}
		j := i + 1
		for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
			j++
		}
		if j == i+1 || j >= len(msg) || msg[j] != ':' {
			continue
		}
		n, err := strconv.Atoi(msg[i+1 : j])
		if err != nil || i == 0 {
			continue
		}
		return msg[:i], n, strings.TrimSpace(msg[j+1:]), true
	}
	return "", 0, msg, false
}

// errorAt converts a Lua error text into an *Error, defaulting to where when
// the text carries no position of its own.
func errorAt(where pos, msg string) *Error {
	if file, line, rest, ok := splitPos(msg); ok {
		return &Error{File: file, Line: line, Msg: rest}
	}
	return &Error{File: where.file, Line: where.line, Msg: msg}
}

// Log lines a script controls are bounded: error("x"):rep(16 MiB) would
// otherwise write a 16 MiB log line per request. nginx cuts its error log
// lines at 2 KiB (NGX_MAX_ERROR_STR); each logged string is cut there.
const (
	maxLogField  = 2048
	maxLogFields = 64 // keystone.Log fields per line
)

// clipLog returns s cut to maxLogField bytes on a UTF-8 boundary, with a
// note of the original size.
func clipLog(s string) string {
	if len(s) <= maxLogField {
		return s
	}
	n := maxLogField
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + fmt.Sprintf("... (truncated, %d bytes)", len(s))
}
