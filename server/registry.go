package server

import (
	"fmt"
	"sort"
	"sync"

	"github.com/keystone-gateway/keystone/config"
)

// registry owns the state that outlives a snapshot: each upstream's
// balancer.Upstream (health, breaker, ejection, in-flight count, drain
// flag) with its keep-alive connection pools, the health checker of each
// upstream and each tenant's retry budget. Snapshots hold references to its
// entries; it is owned by the Server (caddy's hosts.go upstream pool, with a
// reference count per snapshot instead of per config).
//
// A build looks every entry up by key (acquire) and creates the missing
// ones, so an upstream whose tenant, URL and connection settings are
// unchanged keeps its state and connections across a reload. An entry is
// closed when the last snapshot holding it is released: a removed
// upstream's idle connections are closed and its checker stopped only once
// the old snapshot has drained.
//
// Methods are safe for concurrent use; none is called on the request path.
type registry struct {
	mu      sync.Mutex
	entries map[string]*regEntry
}

// regEntry is one registry entry: an *upstream, a *balancer.Checker or a
// *retryBudget, counted by the snapshots that hold it.
type regEntry struct {
	key   string
	val   any
	refs  int
	close func() // called once, when refs drops to 0; may be nil
}

func newRegistry() *registry { return &registry{entries: make(map[string]*regEntry)} }

// acquire returns the value under key, building it the first time, and
// counts one more reference held by the caller's snapshot, whose held list
// gets the key. build returns the value and what closes it (may be nil).
func (r *registry) acquire(held *[]string, key string, build func() (any, func(), error)) (any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.entries[key]; ok {
		e.refs++
		*held = append(*held, key)
		return e.val, nil
	}
	v, closeFn, err := build()
	if err != nil {
		return nil, err
	}
	r.entries[key] = &regEntry{key: key, val: v, refs: 1, close: closeFn}
	*held = append(*held, key)
	return v, nil
}

// release drops one reference for each key (a snapshot's held list) and
// closes the entries no snapshot holds any more, outside the lock: a
// checker's Stop waits for its goroutines.
func (r *registry) release(keys []string) {
	var closing []func()
	r.mu.Lock()
	for _, k := range keys {
		e, ok := r.entries[k]
		if !ok {
			continue
		}
		if e.refs--; e.refs == 0 {
			delete(r.entries, k)
			if e.close != nil {
				closing = append(closing, e.close)
			}
		}
	}
	r.mu.Unlock()
	for _, c := range closing {
		c()
	}
}

// len returns the number of live entries, for tests.
func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// upstreams returns the live upstream entries of tenant, sorted by URL.
func (r *registry) upstreams(tenant string) []*upstream {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*upstream
	for _, e := range r.entries {
		if up, ok := e.val.(*upstream); ok && up.tenant == tenant {
			out = append(out, up)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URL < out[j].URL })
	return out
}

// upstreamKey keys an upstream's state: tenant, URL as configured, and
// every setting that shapes its balancer.Upstream or its HostClients. A
// change of any of them (weight, breaker or outlier settings, connect
// timeout, pool sizes, response body handling) builds a new entry: those
// are fixed at construction (HostClient fields must not change once it is
// in use). Health checks and the retry budget are keyed apart, so changing
// them keeps the upstream's state.
func upstreamKey(tc *config.Tenant, uc config.Upstream) string {
	var cb, od string
	if tc.CircuitBreaker != nil {
		cb = fmt.Sprintf("%+v", *tc.CircuitBreaker)
	}
	if tc.OutlierDetection != nil {
		od = fmt.Sprintf("%+v", *tc.OutlierDetection)
	}
	return fmt.Sprintf("up\x00%s\x00%s\x00w=%d\x00cb=%s\x00od=%s\x00connect=%d\x00pool=%+v\x00body=%d/%t",
		tc.Name, uc.URL, uc.Weight, cb, od, tc.Timeouts.Connect, tc.Pool, tc.MaxResponseBody, tc.StreamResponseBody)
}

// checkerKey keys the active health checker of one upstream entry with one
// health_check block: an unchanged block keeps its checker (and its
// goroutine) across reloads; a changed one starts a new checker, which
// takes the upstream over before the old one stops (balancer.Checker's
// ownership rules), so checking has no gap and health is not reset.
func checkerKey(upKey string, hc *config.HealthCheck) string {
	return fmt.Sprintf("hc\x00%s\x00%+v", upKey, *hc)
}

// budgetKey keys a tenant's retry budget: it carries over a reload unless
// the tenant's budget_ratio changes.
func budgetKey(tenant string, ratio float64) string {
	return fmt.Sprintf("budget\x00%s\x00%g", tenant, ratio)
}
