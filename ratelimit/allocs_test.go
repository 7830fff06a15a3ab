//go:build !race

package ratelimit

import (
	"testing"
	"time"
)

func TestLocalAllowAllocs(t *testing.T) {
	l := NewLocal(LocalConfig{})
	lim := NewLimit(1000, time.Second, 10)
	checks := []Check{{Limit: lim, Key: []byte("a")}, {Limit: lim, Key: []byte("b")}}
	l.Allow(0, checks)
	now := int64(0)
	if n := testing.AllocsPerRun(1000, func() {
		now += int64(time.Millisecond)
		l.Allow(now, checks)
	}); n != 0 {
		t.Errorf("Allow of existing keys: %v allocs, want 0", n)
	}
}
