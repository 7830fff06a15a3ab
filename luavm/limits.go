package luavm

import (
	"sort"
	"strconv"
	"strings"
	"unsafe"

	lua "github.com/yuin/gopher-lua"
)

// The deadline stops Lua between instructions, but a single Go builtin runs
// to completion: string.rep("x", 1e10) would allocate 10 GB before the VM
// looked at its context again. So every builtin whose work can grow beyond
// its inputs is replaced:
//
//   - rep, format, gsub and table.concat check MaxStringSize before they
//     allocate;
//   - find, match, gmatch and gsub run the matcher of pattern.go, which
//     polls the deadline while it backtracks;
//   - byte and unpack refuse more than maxResults results, as Lua 5.1 does
//     past its C stack (LUAI_MAXCSTACK): pushing a million values one by
//     one onto gopher-lua's registry, grown 256 slots at a time, took ~1s.
//
//   - table.sort polls the deadline every pollSteps comparisons: with the
//     default comparison no Lua runs between them, and sorting costs
//     several times the instructions that built the table;
//   - upper, lower and reverse work in chunks of bulkChunk bytes and poll
//     the deadline between chunks: gopher-lua's strings.ToUpper of a
//     16 MiB string took ~70ms on a loaded machine, past a 50ms budget in
//     one call.
//
// What remains (sub, len, char, rep's copy) is a memmove at most
// MaxStringSize long. The `..` operator is bounded by the deadline: each
// doubling is one instruction.

// maxResults caps the values string.byte and unpack return: Lua 5.1's
// LUAI_MAXCSTACK.
const maxResults = 8000

// bulkChunk is how many bytes upper, lower and reverse convert between two
// polls of the deadline (~0.1ms each).
const bulkChunk = 64 << 10

func (v *vm) openLimits(base, str, tbl *lua.LTable) {
	L := v.L
	format := str.RawGetString("format").(*lua.LFunction).GFunction
	str.RawSetString("rep", L.NewFunction(v.strRep))
	str.RawSetString("format", L.NewFunction(func(L *lua.LState) int { return v.strFormat(L, format) }))
	str.RawSetString("byte", L.NewFunction(strByte))
	str.RawSetString("upper", L.NewFunction(func(L *lua.LState) int { return v.strMap(L, &upperTable) }))
	str.RawSetString("lower", L.NewFunction(func(L *lua.LState) int { return v.strMap(L, &lowerTable) }))
	str.RawSetString("reverse", L.NewFunction(v.strReverse))
	str.RawSetString("find", L.NewFunction(v.strFind))
	str.RawSetString("match", L.NewFunction(v.strMatch))
	str.RawSetString("gsub", L.NewFunction(v.strGsub))
	gmatch := L.NewFunction(v.strGmatch)
	str.RawSetString("gmatch", gmatch)
	str.RawSetString("gfind", gmatch)
	tbl.RawSetString("concat", L.NewFunction(v.tableConcat))
	tbl.RawSetString("sort", L.NewFunction(v.tableSort))
	base.RawSetString("unpack", L.NewFunction(baseUnpack))
}

// strByte is string.byte with at most maxResults results.
func strByte(L *lua.LState) int {
	s := L.CheckString(1)
	i := strIndex(L.OptInt(2, 1), len(s))
	j := strIndex(L.OptInt(3, i), len(s))
	i = max(i, 1)
	j = min(j, len(s))
	if i > j {
		return 0
	}
	if j-i >= maxResults {
		L.RaiseError("string.byte: string slice too long (%d bytes, at most %d)", j-i+1, maxResults)
	}
	for k := i; k <= j; k++ {
		L.Push(lua.LNumber(s[k-1]))
	}
	return j - i + 1
}

// tableSort is table.sort: Lua's order (the comparator, or <), over
// t[1..#t], polling the deadline every pollSteps comparisons.
func (v *vm) tableSort(L *lua.LState) int {
	t := L.CheckTable(1)
	var fn *lua.LFunction
	if L.GetTop() >= 2 && L.Get(2) != lua.LNil {
		fn = L.CheckFunction(2)
	}
	n := t.Len()
	s := &luaSorter{v: v, L: L, fn: fn, vals: make([]lua.LValue, n)}
	for i := range s.vals {
		s.vals[i] = t.RawGetInt(i + 1)
	}
	sort.Sort(s)
	for i, val := range s.vals {
		t.RawSetInt(i+1, val)
	}
	return 0
}

type luaSorter struct {
	v     *vm
	L     *lua.LState
	fn    *lua.LFunction
	vals  []lua.LValue
	steps int
}

func (s *luaSorter) Len() int      { return len(s.vals) }
func (s *luaSorter) Swap(i, j int) { s.vals[i], s.vals[j] = s.vals[j], s.vals[i] }

func (s *luaSorter) Less(i, j int) bool {
	if s.steps++; s.steps%pollSteps == 0 && s.v.dl.expiredNow() {
		s.L.RaiseError("%s", errTimeoutText)
	}
	if s.fn == nil {
		return s.L.LessThan(s.vals[i], s.vals[j])
	}
	s.L.Push(s.fn)
	s.L.Push(s.vals[i])
	s.L.Push(s.vals[j])
	s.L.Call(2, 1)
	less := lua.LVAsBool(s.L.Get(-1))
	s.L.Pop(1)
	return less
}

// strMap is string.upper or string.lower: byte by byte through a table,
// in the C locale as Lua's (gopher-lua's strings.ToUpper also mapped
// non-ASCII letters), polling the deadline every bulkChunk bytes.
func (v *vm) strMap(L *lua.LState, table *[256]byte) int {
	s := L.CheckString(1)
	b := make([]byte, len(s))
	for start := 0; start < len(s); start += bulkChunk {
		if start > 0 && v.dl.expiredNow() {
			L.RaiseError("%s", errTimeoutText)
		}
		end := min(start+bulkChunk, len(s))
		for i := start; i < end; i++ {
			b[i] = table[s[i]]
		}
	}
	L.Push(lua.LString(b2s(b)))
	return 1
}

var upperTable, lowerTable [256]byte

func init() {
	for i := range 256 {
		c := byte(i)
		upperTable[i], lowerTable[i] = c, c
		if c >= 'a' && c <= 'z' {
			upperTable[i] = c - 'a' + 'A'
		}
		if c >= 'A' && c <= 'Z' {
			lowerTable[i] = c - 'A' + 'a'
		}
	}
}

// strReverse is string.reverse, bytewise as Lua's, polling the deadline.
func (v *vm) strReverse(L *lua.LState) int {
	s := L.CheckString(1)
	b := make([]byte, len(s))
	for start := 0; start < len(s); start += bulkChunk {
		if start > 0 && v.dl.expiredNow() {
			L.RaiseError("%s", errTimeoutText)
		}
		for i := start; i < min(start+bulkChunk, len(s)); i++ {
			b[len(s)-1-i] = s[i]
		}
	}
	L.Push(lua.LString(b2s(b)))
	return 1
}

// strIndex resolves a negative string position as Lua's posrelat.
func strIndex(pos, n int) int {
	if pos < 0 {
		pos += n + 1
	}
	return max(pos, 0)
}

// baseUnpack is unpack with at most maxResults results: gopher-lua's
// pushes one nil per index, so unpack({}, 1, 1e9) never ended.
func baseUnpack(L *lua.LState) int {
	t := L.CheckTable(1)
	i := L.OptInt(2, 1)
	j := L.OptInt(3, t.Len())
	if i > j {
		return 0
	}
	if n := int64(j) - int64(i) + 1; n > maxResults {
		L.RaiseError("unpack: too many results to unpack (%d, at most %d)", n, maxResults)
	}
	for k := i; k <= j; k++ {
		L.Push(t.RawGetInt(k))
	}
	return j - i + 1
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

// quote is strconv.Quote, short for error messages with untrusted values.
func quote(s string) string { return strconv.Quote(s) }
