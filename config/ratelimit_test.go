package config_test

import (
	"slices"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

func TestRateLimitDefaults(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: "http://127.0.0.1:1"}]
    rate_limits:
      - {name: per-ip, key: client_ip, rate: 100}
`)
	if got, want := c.Shared, (config.Shared{Store: "local", LocalMaxKeys: 1000000, MaxValueSize: 64 * config.KiB,
		Redis: config.Redis{Timeout: config.Duration(50 * time.Millisecond), OnError: "allow"}}); !equalShared(got, want) {
		t.Errorf("shared defaults %+v, want %+v", got, want)
	}
	want := config.RateLimit{Name: "per-ip", Key: "client_ip", Rate: 100, Per: config.Duration(time.Second),
		Burst: 1, Mode: "strict", Sync: config.Duration(100 * time.Millisecond)}
	if got := c.Tenants[0].RateLimits[0]; got != want {
		t.Errorf("limit defaults %+v, want %+v", got, want)
	}
	if c.Tenants[0].MaxConnsPerKey != nil {
		t.Error("max_conns_per_key set although absent")
	}
}

func equalShared(a, b config.Shared) bool {
	return a.Store == b.Store && a.LocalMaxKeys == b.LocalMaxKeys && a.MaxValueSize == b.MaxValueSize && a.Redis.Addr == b.Redis.Addr &&
		slices.Equal(a.Redis.Addrs, b.Redis.Addrs) && a.Redis.Timeout == b.Redis.Timeout && a.Redis.OnError == b.Redis.OnError
}

func TestRateLimitContractExampleLoads(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
shared:
  store: redis
  redis:
    addr: 127.0.0.1:6379
    username: ""
    password: secret
    db: 0
    tls: false
    timeout: 50ms
    on_error: deny
tenants:
  - name: api
    path_prefix: /
    upstreams: [{url: "http://127.0.0.1:1"}]
    auth:
      api_keys:
        keys: [{key: k1-0123456789abcdef, consumer: alice}]
    rate_limits:
      - {name: per-ip, key: client_ip, rate: 100, per: 1s, burst: 50}
      - {name: per-consumer, key: consumer, rate: 1000, per: 1m}
      - {name: per-header, key: "header:X-Team", rate: 10, per: 1s}
      - {name: whole-tenant, key: tenant, rate: 5000, per: 1s, mode: local_first}
    max_conns_per_key: {key: client_ip, limit: 100}
`)
	tc := c.Tenants[0]
	if len(tc.RateLimits) != 4 || tc.RateLimits[3].Mode != "local_first" || tc.RateLimits[1].Per != config.Duration(time.Minute) {
		t.Errorf("rate_limits decoded as %+v", tc.RateLimits)
	}
	if tc.MaxConnsPerKey == nil || *tc.MaxConnsPerKey != (config.MaxConnsPerKey{Key: "client_ip", Limit: 100}) {
		t.Errorf("max_conns_per_key decoded as %+v", tc.MaxConnsPerKey)
	}
	if c.Shared.Redis.OnError != "deny" || c.Shared.Redis.Password != "secret" {
		t.Errorf("shared.redis decoded as %+v", c.Shared.Redis)
	}
}

func TestRateLimitErrors(t *testing.T) {
	t.Parallel()
	const up = "    path_prefix: /\n    upstreams: [{url: \"http://127.0.0.1:1\"}]\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"an unknown store", "shared:\n  store: memcached\n" + okTenant, []string{
			`x.yaml:2:10: shared.store: expected local or redis, got "memcached"`}},
		{"redis without an address", "shared:\n  store: redis\n" + okTenant, []string{
			`x.yaml:2:10: shared.store: expected shared.redis.addr or shared.redis.addrs with store redis, got neither`}},
		{"addr and addrs", "shared:\n  redis:\n    addr: a:1\n    addrs: [b:1]\n" + okTenant, []string{
			`x.yaml:4:12: shared.redis.addrs: expected either addr (one server) or addrs (a cluster), got both`}},
		{"a bad address and on_error", "shared:\n  redis:\n    addr: nohost\n    on_error: fail\n" + okTenant, []string{
			`x.yaml:3:11: shared.redis.addr: expected host:port, got "nohost"`,
			`x.yaml:4:15: shared.redis.on_error: expected allow or deny, got "fail"`}},
		{"zero local_max_keys", "shared:\n  local_max_keys: 0\n" + okTenant, []string{
			`x.yaml:2:19: shared.local_max_keys: expected at least 1, got 0`}},
		{"a zero max_value_size", "shared:\n  max_value_size: 0\n" + okTenant, []string{
			`x.yaml:2:19: shared.max_value_size: expected a size between 1B and 16MiB, got 0B`}},
		{"a max_value_size past 16MiB", "shared:\n  max_value_size: 17MiB\n" + okTenant, []string{
			`x.yaml:2:19: shared.max_value_size: expected a size between 1B and 16MiB, got 17MiB`}},
		{"a limit without key and rate", "tenants:\n  - name: a\n" + up + "    rate_limits:\n      - {name: l}\n", []string{
			`x.yaml:6:9: tenants[0].rate_limits[0]: missing required field "key"`,
			`x.yaml:6:9: tenants[0].rate_limits[0]: missing required field "rate"`}},
		{"an unknown key kind", "tenants:\n  - name: a\n" + up + "    rate_limits:\n      - {name: l, key: client-ip, rate: 1}\n", []string{
			`x.yaml:6:24: tenants[0].rate_limits[0].key: expected client_ip, consumer, tenant or "header:NAME", got "client-ip" (did you mean "client_ip"?)`}},
		{"a bad header key", "tenants:\n  - name: a\n" + up + "    rate_limits:\n      - {name: l, key: \"header:X Team\", rate: 1}\n", []string{
			`x.yaml:6:24: tenants[0].rate_limits[0].key: expected "header:" followed by a header name, got "header:X Team"`}},
		{"consumer without auth", "tenants:\n  - name: a\n" + up + "    rate_limits:\n      - {name: l, key: consumer, rate: 1}\n", []string{
			`x.yaml:6:24: tenants[0].rate_limits[0].key: key "consumer" can never be set: the tenant has no auth block, so every request would count under "_none"`}},
		{"bad numbers and mode", "tenants:\n  - name: a\n" + up + "    rate_limits:\n      - {name: l, key: tenant, rate: 0, burst: 0, per: 0s, mode: loose}\n", []string{
			`x.yaml:6:38: tenants[0].rate_limits[0].rate: expected at least 1, got 0`,
			`x.yaml:6:48: tenants[0].rate_limits[0].burst: expected at least 1, got 0`,
			`x.yaml:6:56: tenants[0].rate_limits[0].per: expected a duration greater than 0, got 0s`,
			`x.yaml:6:66: tenants[0].rate_limits[0].mode: expected strict or local_first, got "loose"`}},
		{"a duplicate limit name", "tenants:\n  - name: a\n" + up + "    rate_limits:\n      - {name: l, key: tenant, rate: 1}\n      - {name: l, key: tenant, rate: 2}\n", []string{
			`x.yaml:7:16: tenants[0].rate_limits[1].name: duplicate limit name "l" (first at rate_limits[0])`}},
		{"max_conns_per_key without limit", "tenants:\n  - name: a\n" + up + "    max_conns_per_key: {key: tenant}\n", []string{
			`x.yaml:5:24: tenants[0].max_conns_per_key: missing required field "limit"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(t, tt.yaml)
			if got := errorLines(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", join(got), join(tt.want))
			}
		})
	}
}

func join(s []string) string {
	out := ""
	for _, l := range s {
		out += l + "\n"
	}
	return out
}
