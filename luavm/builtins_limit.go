package luavm

import (
	"fmt"
	"math"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Limiter is the GCRA store behind keystone.limit.Allow: the same one the
// tenant's rate_limits use (memory, or Redis with shared.store: redis).
// Implementations must be safe for concurrent use.
type Limiter interface {
	// Allow charges one request to key under "rate per per, bucket depth
	// burst" if the limit allows it. remaining is how many more requests
	// the key may make now; retryAfter how long until it may make one
	// (0 when allowed). A store that cannot answer returns an error.
	Allow(key string, rate int64, per time.Duration, burst int64) (allowed bool, remaining int64, retryAfter time.Duration, err error)
}

// MaxStoreKey caps a keystone.store key (and a keystone.limit.Allow key) in
// bytes: a script that stores request data cannot make one key large.
const MaxStoreKey = 1 << 10

// checkStoreSize raises a script error for a key past MaxStoreKey or a
// value past the store's cap (ValueCapped; config's shared.max_value_size).
func (v *vm) checkStoreSize(L *lua.LState, key, value string) {
	if len(key) > MaxStoreKey {
		L.RaiseError("keystone.store: key of %d bytes is larger than the %d-byte limit", len(key), MaxStoreKey)
	}
	if c, ok := v.s.store.(ValueCapped); ok {
		if limit := c.MaxValueSize(); limit > 0 && len(value) > limit {
			L.RaiseError("keystone.store: value of %d bytes is larger than the %d-byte limit (shared.max_value_size)", len(value), limit)
		}
	}
}

// limitExports are the functions of keystone.limit.
var limitExports = map[string]func(v *vm, L *lua.LState) int{
	"Allow": (*vm).limitAllow,
}

// limitAllow is keystone.limit.Allow(key, rate, per, burst) → allowed,
// remaining, retry_after (seconds, a float). per is seconds (a number) or
// a duration string ("1s", "1m"); burst defaults to 1. When the store does
// not answer it returns nil and the error text, as keystone.store.Incr.
func (v *vm) limitAllow(L *lua.LState) int {
	key := L.CheckString(1)
	if len(key) > MaxStoreKey {
		L.ArgError(1, fmt.Sprintf("key longer than %d bytes", MaxStoreKey))
	}
	rate := L.CheckNumber(2)
	if rate < 1 || rate > math.MaxInt32 || rate != lua.LNumber(int64(rate)) {
		L.ArgError(2, "rate must be an integer of at least 1")
	}
	var per time.Duration
	switch p := L.Get(3).(type) {
	case lua.LNumber:
		if p <= 0 || p > 1e9 || math.IsNaN(float64(p)) {
			L.ArgError(3, "per must be a positive number of seconds or a duration such as \"1s\"")
		}
		per = time.Duration(float64(p) * float64(time.Second))
	case lua.LString:
		d, err := time.ParseDuration(string(p))
		if err != nil || d <= 0 {
			L.ArgError(3, fmt.Sprintf("per must be a positive duration such as \"1s\", got %q", string(p)))
		}
		per = d
	default:
		L.ArgError(3, "per must be a positive number of seconds or a duration such as \"1s\"")
	}
	burst := L.OptNumber(4, 1)
	if burst < 1 || burst > math.MaxInt32 || burst != lua.LNumber(int64(burst)) {
		L.ArgError(4, "burst must be an integer of at least 1")
	}
	if v.s.opts.Limiter == nil {
		L.RaiseError("keystone.limit.Allow: no limiter configured for this script")
	}
	ok, remaining, retry, err := v.s.opts.Limiter.Allow(key, int64(rate), per, int64(burst))
	if err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString(err.Error()))
		return 2
	}
	L.Push(lua.LBool(ok))
	L.Push(lua.LNumber(remaining))
	L.Push(lua.LNumber(retry.Seconds()))
	return 3
}
