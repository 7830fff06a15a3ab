package luavm

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// Lua patterns for string.find, match, gmatch and gsub: a port of the
// backtracking matcher of Lua 5.2's lstrlib.c (match, max_expand,
// min_expand, ...), with two changes that keep a request inside its limits.
//
//   - Every call of match and every step of a repetition counts; each
//     pollSteps steps the VM's deadline is polled, so a pattern that
//     backtracks quadratically or worse over a large subject (the trim
//     idiom "^%s*(.-)%s*$" over a 20 KB body took 9.2s in gopher-lua's pm
//     package, which cannot be interrupted) raises the script timeout
//     close to max_execution instead of holding a core.
//   - Recursion is bounded by maxMatchDepth (Lua 5.2's MAXCCALLS) instead
//     of pm's 1,000,000 nested Go calls, which could grow a goroutine
//     stack by gigabytes.
//
// It also implements what pm lacks: %f frontiers, and gmatch treating a
// leading '^' as a literal, as Lua does.

const (
	maxCaptures   = 32  // LUA_MAXCAPTURES
	maxMatchDepth = 200 // MAXCCALLS: nesting of match through captures and repetitions
	capUnfinished = -1
	capPosition   = -2
	// pollSteps is how many matcher steps run between two polls of the
	// deadline: a poll is a non-blocking channel receive (~10ns), a step
	// a few ns, so the poll costs under 1% and the deadline is noticed
	// within microseconds.
	pollSteps = 1024
	// patternSpecials are the characters that make find use the matcher
	// instead of a plain substring search (lstrlib's SPECIALS).
	patternSpecials = "^$*+?.([%-"
)

// matchState is one running match: lstrlib's MatchState.
type matchState struct {
	src, pat string
	level    int
	depth    int
	steps    int
	capture  [maxCaptures]struct{ init, len int }
	v        *vm
	L        *lua.LState
}

func (v *vm) newMatchState(L *lua.LState, src, pat string) *matchState {
	return &matchState{src: src, pat: pat, v: v, L: L}
}

// step counts one unit of matcher work and polls the deadline.
func (ms *matchState) step() {
	ms.steps++
	if ms.steps%pollSteps == 0 && ms.v.dl.expiredNow() {
		ms.L.RaiseError("%s", errTimeoutText)
	}
}

func (ms *matchState) classEnd(p int) int {
	pat := ms.pat
	c := pat[p]
	p++
	switch c {
	case '%':
		if p >= len(pat) {
			ms.L.RaiseError("%s", "malformed pattern (ends with '%')")
		}
		return p + 1
	case '[':
		if p < len(pat) && pat[p] == '^' {
			p++
		}
		// The first character is part of the set even if it is ']'.
		for {
			if p >= len(pat) {
				ms.L.RaiseError("malformed pattern (missing ']')")
			}
			c := pat[p]
			p++
			if c == '%' && p < len(pat) {
				p++ // skip escapes such as "%]"
			}
			if p >= len(pat) {
				ms.L.RaiseError("malformed pattern (missing ']')")
			}
			if pat[p] == ']' {
				return p + 1
			}
		}
	}
	return p
}

// matchClass reports whether c is in the class %cl, in the C locale.
func matchClass(c, cl byte) bool {
	var res bool
	switch cl | 0x20 {
	case 'a':
		res = isAlpha(c)
	case 'c':
		res = c < 0x20 || c == 0x7f
	case 'd':
		res = c >= '0' && c <= '9'
	case 'g':
		res = c > 0x20 && c < 0x7f
	case 'l':
		res = c >= 'a' && c <= 'z'
	case 'p':
		res = c > 0x20 && c < 0x7f && !isAlpha(c) && !(c >= '0' && c <= '9')
	case 's':
		res = c == ' ' || c >= '\t' && c <= '\r'
	case 'u':
		res = c >= 'A' && c <= 'Z'
	case 'w':
		res = isAlpha(c) || c >= '0' && c <= '9'
	case 'x':
		res = c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f'
	case 'z':
		res = c == 0
	default:
		return cl == c
	}
	if cl >= 'A' && cl <= 'Z' {
		return !res
	}
	return res
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// matchBracketClass matches c against the set [...] from p (at '[') to
// ec (at its ']').
func (ms *matchState) matchBracketClass(c byte, p, ec int) bool {
	pat := ms.pat
	sig := true
	if pat[p+1] == '^' {
		sig = false
		p++
	}
	for p++; p < ec; p++ {
		switch {
		case pat[p] == '%':
			p++
			if matchClass(c, pat[p]) {
				return sig
			}
		case pat[p+1] == '-' && p+2 < ec:
			p += 2
			if pat[p-2] <= c && c <= pat[p] {
				return sig
			}
		case pat[p] == c:
			return sig
		}
	}
	return !sig
}

// singleMatch matches the byte at s against the single-character class
// from p to ep.
func (ms *matchState) singleMatch(s, p, ep int) bool {
	if s >= len(ms.src) {
		return false
	}
	c := ms.src[s]
	switch ms.pat[p] {
	case '.':
		return true
	case '%':
		return matchClass(c, ms.pat[p+1])
	case '[':
		return ms.matchBracketClass(c, p, ep-1)
	}
	return ms.pat[p] == c
}

// patAt returns the pattern byte at p, 0 past the end (where C reads the
// terminating NUL).
func (ms *matchState) patAt(p int) byte {
	if p < len(ms.pat) {
		return ms.pat[p]
	}
	return 0
}

// match returns the end of the match of pat[p:] at src[s:], or -1.
func (ms *matchState) match(s, p int) int {
	ms.step()
	if ms.depth++; ms.depth > maxMatchDepth {
		ms.L.RaiseError("pattern too complex")
	}
	// Not deferred: match is the matcher's hot recursion, and after a
	// raise the matchState is dropped anyway.
	e := ms.doMatch(s, p)
	ms.depth--
	return e
}

func (ms *matchState) doMatch(s, p int) int {
	for p < len(ms.pat) {
		switch ms.pat[p] {
		case '(':
			if ms.patAt(p+1) == ')' {
				return ms.startCapture(s, p+2, capPosition)
			}
			return ms.startCapture(s, p+1, capUnfinished)
		case ')':
			return ms.endCapture(s, p+1)
		case '$':
			if p+1 == len(ms.pat) {
				if s == len(ms.src) {
					return s
				}
				return -1
			}
		case '%':
			switch c := ms.patAt(p + 1); {
			case c == 'b':
				if s = ms.matchBalance(s, p+2); s < 0 {
					return -1
				}
				p += 4
				continue
			case c == 'f':
				p += 2
				if ms.patAt(p) != '[' {
					ms.L.RaiseError("%s", "missing '[' after '%f' in pattern")
				}
				ep := ms.classEnd(p)
				var prev, cur byte
				if s > 0 {
					prev = ms.src[s-1]
				}
				if s < len(ms.src) {
					cur = ms.src[s]
				}
				if !ms.matchBracketClass(prev, p, ep-1) && ms.matchBracketClass(cur, p, ep-1) {
					p = ep
					continue
				}
				return -1
			case c >= '0' && c <= '9':
				if s = ms.matchCapture(s, c); s < 0 {
					return -1
				}
				p += 2
				continue
			}
		}
		// A single-character class, possibly repeated.
		ep := ms.classEnd(p)
		epc := ms.patAt(ep)
		if !ms.singleMatch(s, p, ep) {
			if epc == '*' || epc == '?' || epc == '-' {
				p = ep + 1 // accept the empty match
				continue
			}
			return -1
		}
		switch epc {
		case '?':
			if res := ms.match(s+1, ep+1); res >= 0 {
				return res
			}
			p = ep + 1
		case '+':
			return ms.maxExpand(s+1, p, ep)
		case '*':
			return ms.maxExpand(s, p, ep)
		case '-':
			return ms.minExpand(s, p, ep)
		default:
			s++
			p = ep
		}
	}
	return s
}

func (ms *matchState) maxExpand(s, p, ep int) int {
	i := 0
	for ms.singleMatch(s+i, p, ep) {
		i++
		ms.step()
	}
	for ; i >= 0; i-- {
		if res := ms.match(s+i, ep+1); res >= 0 {
			return res
		}
	}
	return -1
}

func (ms *matchState) minExpand(s, p, ep int) int {
	for {
		if res := ms.match(s, ep+1); res >= 0 {
			return res
		}
		if !ms.singleMatch(s, p, ep) {
			return -1
		}
		s++
	}
}

func (ms *matchState) startCapture(s, p, what int) int {
	if ms.level >= maxCaptures {
		ms.L.RaiseError("too many captures")
	}
	ms.capture[ms.level].init = s
	ms.capture[ms.level].len = what
	ms.level++
	res := ms.match(s, p)
	if res < 0 {
		ms.level--
	}
	return res
}

func (ms *matchState) endCapture(s, p int) int {
	l := -1
	for i := ms.level - 1; i >= 0; i-- {
		if ms.capture[i].len == capUnfinished {
			l = i
			break
		}
	}
	if l < 0 {
		ms.L.RaiseError("invalid pattern capture")
	}
	ms.capture[l].len = s - ms.capture[l].init
	res := ms.match(s, p)
	if res < 0 {
		ms.capture[l].len = capUnfinished
	}
	return res
}

func (ms *matchState) matchBalance(s, p int) int {
	if p+1 >= len(ms.pat) {
		ms.L.RaiseError("%s", "malformed pattern (missing arguments to '%b')")
	}
	if s >= len(ms.src) || ms.src[s] != ms.pat[p] {
		return -1
	}
	b, e := ms.pat[p], ms.pat[p+1]
	cont := 1
	for s++; s < len(ms.src); s++ {
		ms.step()
		switch ms.src[s] {
		case e:
			if cont--; cont == 0 {
				return s + 1
			}
		case b:
			cont++
		}
	}
	return -1
}

func (ms *matchState) matchCapture(s int, c byte) int {
	l := int(c) - '1'
	if l < 0 || l >= ms.level || ms.capture[l].len == capUnfinished {
		ms.L.RaiseError("invalid capture index %%%d", l+1)
	}
	n := ms.capture[l].len
	init := ms.capture[l].init
	if len(ms.src)-s >= n && ms.src[init:init+n] == ms.src[s:s+n] {
		return s + n
	}
	return -1
}

// oneCapture returns capture i of the match src[s:e] (i == 0 with no
// captures is the whole match).
func (ms *matchState) oneCapture(i, s, e int) lua.LValue {
	if i >= ms.level {
		if i != 0 {
			ms.L.RaiseError("invalid capture index %%%d", i+1)
		}
		return lua.LString(ms.src[s:e])
	}
	c := ms.capture[i]
	switch c.len {
	case capUnfinished:
		ms.L.RaiseError("unfinished capture")
	case capPosition:
		return lua.LNumber(c.init + 1)
	}
	return lua.LString(ms.src[c.init : c.init+c.len])
}

// pushCaptures pushes the captures of the match src[s:e], or the whole
// match when the pattern has none and wholeIfNone. It returns how many.
func (ms *matchState) pushCaptures(s, e int, wholeIfNone bool) int {
	n := ms.level
	if n == 0 && wholeIfNone {
		n = 1
	}
	for i := 0; i < n; i++ {
		ms.L.Push(ms.oneCapture(i, s, e))
	}
	return n
}

// strInit converts string.find/match's init argument to a byte offset.
func strInit(L *lua.LState, n, ls int) int {
	init := L.OptInt(n, 1)
	if init < 0 {
		init += ls + 1
	}
	if init < 1 {
		init = 1
	}
	return init - 1
}

func (v *vm) strFind(L *lua.LState) int  { return v.findAux(L, true) }
func (v *vm) strMatch(L *lua.LState) int { return v.findAux(L, false) }

func (v *vm) findAux(L *lua.LState, find bool) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	init := strInit(L, 3, len(src))
	if init > len(src) {
		// Lua 5.2: a start past the end never matches.
		L.Push(lua.LNil)
		return 1
	}
	if find && (lua.LVAsBool(L.Get(4)) || !strings.ContainsAny(pat, patternSpecials)) {
		// A plain search: strings.Index is linear.
		if i := strings.Index(src[init:], pat); i >= 0 {
			L.Push(lua.LNumber(init + i + 1))
			L.Push(lua.LNumber(init + i + len(pat)))
			return 2
		}
		L.Push(lua.LNil)
		return 1
	}
	ms := v.newMatchState(L, src, pat)
	p, anchor := 0, len(pat) > 0 && pat[0] == '^'
	if anchor {
		p = 1
	}
	for s := init; ; s++ {
		ms.level = 0
		if e := ms.match(s, p); e >= 0 {
			if find {
				L.Push(lua.LNumber(s + 1))
				L.Push(lua.LNumber(e))
				return ms.pushCaptures(0, 0, false) + 2
			}
			return ms.pushCaptures(s, e, true)
		}
		if anchor || s >= len(src) {
			break
		}
	}
	L.Push(lua.LNil)
	return 1
}

func (v *vm) strGmatch(L *lua.LState) int {
	src := L.CheckString(1)
	ms := v.newMatchState(L, src, L.CheckString(2))
	next := 0
	L.Push(L.NewFunction(func(L *lua.LState) int {
		// The iterator may run in a later call frame: raise from it.
		ms.L = L
		for s := next; s <= len(src); s++ {
			ms.level = 0
			if e := ms.match(s, 0); e >= 0 {
				next = e
				if e == s {
					next++ // an empty match: go on one byte further
				}
				return ms.pushCaptures(s, e, true)
			}
		}
		next = len(src) + 1
		return 0
	}))
	return 1
}

func (v *vm) strGsub(L *lua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	L.CheckTypes(3, lua.LTString, lua.LTNumber, lua.LTTable, lua.LTFunction)
	repl := L.Get(3)
	maxN := L.OptInt(4, len(src)+1)
	maxSize := v.s.cfg.MaxStringSize
	ms := v.newMatchState(L, src, pat)
	p, anchor := 0, len(pat) > 0 && pat[0] == '^'
	if anchor {
		p = 1
	}
	out := make([]byte, 0, len(src))
	s, n := 0, 0
	for n < maxN {
		ms.level = 0
		e := ms.match(s, p)
		if e >= 0 {
			n++
			out = v.appendGsubValue(ms, out, repl, s, e)
		}
		switch {
		case e > s:
			s = e
		case s < len(src):
			out = append(out, src[s])
			s++
		default:
			goto done
		}
		if len(out)+len(src)-s > maxSize {
			v.tooLarge(L, "string.gsub", len(out)+len(src)-s)
		}
		if anchor {
			break
		}
	}
done:
	out = append(out, src[s:]...)
	L.Push(lua.LString(b2s(out)))
	L.Push(lua.LNumber(n))
	return 2
}

// appendGsubValue appends the replacement of the match src[s:e].
func (v *vm) appendGsubValue(ms *matchState, out []byte, repl lua.LValue, s, e int) []byte {
	L := ms.L
	var val lua.LValue
	switch r := repl.(type) {
	case lua.LString, lua.LNumber:
		return ms.appendExpanded(out, lua.LVAsString(r), s, e, v.s.cfg.MaxStringSize)
	case *lua.LTable:
		val = L.GetTable(r, ms.oneCapture(0, s, e))
	case *lua.LFunction:
		top := L.GetTop()
		L.Push(r)
		nargs := ms.pushCaptures(s, e, true)
		L.Call(nargs, 1)
		val = L.Get(-1)
		L.SetTop(top)
	}
	switch r := val.(type) {
	case lua.LString, lua.LNumber:
		return append(out, lua.LVAsString(r)...)
	case *lua.LNilType, lua.LBool:
		if lua.LVIsFalse(r) {
			return append(out, ms.src[s:e]...) // keep the original match
		}
	}
	L.RaiseError("invalid replacement value (a %s)", val.Type())
	return out
}

// appendExpanded appends a gsub replacement string, expanding %0-%9 and
// %% as Lua 5.1 does ("%x" is "x").
func (ms *matchState) appendExpanded(out []byte, repl string, s, e, maxSize int) []byte {
	if strings.IndexByte(repl, '%') < 0 {
		return append(out, repl...)
	}
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c != '%' || i+1 == len(repl) {
			out = append(out, c)
			continue
		}
		i++
		switch c = repl[i]; {
		case c == '0':
			out = append(out, ms.src[s:e]...)
		case c >= '1' && c <= '9':
			out = append(out, lua.LVAsString(ms.oneCapture(int(c-'1'), s, e))...)
		default:
			out = append(out, c)
		}
		if len(out) > maxSize {
			ms.L.RaiseError("string.gsub: result exceeds the %d-byte string limit", maxSize)
		}
	}
	return out
}
