package ratelimit_test

import (
	"fmt"
	"time"

	"github.com/keystone-gateway/keystone/ratelimit"
)

// Two limits on one request: charged only if both allow it.
func ExampleLocal_Allow() {
	l := ratelimit.NewLocal(ratelimit.LocalConfig{MaxKeys: 1000})
	perIP := ratelimit.NewLimit(10, time.Second, 2)      // 10/s, 2 back to back
	perUser := ratelimit.NewLimit(100, time.Minute, 100) // 100/min
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range 3 {
		checks := []ratelimit.Check{
			{Limit: perIP, Key: []byte("{api}:per-ip:10.0.0.1")},
			{Limit: perUser, Key: []byte("{api}:per-user:alice")},
		}
		ok, retry := l.Allow(now, checks)
		fmt.Printf("request %d: allowed %v, retry after %v, per-user remaining %d\n",
			i+1, ok, time.Duration(retry), checks[1].Remaining)
	}
	// Output:
	// request 1: allowed true, retry after 0s, per-user remaining 99
	// request 2: allowed true, retry after 0s, per-user remaining 98
	// request 3: allowed false, retry after 100ms, per-user remaining 98
}
