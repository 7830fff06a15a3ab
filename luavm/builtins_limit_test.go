package luavm

import (
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// countingLimiter allows the first n calls per key and records arguments.
type countingLimiter struct {
	n    int
	seen map[string]int
	last struct {
		rate, burst int64
		per         time.Duration
	}
}

func (c *countingLimiter) Allow(key string, rate int64, per time.Duration, burst int64) (bool, int64, time.Duration, error) {
	c.seen[key]++
	c.last.rate, c.last.per, c.last.burst = rate, per, burst
	if c.seen[key] > c.n {
		return false, 0, 1500 * time.Millisecond, nil
	}
	return true, int64(c.n - c.seen[key]), 0, nil
}

func TestLimitAllowArguments(t *testing.T) {
	t.Parallel()
	lim := &countingLimiter{n: 1, seen: map[string]int{}}
	v := &vm{L: lua.NewState(), s: &Script{opts: Options{Limiter: lim}}}
	defer v.L.Close()
	v.L.SetGlobal("allow", v.L.NewFunction(v.limitAllow))
	run := func(src string) (string, error) {
		if err := v.L.DoString("return " + src); err != nil {
			return "", err
		}
		defer v.L.SetTop(0)
		var out []string
		for i := 1; i <= v.L.GetTop(); i++ {
			out = append(out, v.L.Get(i).String())
		}
		return strings.Join(out, " "), nil
	}
	for _, c := range []struct{ src, want, err string }{
		{src: `allow("k", 10, "1m", 5)`, want: "true 0 0"},
		{src: `allow("k", 10, 60, 5)`, want: "false 0 1.5"},
		{src: `allow("k", 0, 1)`, err: "rate must be an integer of at least 1"},
		{src: `allow("k", 1.5, 1)`, err: "rate must be an integer of at least 1"},
		{src: `allow("k", 1, "soon")`, err: `per must be a positive duration such as "1s", got "soon"`},
		{src: `allow("k", 1, -1)`, err: "per must be a positive number of seconds"},
		{src: `allow("k", 1, 1, 0)`, err: "burst must be an integer of at least 1"},
		{src: `allow(string.rep("k", 2000), 1, 1)`, err: "key longer than 1024 bytes"},
	} {
		got, err := run(c.src)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one containing %q", c.src, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%s: %q (err %v), want %q", c.src, got, err, c.want)
		}
	}
	if lim.last.rate != 10 || lim.last.per != time.Minute || lim.last.burst != 5 {
		t.Errorf("limiter got %+v, want rate 10 per 1m burst 5", lim.last)
	}
}

func TestBoundedMemoryStoreEvicts(t *testing.T) {
	t.Parallel()
	st := NewBoundedMemoryStore(64, 0) // one key per stripe
	for i := range 10000 {
		st.Set(strings.Repeat("k", i%50)+string(rune('a'+i%26))+string(rune(i)), "v", 0)
	}
	if n := st.Len(); n > 64 {
		t.Errorf("holds %d keys, want at most 64", n)
	}
	// A full stripe: the older key goes, the new one is kept.
	st2 := NewBoundedMemoryStore(1, 0)
	var a, b string
	for i := 0; b == ""; i++ {
		k := string(rune('a' + i))
		switch {
		case a == "":
			a = k
		case st2.stripe(k) == st2.stripe(a):
			b = k
		}
	}
	st2.Set(a, "1", 0)
	st2.Set(b, "2", 0)
	if _, ok := st2.Get(b); !ok {
		t.Error("new key not stored")
	}
	if _, ok := st2.Get(a); ok {
		t.Error("least recently used key kept in a full stripe")
	}
}
