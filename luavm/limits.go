package luavm

import (
	"strconv"
	"strings"
	"unsafe"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/pm"
)

// The deadline stops Lua between instructions, but a single Go builtin runs
// to completion: string.rep("x", 1e10) would allocate 10 GB before the VM
// looked at its context again. So every builtin whose output can grow
// beyond its inputs is replaced by one that checks MaxStringSize before it
// allocates. gsub and gmatch are also rewritten because gopher-lua's
// versions collect every match up front (tens of bytes per match of a
// 16 MiB subject) and gsub splices the result in quadratic time; these
// versions match in batches, in linear time, polling the deadline between
// batches.
//
// Not covered: the `..` operator (bounded by the deadline: each doubling
// is one instruction), and backtracking Lua patterns that are pathological
// on a large subject, which run inside one pm.Find call.

// matchBatch is how many matches gsub and gmatch ask pm.Find for at a time.
const matchBatch = 256

func (v *vm) openLimits(str, tbl *lua.LTable) {
	L := v.L
	format := str.RawGetString("format").(*lua.LFunction).GFunction
	str.RawSetString("rep", L.NewFunction(v.strRep))
	str.RawSetString("format", L.NewFunction(func(L *lua.LState) int { return v.strFormat(L, format) }))
	str.RawSetString("gsub", L.NewFunction(v.strGsub))
	gmatch := L.NewFunction(v.strGmatch)
	str.RawSetString("gmatch", gmatch)
	str.RawSetString("gfind", gmatch)
	tbl.RawSetString("concat", L.NewFunction(v.tableConcat))
}

// tooLarge raises the error every capped builtin reports.
func (v *vm) tooLarge(L *lua.LState, fn string, n int) {
	L.RaiseError("%s: result of %d bytes exceeds the %d-byte string limit", fn, n, v.s.cfg.MaxStringSize)
}

func (v *vm) strRep(L *lua.LState) int {
	s := L.CheckString(1)
	n := L.CheckInt(2)
	if n <= 0 || s == "" {
		L.Push(lua.LString(""))
		return 1
	}
	if n > v.s.cfg.MaxStringSize/len(s) {
		v.tooLarge(L, "string.rep", len(s)*min(n, v.s.cfg.MaxStringSize+1))
	}
	// strings.Repeat copies in doubling chunks: an append per repetition
	// spent ~30ms of the 50ms default budget on string.rep("x", 16MiB).
	L.Push(lua.LString(strings.Repeat(s, n)))
	return 1
}

// strFormat bounds the output of string.format before running gopher-lua's
// own: the format's literal text, plus per directive its width and
// precision and a generous multiple of the argument's length.
func (v *vm) strFormat(L *lua.LState, format lua.LGFunction) int {
	f := L.CheckString(1)
	bound, arg := len(f), 2
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		if i++; i < len(f) && f[i] == '%' {
			continue
		}
		for i < len(f) && (f[i] == '-' || f[i] == '+' || f[i] == ' ' || f[i] == '#' || f[i] == '0') {
			i++
		}
		width, prec := 0, 0
		for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
			width = min(width*10+int(f[i]-'0'), 1<<30)
		}
		if i < len(f) && f[i] == '.' {
			for i++; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
				prec = min(prec*10+int(f[i]-'0'), 1<<30)
			}
		}
		n := 64
		if s, ok := L.Get(arg).(lua.LString); ok {
			// %q may escape every byte as \xNN, or a rune as \U0010FFFF.
			n += 10 * len(s)
		}
		bound += width + prec + n
		arg++
		if bound > v.s.cfg.MaxStringSize {
			v.tooLarge(L, "string.format", bound)
		}
	}
	return format(L)
}

func (v *vm) tableConcat(L *lua.LState) int {
	t := L.CheckTable(1)
	sep := L.OptString(2, "")
	i := L.OptInt(3, 1)
	j := L.OptInt(4, t.Len())
	if i > j {
		L.Push(lua.LString(""))
		return 1
	}
	size := 0
	for k := i; k <= j; k++ {
		switch e := t.RawGetInt(k).(type) {
		case lua.LString:
			size += len(e)
		case lua.LNumber:
			size += len(e.String())
		default:
			L.RaiseError("table.concat: invalid value (%s) at index %d in table for concat", e.Type(), k)
		}
		if k < j {
			size += len(sep)
		}
		if size > v.s.cfg.MaxStringSize {
			v.tooLarge(L, "table.concat", size)
		}
	}
	b := make([]byte, 0, size)
	for k := i; k <= j; k++ {
		b = append(b, lua.LVAsString(t.RawGetInt(k))...)
		if k < j {
			b = append(b, sep...)
		}
	}
	L.Push(lua.LString(unsafe.String(unsafe.SliceData(b), len(b))))
	return 1
}

// matcher walks the matches of a pattern in batches.
type matcher struct {
	pat     string
	src     []byte
	anchor  bool // a leading '^' matches only at the start
	next    int  // where the next batch starts
	pending []*pm.MatchData
	done    bool
}

func newMatcher(pat, src string) *matcher {
	return &matcher{
		pat:    pat,
		src:    unsafe.Slice(unsafe.StringData(src), len(src)),
		anchor: len(pat) > 0 && pat[0] == '^',
	}
}

// match returns the next match, nil at the end.
func (m *matcher) match(v *vm, L *lua.LState) *pm.MatchData {
	if len(m.pending) == 0 {
		if m.done {
			return nil
		}
		if v.dl.expiredNow() {
			L.RaiseError("%s", errTimeoutText)
		}
		mds, err := pm.Find(m.pat, m.src, m.next, matchBatch)
		if err != nil {
			L.RaiseError("%s", err.Error())
		}
		if len(mds) < matchBatch || m.anchor {
			m.done = true
		}
		if len(mds) == 0 {
			return nil
		}
		// Resume as pm.Find itself would: after the match, and at least
		// one byte further after an empty one.
		last := mds[len(mds)-1]
		m.next = max(last.Capture(0)+1, last.Capture(1))
		if m.next > len(m.src) {
			m.done = true
		}
		m.pending = mds
	}
	md := m.pending[0]
	m.pending[0] = nil
	m.pending = m.pending[1:]
	return md
}

// capture returns capture idx (0: the whole match; 1..: the captures) as
// Lua values: strings, or numbers for position captures "()".
func capture(L *lua.LState, md *pm.MatchData, src string, idx int) lua.LValue {
	if idx == 1 && md.CaptureLength() == 2 {
		idx = 0
	}
	k := 2 * idx
	if k >= md.CaptureLength() {
		L.RaiseError("invalid capture index %%%d", idx)
	}
	if md.IsPosCapture(k) {
		return lua.LNumber(md.Capture(k))
	}
	return lua.LString(src[md.Capture(k):md.Capture(k+1)])
}

func (v *vm) strGsub(L *lua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	L.CheckTypes(3, lua.LTString, lua.LTNumber, lua.LTTable, lua.LTFunction)
	repl := L.Get(3)
	limit := L.OptInt(4, -1)
	maxSize := v.s.cfg.MaxStringSize
	m := newMatcher(pat, src)
	out := make([]byte, 0, len(src))
	last, n := 0, 0
	for limit < 0 || n < limit {
		md := m.match(v, L)
		if md == nil {
			break
		}
		n++
		start, end := md.Capture(0), md.Capture(1)
		out = append(out, src[last:start]...)
		last = end
		switch r := repl.(type) {
		case lua.LString, lua.LNumber:
			out = appendExpanded(L, out, lua.LVAsString(r), md, src, maxSize)
		case *lua.LTable:
			out = appendReplacement(L, out, L.GetTable(r, capture(L, md, src, 1)), src[start:end])
		case *lua.LFunction:
			L.Push(r)
			nargs := max(1, md.CaptureLength()/2-1)
			for i := 1; i <= nargs; i++ {
				L.Push(capture(L, md, src, i))
			}
			L.Call(nargs, 1)
			ret := L.Get(-1)
			L.Pop(1)
			out = appendReplacement(L, out, ret, src[start:end])
		}
		if len(out)+len(src)-last > maxSize {
			v.tooLarge(L, "string.gsub", len(out)+len(src)-last)
		}
	}
	out = append(out, src[last:]...)
	L.Push(lua.LString(unsafe.String(unsafe.SliceData(out), len(out))))
	L.Push(lua.LNumber(n))
	return 2
}

// appendExpanded appends a gsub replacement string, expanding %0-%9 and
// %% as Lua 5.1 does ("%x" is "x").
func appendExpanded(L *lua.LState, out []byte, repl string, md *pm.MatchData, src string, maxSize int) []byte {
	if strings.IndexByte(repl, '%') < 0 {
		if len(out)+len(repl) > maxSize {
			L.RaiseError("string.gsub: result exceeds the %d-byte string limit", maxSize)
		}
		return append(out, repl...)
	}
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c != '%' || i+1 == len(repl) {
			out = append(out, c)
			continue
		}
		i++
		c = repl[i]
		if c < '0' || c > '9' {
			out = append(out, c)
			continue
		}
		out = append(out, lua.LVAsString(capture(L, md, src, int(c-'0')))...)
		if len(out) > maxSize {
			L.RaiseError("string.gsub: result exceeds the %d-byte string limit", maxSize)
		}
	}
	return out
}

// appendReplacement appends a table or function replacement: false or nil
// keeps the match, a string or number replaces it.
func appendReplacement(L *lua.LState, out []byte, val lua.LValue, match string) []byte {
	switch r := val.(type) {
	case lua.LString, lua.LNumber:
		return append(out, lua.LVAsString(r)...)
	case *lua.LNilType, lua.LBool:
		if lua.LVIsFalse(r) {
			return append(out, match...)
		}
	}
	L.RaiseError("invalid replacement value (a %s)", val.Type())
	return out
}

func (v *vm) strGmatch(L *lua.LState) int {
	src := L.CheckString(1)
	m := newMatcher(L.CheckString(2), src)
	L.Push(L.NewFunction(func(L *lua.LState) int {
		md := m.match(v, L)
		if md == nil {
			return 0
		}
		if md.CaptureLength() == 2 {
			L.Push(lua.LString(src[md.Capture(0):md.Capture(1)]))
			return 1
		}
		n := md.CaptureLength()/2 - 1
		for i := 1; i <= n; i++ {
			L.Push(capture(L, md, src, i))
		}
		return n
	}))
	return 1
}

// quote is strconv.Quote, short for error messages with untrusted values.
func quote(s string) string { return strconv.Quote(s) }
