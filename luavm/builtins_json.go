package luavm

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// json.encode(v) and json.decode(s), Lua convention names:
//
//   - A table whose keys are exactly 1..n encodes as an array, any other
//     table as an object with sorted keys (strings or numbers). An empty
//     table encodes as {} unless marked with json.array(t).
//   - json.null encodes as null, and so does nil in a marked array's holes.
//   - Decoding gives tables, strings, numbers, booleans; null becomes nil
//     (a hole in arrays). Decoded arrays carry json.array's mark, so they
//     re-encode as arrays even when empty.
//   - encode raises on cycles, functions, userdata, NaN, and output over
//     MaxStringSize; decode returns nil, err.
const (
	jsonMaxDepth   = 200
	jsonPollEvery  = 1024 // values between deadline polls while encoding
	jsonNullString = "json.null"
)

func (v *vm) openJSON() {
	L := v.L
	v.jsonArray = L.NewTable()
	v.jsonArray.RawSetString("__metatable", lua.LString("json.array"))
	v.jsonNull = L.NewUserData()
	v.jsonNull.Value = jsonNullString
	mod := L.NewTable()
	mod.RawSetString("encode", L.NewFunction(func(L *lua.LState) int {
		b := v.encodeJSON(L, L.CheckAny(1), nil)
		L.Push(lua.LString(b))
		return 1
	}))
	mod.RawSetString("decode", L.NewFunction(v.decodeJSON))
	mod.RawSetString("array", L.NewFunction(func(L *lua.LState) int {
		t := L.OptTable(1, L.NewTable())
		if mt := L.GetMetatable(t); mt != lua.LNil && mt != v.jsonArray {
			L.ArgError(1, "table already has a metatable")
		}
		t.Metatable = v.jsonArray
		L.Push(t)
		return 1
	}))
	mod.RawSetString("null", v.jsonNull)
	L.SetGlobal("json", mod)
}

type jsonEncoder struct {
	v     *vm
	L     *lua.LState
	buf   []byte
	stack []*lua.LTable // tables being encoded, for cycle detection
	n     int
	max   int
}

// encodeJSON encodes lv, appending to dst, or raises a Lua error.
func (v *vm) encodeJSON(L *lua.LState, lv lua.LValue, dst []byte) []byte {
	e := jsonEncoder{v: v, L: L, buf: dst, max: v.s.cfg.MaxStringSize}
	e.value(lv)
	return e.buf
}

func (e *jsonEncoder) fail(format string, args ...any) {
	e.L.RaiseError("json.encode: "+format, args...)
}

func (e *jsonEncoder) value(lv lua.LValue) {
	if e.n++; e.n%jsonPollEvery == 0 && e.v.dl.expiredNow() {
		e.L.RaiseError("%s", errTimeoutText)
	}
	switch x := lv.(type) {
	case *lua.LNilType:
		e.buf = append(e.buf, "null"...)
	case lua.LBool:
		e.buf = strconv.AppendBool(e.buf, bool(x))
	case lua.LNumber:
		f := float64(x)
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0):
			e.fail("cannot encode %v", f)
		case f == math.Trunc(f) && math.Abs(f) < 1e15:
			e.buf = strconv.AppendInt(e.buf, int64(f), 10)
		default:
			e.buf = strconv.AppendFloat(e.buf, f, 'g', -1, 64)
		}
	case lua.LString:
		if len(e.buf)+len(x)+2 > e.max {
			e.fail("output exceeds the %d-byte string limit", e.max)
		}
		e.buf = appendJSONString(e.buf, string(x))
	case *lua.LTable:
		e.table(x)
	case *lua.LUserData:
		if x != e.v.jsonNull {
			e.fail("cannot encode userdata")
		}
		e.buf = append(e.buf, "null"...)
	default:
		e.fail("cannot encode a %s", lv.Type())
	}
	if len(e.buf) > e.max {
		e.fail("output exceeds the %d-byte string limit", e.max)
	}
}

func (e *jsonEncoder) table(t *lua.LTable) {
	if slices.Contains(e.stack, t) {
		e.fail("cycle: a table contains itself")
	}
	if len(e.stack) >= jsonMaxDepth {
		e.fail("nesting deeper than %d", jsonMaxDepth)
	}
	e.stack = append(e.stack, t)
	defer func() { e.stack = e.stack[:len(e.stack)-1] }()

	count, maxKey, intKeys := 0, 0, true
	t.ForEach(func(k, _ lua.LValue) {
		count++
		if n, ok := k.(lua.LNumber); ok && n >= 1 && n == lua.LNumber(int(n)) {
			maxKey = max(maxKey, int(n))
		} else {
			intKeys = false
		}
	})
	// Keys exactly 1..n make an array; a json.array-marked table is one
	// even with holes (nil encodes as null) or empty.
	if intKeys && (count > 0 && maxKey == count || t.Metatable == e.v.jsonArray) {
		e.buf = append(e.buf, '[')
		for i := 1; i <= maxKey; i++ {
			if i > 1 {
				e.buf = append(e.buf, ',')
			}
			e.value(t.RawGetInt(i))
		}
		e.buf = append(e.buf, ']')
		return
	}
	keys := make([]string, 0, count)
	vals := make(map[string]lua.LValue, count)
	t.ForEach(func(k, val lua.LValue) {
		var ks string
		switch kk := k.(type) {
		case lua.LString:
			ks = string(kk)
		case lua.LNumber:
			ks = kk.String()
		default:
			e.fail("object keys must be strings or numbers, got %s", k.Type())
		}
		keys = append(keys, ks)
		vals[ks] = val
	})
	slices.Sort(keys)
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.buf = appendJSONString(e.buf, k)
		e.buf = append(e.buf, ':')
		e.value(vals[k])
	}
	e.buf = append(e.buf, '}')
}

// appendJSONString quotes s as a JSON string: RFC 8259 escapes, invalid
// UTF-8 replaced by U+FFFD as encoding/json does, no HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] needs no escaping and is appended in one copy
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func (v *vm) decodeJSON(L *lua.LState) int {
	s := L.CheckString(1)
	var x any
	if err := json.Unmarshal([]byte(s), &x); err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("json.decode: " + err.Error()))
		return 2
	}
	L.Push(v.fromJSON(L, x))
	return 1
}

func (v *vm) fromJSON(L *lua.LState, x any) lua.LValue {
	switch x := x.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := L.CreateTable(len(x), 0)
		for i, e := range x {
			t.RawSetInt(i+1, v.fromJSON(L, e))
		}
		t.Metatable = v.jsonArray
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, v.fromJSON(L, e))
		}
		return t
	}
	panic(fmt.Sprintf("luavm: unexpected JSON value %T", x))
}
