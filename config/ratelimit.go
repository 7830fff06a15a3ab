package config

import (
	"fmt"
	"math"
	"net"
	"reflect"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Shared configures the state several Keystone instances share: rate
// limits and keystone.store.
type Shared struct {
	// Store is local (each instance keeps its own counters and script
	// store in memory) or redis (every instance uses the Redis below).
	// Default local.
	Store string `yaml:"store"`

	// Redis is the server used when Store is redis.
	Redis Redis `yaml:"redis"`

	// LocalMaxKeys bounds the keys kept in memory: rate-limit buckets, and
	// separately the keys of each tenant's local keystone.store. When full,
	// expired keys are evicted first, then the least recently used.
	// Default 1000000.
	LocalMaxKeys int `yaml:"local_max_keys"`

	// MaxValueSize caps one keystone.store value, locally and on Redis:
	// a longer one is a script error. Default 64KiB, at most
	// MaxStoreValueSize.
	MaxValueSize Size `yaml:"max_value_size"`
}

// MaxStoreValueSize is the largest shared.max_value_size: keystone.store
// holds counters and small state; larger values belong in a database.
const MaxStoreValueSize = 16 * MiB

// Redis configures the Redis client of shared.store: redis.
type Redis struct {
	// Addr is one Redis server, host:port. Exactly one of Addr and Addrs
	// is set when shared.store is redis.
	Addr string `yaml:"addr"`

	// Addrs are the seed nodes of a Redis Cluster, host:port each.
	Addrs []string `yaml:"addrs"`

	// Username and Password authenticate (Redis ACL; Username empty:
	// the default user).
	Username string `yaml:"username"`
	Password string `yaml:"password"`

	// DB is the database number (not with Addrs). Default 0.
	DB int `yaml:"db"`

	// TLS connects with TLS, verifying the server's certificate.
	TLS bool `yaml:"tls"`

	// Timeout bounds one Redis command, round trip included; past it the
	// command counts as failed and OnError decides. Default 50ms.
	Timeout Duration `yaml:"timeout"`

	// OnError is what a rate-limited request gets when Redis fails or is
	// unreachable: allow (fail open) or deny (fail closed, 503).
	// Default allow.
	OnError string `yaml:"on_error"`
}

// RateLimit is one GCRA limit of a tenant.
type RateLimit struct {
	// Name identifies the limit in the RateLimit headers, logs and Redis
	// keys. Required, unique in the tenant.
	Name string `yaml:"name"`

	// Key is what is counted: client_ip, consumer (the identity auth
	// accepted), tenant (the whole tenant), or "header:NAME" (a request
	// header's value). A request with an empty key counts under "_none".
	Key string `yaml:"key"`

	// Rate requests are allowed per Per. Required, at least 1.
	Rate int `yaml:"rate"`

	// Per is the period of Rate. Default 1s.
	Per Duration `yaml:"per"`

	// Burst is the bucket depth: how many requests may pass back to back
	// from an idle key. Default 1 (requests spaced at per/rate).
	Burst int `yaml:"burst"`

	// Mode is strict (shared.store redis: Redis decides every request) or
	// local_first (decided in memory, reconciled with Redis every Sync).
	// With shared.store local both decide in memory. Default strict.
	Mode string `yaml:"mode"`

	// Sync is how often a local_first limit reconciles with Redis.
	// Default 100ms.
	Sync Duration `yaml:"sync"`
}

// MaxConnsPerKey caps the requests of one key in flight at once, like
// nginx's limit_conn.
type MaxConnsPerKey struct {
	// Key is what is counted, as in RateLimit.Key.
	Key string `yaml:"key"`

	// Limit is the most requests of one key in flight; more get 429.
	// Required, at least 1.
	Limit int `yaml:"limit"`
}

// MaxRateLimits is the most rate_limits one tenant may have: all of them
// are charged together for a request.
const MaxRateLimits = 16

// HeaderKey returns the header name of a "header:NAME" key, and whether
// the key is one.
func HeaderKey(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, "header:")
	return name, ok
}

// DefaultShared returns the shared: section's defaults. The ratelimit
// package takes its zero fields from here.
func DefaultShared() Shared {
	return Shared{
		Store:        "local",
		Redis:        Redis{Timeout: Duration(50 * time.Millisecond), OnError: "allow"},
		LocalMaxKeys: 1000000,
		MaxValueSize: 64 * KiB,
	}
}

func defaultRateLimit() RateLimit {
	return RateLimit{Per: Duration(time.Second), Burst: 1, Mode: "strict", Sync: Duration(100 * time.Millisecond)}
}

// limitDefault returns the defaults of the rate-limit types, for
// newDefault.
func limitDefault(t reflect.Type) (any, bool) {
	switch t {
	case reflect.TypeFor[RateLimit]():
		return defaultRateLimit(), true
	}
	return nil, false
}

// redisAddr reports whether s is host:port with a port.
func redisAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	return err == nil && port != "" && validHostPort(s)
}

func validateShared(s *Shared, d *decoder) {
	oneOf(d, "shared.store", s.Store, "local", "redis")
	between(d, "shared.local_max_keys", s.LocalMaxKeys, 1, math.MaxInt32)
	if s.MaxValueSize < 1 || s.MaxValueSize > MaxStoreValueSize {
		d.errorAt("shared.max_value_size", "expected a size between 1B and %s, got %s", Size(MaxStoreValueSize), s.MaxValueSize)
	}
	r := &s.Redis
	oneOf(d, "shared.redis.on_error", r.OnError, "allow", "deny")
	positive(d, "shared.redis.timeout", r.Timeout)
	between(d, "shared.redis.db", r.DB, 0, 1<<16)
	if r.Addr != "" && !redisAddr(r.Addr) {
		d.errorAt("shared.redis.addr", "expected host:port, got %q", clip(r.Addr))
	}
	for i, a := range r.Addrs {
		if !redisAddr(a) {
			d.errorAt(fmt.Sprintf("shared.redis.addrs[%d]", i), "expected host:port, got %q", clip(a))
		}
	}
	switch {
	case r.Addr != "" && len(r.Addrs) > 0:
		d.errorAt("shared.redis.addrs", "expected either addr (one server) or addrs (a cluster), got both")
	case len(r.Addrs) > 0 && r.DB != 0:
		d.errorAt("shared.redis.db", "expected db 0 with addrs (Redis Cluster has one database), got %d", r.DB)
	case s.Store == "redis" && r.Addr == "" && len(r.Addrs) == 0:
		d.errorAt(d.pick("shared.redis", "shared.store"), "expected shared.redis.addr or shared.redis.addrs with store redis, got neither")
	}
}

// checkLimitKey validates a rate_limits or max_conns_per_key key.
func checkLimitKey(d *decoder, t *Tenant, p, key string) {
	if name, ok := HeaderKey(key); ok {
		if !httpguts.ValidHeaderFieldName(name) {
			d.errorAt(p, "expected \"header:\" followed by a header name, got %q", clip(key))
		}
		return
	}
	switch key {
	case "client_ip", "tenant":
	case "consumer":
		// The limit stage runs after the tenant's auth and before its
		// script: without a tenant auth block no request has a consumer.
		if t.Auth == nil {
			d.errorAt(p, "key \"consumer\" can never be set: the tenant has no auth block, so every request would count under \"_none\"")
		}
	default:
		msg := fmt.Sprintf("expected client_ip, consumer, tenant or \"header:NAME\", got %q", clip(key))
		if s := Suggest(key, []string{"client_ip", "consumer", "tenant"}); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		d.errorAt(p, "%s", msg)
	}
}

func validateLimits(d *decoder, t *Tenant, tp string) {
	if len(t.RateLimits) > MaxRateLimits {
		d.errorAt(tp+".rate_limits", "expected at most %d limits, got %d", MaxRateLimits, len(t.RateLimits))
	}
	names := make(map[string]int)
	for i := range t.RateLimits {
		r := &t.RateLimits[i]
		p := fmt.Sprintf("%s.rate_limits[%d]", tp, i)
		switch {
		case !d.isSet(p+".name") && r.Name == "":
			d.errorAt(p, "missing required field \"name\"")
		case !tenantNameRE.MatchString(r.Name):
			d.errorAt(p+".name", "expected a name of letters, digits, \"_\", \".\" and \"-\", starting with a letter or digit, at most 64 long, got %q", clip(r.Name))
		default:
			if j, dup := names[r.Name]; dup {
				d.errorAt(p+".name", "duplicate limit name %q (first at rate_limits[%d])", r.Name, j)
			}
			names[r.Name] = i
		}
		if !d.isSet(p+".key") && r.Key == "" {
			d.errorAt(p, "missing required field \"key\"")
		} else {
			checkLimitKey(d, t, p+".key", r.Key)
		}
		if !d.isSet(p + ".rate") {
			d.errorAt(p, "missing required field \"rate\"")
		} else {
			between(d, p+".rate", r.Rate, 1, math.MaxInt32)
		}
		positive(d, p+".per", r.Per)
		if r.Per > 0 && r.Rate > 0 && int64(r.Per)/int64(r.Rate) == 0 {
			d.errorAt(p+".per", "expected per/rate of at least 1ns, got %s for %d requests", r.Per, r.Rate)
		}
		between(d, p+".burst", r.Burst, 1, math.MaxInt32)
		oneOf(d, p+".mode", r.Mode, "strict", "local_first")
		positive(d, p+".sync", r.Sync)
	}
	if m := t.MaxConnsPerKey; m != nil {
		p := tp + ".max_conns_per_key"
		if !d.isSet(p+".key") && m.Key == "" {
			d.errorAt(p, "missing required field \"key\"")
		} else {
			checkLimitKey(d, t, p+".key", m.Key)
		}
		if !d.isSet(p + ".limit") {
			d.errorAt(p, "missing required field \"limit\"")
		} else {
			between(d, p+".limit", m.Limit, 1, math.MaxInt32)
		}
	}
}
