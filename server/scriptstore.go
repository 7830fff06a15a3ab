package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/luavm"
	"github.com/keystone-gateway/keystone/ratelimit"
	"github.com/redis/go-redis/v9"
)

// scriptStore returns a tenant's keystone.store: on Redis with
// shared.store redis (every instance sees one store), else the tenant's
// bounded memory store, kept across reloads.
func (s *Server) scriptStore(cfg *config.Config, tenant string) luavm.Store {
	maxValue := int(cfg.Shared.MaxValueSize)
	if rc := s.limits.redisFor(cfg, s.log); rc != nil {
		return &redisStore{r: rc, prefix: "ks:store:{" + tenant + "}:", maxValue: maxValue, log: s.log}
	}
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	st, ok := s.stores[tenant]
	if !ok {
		st = luavm.NewBoundedMemoryStore(cfg.Shared.LocalMaxKeys, maxValue)
		s.stores[tenant] = st
	}
	// A reload may change the cap; the store and its keys stay.
	if b, ok := st.(*luavm.BoundedMemoryStore); ok {
		b.SetMaxValueSize(maxValue)
	}
	return st
}

// scriptStoreKeys is the number of keys of a tenant's memory store, or -1
// when it has none (Redis, or no script yet).
func (s *Server) scriptStoreKeys(tenant string) int {
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	if st, ok := s.stores[tenant].(*luavm.BoundedMemoryStore); ok {
		return st.Len()
	}
	return -1
}

// redisStore is keystone.store on Redis: keys under "ks:store:{tenant}:",
// TTLs as Redis expiry, every command under the Redis client's timeout
// and breaker. luavm.Store has no error for Get, Set and Delete: a failed
// Get reads as a missing key, a failed Set or Delete is logged.
type redisStore struct {
	r        *ratelimit.Redis
	prefix   string
	maxValue int // shared.max_value_size
	log      interface {
		Warn(msg string, args ...any)
	}
}

// incrScript is Store.Incr: a missing key is created with the TTL, an
// existing one keeps its expiry.
var incrScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  return tonumber(ARGV[1])
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
`)

// MaxValueSize implements luavm.ValueCapped.
func (st *redisStore) MaxValueSize() int { return st.maxValue }

func (st *redisStore) Get(key string) (string, bool) {
	var v string
	err := st.r.Do(st.prefix, func(ctx context.Context, c redis.UniversalClient) error {
		var err error
		v, err = c.Get(ctx, st.prefix+key).Result()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		st.warn("get", err)
		return "", false
	}
	return v, true
}

func (st *redisStore) Set(key, value string, ttl time.Duration) {
	err := st.r.Do(st.prefix, func(ctx context.Context, c redis.UniversalClient) error {
		return c.Set(ctx, st.prefix+key, value, ttl).Err()
	})
	if err != nil {
		st.warn("set", err)
	}
}

func (st *redisStore) Incr(key string, delta int64, ttl time.Duration) (int64, error) {
	var n int64
	err := st.r.Do(st.prefix, func(ctx context.Context, c redis.UniversalClient) error {
		var err error
		n, err = incrScript.Run(ctx, c, []string{st.prefix + key}, delta, ttl.Milliseconds()).Int64()
		return err
	})
	var reply redis.Error
	switch {
	case err == nil:
		return n, nil
	case errors.As(err, &reply) && strings.Contains(err.Error(), "not an integer"):
		return 0, luavm.ErrNotInteger
	case errors.As(err, &reply) && strings.Contains(err.Error(), "overflow"):
		return 0, luavm.ErrOverflow
	}
	st.warn("incr", err)
	return 0, errors.New("keystone.store: shared store unavailable")
}

func (st *redisStore) Delete(key string) {
	err := st.r.Do(st.prefix, func(ctx context.Context, c redis.UniversalClient) error {
		return c.Del(ctx, st.prefix+key).Err()
	})
	if err != nil {
		st.warn("delete", err)
	}
}

func (st *redisStore) warn(op string, err error) {
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		st.log.Warn("keystone.store on redis failed", "component", "ratelimit", "op", op, "error", err.Error())
	}
}

// scriptLimiter is keystone.limit.Allow of one tenant: buckets under
// "{tenant}:lua:KEY" in the store of the tenant's rate_limits.
type scriptLimiter struct {
	prefix string
	local  *ratelimit.Local
	redis  *ratelimit.Redis
}

func (s *Server) newScriptLimiter(cfg *config.Config, tenant string) *scriptLimiter {
	local, _ := s.limits.stores(cfg)
	return &scriptLimiter{prefix: "{" + tenant + "}:lua:", local: local, redis: s.limits.redisFor(cfg, s.log)}
}

func (l *scriptLimiter) Allow(key string, rate int64, per time.Duration, burst int64) (bool, int64, time.Duration, error) {
	c := []ratelimit.Check{{Limit: ratelimit.NewLimit(rate, per, burst), Key: []byte(l.prefix + key)}}
	var ok bool
	var retry int64
	if l.redis != nil {
		var err error
		if ok, retry, err = l.redis.Allow(c); err != nil {
			return false, 0, 0, errors.New("keystone.limit: shared store unavailable")
		}
	} else {
		ok, retry = l.local.Allow(time.Now().UnixNano(), c)
	}
	return ok, c[0].Remaining, time.Duration(retry), nil
}
