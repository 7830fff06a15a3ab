package breaker_test

import (
	"fmt"
	"time"

	"github.com/keystone-gateway/keystone/breaker"
)

func Example() {
	var now int64 // an injected clock, in nanoseconds
	b := breaker.New(breaker.Settings{
		FailureThreshold: 2,
		OpenTimeout:      10 * time.Second,
		Clock:            func() int64 { return now },
		OnStateChange: func(from, to breaker.State) {
			fmt.Printf("%v -> %v\n", from, to)
		},
	})

	// Each request: Allow, forward, report the outcome with the token.
	for range 2 {
		tok, _ := b.Allow()
		b.Done(tok, false) // the upstream failed
	}
	_, ok := b.Allow()
	fmt.Println("allowed:", ok, "retry after:", b.RetryAfter())

	now += int64(10 * time.Second)
	probe, ok := b.Allow()
	fmt.Println("probe allowed:", ok)
	b.Done(probe, true)
	fmt.Println("state:", b.State())

	// Output:
	// closed -> open
	// allowed: false retry after: 10s
	// open -> half_open
	// probe allowed: true
	// half_open -> closed
	// state: closed
}
