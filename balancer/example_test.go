package balancer_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/keystone-gateway/keystone/balancer"
	"github.com/keystone-gateway/keystone/breaker"
)

func Example() {
	var ups []*balancer.Upstream
	for _, cfg := range []balancer.UpstreamConfig{
		{URL: "http://10.0.0.1:9001", Weight: 5},
		{URL: "http://10.0.0.2:9001"},
		{URL: "http://10.0.0.3:9001"},
	} {
		cfg.Breaker = breaker.New(breaker.Settings{FailureThreshold: 1, OpenTimeout: time.Minute})
		u, err := balancer.NewUpstream(cfg)
		if err != nil {
			panic(err)
		}
		ups = append(ups, u)
	}
	p, err := balancer.New(balancer.PolicyWeightedRoundRobin, ups)
	if err != nil {
		panic(err)
	}

	// nginx's smooth order for weights 5:1:1.
	var order []string
	for range 7 {
		order = append(order, ups[p.Pick(0)].Addr)
	}
	fmt.Println(strings.Join(order, " "))

	// A request fails on its upstream: the breaker opens, and the retry
	// excludes the upstream already tried.
	var tried balancer.Set
	i := p.Pick(tried)
	tok, _ := ups[i].Breaker.Allow()
	ups[i].Breaker.Done(tok, false)
	tried = tried.With(i)
	j := p.Pick(tried)
	fmt.Printf("retry on %s; %s available: %v\n", ups[j].Addr, ups[i].Addr, ups[i].Available())

	// Output:
	// 10.0.0.1:9001 10.0.0.1:9001 10.0.0.2:9001 10.0.0.1:9001 10.0.0.3:9001 10.0.0.1:9001 10.0.0.1:9001
	// retry on 10.0.0.2:9001; 10.0.0.1:9001 available: false
}
