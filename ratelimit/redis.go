package ratelimit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/breaker"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/internal/redisslot"
	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is returned while the Redis client's breaker is open: Redis
// failed repeatedly and is not asked again until the breaker probes it.
var ErrUnavailable = errors.New("ratelimit: redis unavailable (breaker open)")

// gcraScript is GCRA over several keys in one atomic step, the same
// algorithm as Local.Allow, on Redis's clock (TIME) so every instance
// agrees on "now". Times are microseconds, which a Lua number (a double)
// holds exactly until the year 2255.
//
// KEYS are the buckets; ARGV[2i-1] and ARGV[2i] are key i's interval and
// tolerance. Every key must allow the request, then every key is charged
// one. Each key is stored as its TAT and expires when its bucket is full
// again, so idle keys cost nothing.
//
// It returns {allowed, wait, reset_1, ..., reset_n}: allowed 1 or 0, wait
// the µs until every key would allow, reset_i the µs until key i's bucket
// is full (the stored TAT minus now).
const gcraScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local olds, news = {}, {}
local wait = 0
for i = 1, n do
  local iv = tonumber(ARGV[2*i-1])
  local tol = tonumber(ARGV[2*i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  olds[i] = tat
  news[i] = tat + iv
  local w = news[i] - tol - now
  if w > wait then wait = w end
end
if wait <= 0 then
  for i = 1, n do
    local ttl = math.max(math.ceil((news[i] - now) / 1000), 0) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', ttl)
  end
end
local out = {0, 0}
if wait <= 0 then out[1] = 1 else out[2] = wait end
for i = 1, n do
  if wait <= 0 then out[2+i] = news[i] - now else out[2+i] = olds[i] - now end
end
return out
`

// RedisConfig configures a Redis store.
type RedisConfig struct {
	// Addrs is one server, or the seed nodes of a Redis Cluster when
	// Cluster is set.
	Addrs    []string
	Cluster  bool
	Username string
	Password string
	DB       int
	// TLS connects with TLS (server name from the address).
	TLS bool
	// Timeout bounds one command: dial, write and read. If zero,
	// shared.redis.timeout's default (config.DefaultShared).
	Timeout time.Duration
	// Logger receives breaker state changes. If nil, slog.Default().
	Logger *slog.Logger
}

// Redis is GCRA on a Redis server shared by several gateways, behind a
// circuit breaker: after 3 consecutive failures (or half of 20 commands in
// 10s) it fails fast with ErrUnavailable for 1s, then lets one probe
// through, so a dead Redis costs a request nothing instead of Timeout.
// On a Redis Cluster there is one breaker per hash slot: a dead master
// fails fast for the keys it serves while the other masters' keys are
// still asked (one breaker for the client would either not open, the live
// masters' successes outnumbering the failures, so every request of a key
// on the dead master waited Timeout; or open for every key).
// Safe for concurrent use; Close it when done.
type Redis struct {
	c       redis.UniversalClient
	timeout time.Duration
	script  *redis.Script
	log     *slog.Logger

	// br is the breaker of a single server; nil on a cluster.
	br *breaker.Breaker
	// slots are a cluster's breakers by hash slot, each made by the
	// first command on its slot (CompareAndSwap from nil) and never
	// replaced; nil for a single server.
	slots []atomic.Pointer[breaker.Breaker]

	// errors counts failed commands, fastFails requests answered by the
	// open breaker without asking Redis. Written by Allow and Charge,
	// read by Stats.
	errors    atomic.Uint64
	fastFails atomic.Uint64
}

// clientLog routes go-redis's own messages (dial failures, pool events),
// which it prints as plain text to stderr by default, into the slog logger
// at debug level: failures are counted and the breaker's transitions
// logged at warn. go-redis has one process-wide logger, so the first
// NewRedis sets it.
var clientLog sync.Once

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "ratelimit")
}

// NewRedis returns a Redis store. It does not connect: connections are
// made as commands need them, so a gateway starts while Redis is down.
func NewRedis(c RedisConfig) *Redis {
	if c.Timeout <= 0 {
		c.Timeout = config.DefaultShared().Redis.Timeout.D()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	clientLog.Do(func() { redis.SetLogger(redisLogger{c.Logger}) })
	var tlsConf *tls.Config
	if c.TLS {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	var client redis.UniversalClient
	if c.Cluster {
		client = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:        c.Addrs,
			Username:     c.Username,
			Password:     c.Password,
			Protocol:     2,
			DialTimeout:  c.Timeout,
			ReadTimeout:  c.Timeout,
			WriteTimeout: c.Timeout,
			PoolTimeout:  c.Timeout,
			// A retry would add a timeout to the request; the
			// breaker decides when Redis is tried again.
			MaxRetries:            -1,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
			TLSConfig:             tlsConf,
		})
	} else {
		client = redis.NewClient(&redis.Options{
			Addr:                  c.Addrs[0],
			Username:              c.Username,
			Password:              c.Password,
			DB:                    c.DB,
			Protocol:              2,
			DialTimeout:           c.Timeout,
			DialerRetries:         1,
			ReadTimeout:           c.Timeout,
			WriteTimeout:          c.Timeout,
			PoolTimeout:           c.Timeout,
			MaxRetries:            -1,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
			TLSConfig:             tlsConf,
		})
	}
	r := &Redis{c: client, timeout: c.Timeout, script: redis.NewScript(gcraScript), log: c.Logger}
	if c.Cluster {
		r.slots = make([]atomic.Pointer[breaker.Breaker], redisslot.Count)
	} else {
		r.br = r.newBreaker(r.log)
	}
	return r
}

func (r *Redis) newBreaker(log *slog.Logger) *breaker.Breaker {
	return breaker.New(breaker.Settings{
		FailureThreshold:    3,
		FailureRatio:        0.5,
		MinRequests:         20,
		Window:              10 * time.Second,
		OpenTimeout:         time.Second,
		HalfOpenMaxRequests: 1,
		OnStateChange: func(from, to breaker.State) {
			log.Warn("redis breaker state changed", "component", "ratelimit", "from", from.String(), "to", to.String())
		},
	})
}

// breakerFor returns the breaker guarding the server of key: the one
// breaker of a single server, or the breaker of key's hash slot.
func (r *Redis) breakerFor(key string) *breaker.Breaker {
	if r.slots == nil {
		return r.br
	}
	slot := redisslot.Of(key)
	p := &r.slots[slot]
	if b := p.Load(); b != nil {
		return b
	}
	b := r.newBreaker(r.log.With("slot", slot))
	if p.CompareAndSwap(nil, b) {
		return b
	}
	return p.Load()
}

// Client returns the underlying client, for keystone.store.
func (r *Redis) Client() redis.UniversalClient { return r.c }

// Close closes the client's connections.
func (r *Redis) Close() error { return r.c.Close() }

// RedisStats are the counters shown in admin.
type RedisStats struct {
	// Breaker is closed, open or half-open.
	Breaker string `json:"breaker"`
	// Errors are failed Redis commands (timeouts, refused connections).
	Errors uint64 `json:"errors"`
	// FastFails are commands not sent because the breaker was open.
	FastFails uint64 `json:"fast_fails"`
}

// Stats returns the client's counters. On a cluster Breaker is the worst
// state of any slot's breaker: open if one is open.
func (r *Redis) Stats() RedisStats {
	st := RedisStats{Breaker: breaker.StateClosed.String(), Errors: r.errors.Load(), FastFails: r.fastFails.Load()}
	if r.slots == nil {
		st.Breaker = r.br.State().String()
		return st
	}
	worst := breaker.StateClosed
	for i := range r.slots {
		if b := r.slots[i].Load(); b != nil {
			switch s := b.State(); {
			case s == breaker.StateOpen:
				worst = s
			case s == breaker.StateHalfOpen && worst == breaker.StateClosed:
				worst = s
			}
		}
	}
	st.Breaker = worst.String()
	return st
}

// BreakerFor returns the state of the breaker guarding key's server (its
// slot's on a cluster), for admin.
func (r *Redis) BreakerFor(key string) string {
	if r.slots != nil && r.slots[redisslot.Of(key)].Load() == nil {
		return breaker.StateClosed.String()
	}
	return r.breakerFor(key).State().String()
}

// Do runs fn as one command (or pipeline) under the breaker of key's
// server and the timeout: ErrUnavailable while the breaker is open, fn's
// error otherwise. Every key fn touches must be in key's hash slot on a
// cluster (the breaker judges that slot's master). redis.Nil (a missing
// key) and error replies are returned but count as Redis answering.
func (r *Redis) Do(key string, fn func(ctx context.Context, c redis.UniversalClient) error) error {
	bt := r.allow(key)
	if !bt.ok {
		return ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	err := fn(ctx, r.c)
	if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil && !isTimeout(err) {
		// A pooled connection that died with a restarted Redis fails
		// at once (EOF, reset): try once more, on a fresh connection,
		// within the same deadline.
		err = fn(ctx, r.c)
	}
	cancel()
	r.done(bt, err)
	return err
}

// breakerTok is a command admitted (or not) by the breaker of its server.
type breakerTok struct {
	br  *breaker.Breaker
	tok breaker.Token
	ok  bool
}

// allow asks the breaker of key's server; a refusal is counted as a fast
// fail.
func (r *Redis) allow(key string) breakerTok {
	br := r.breakerFor(key)
	tok, ok := br.Allow()
	if !ok {
		r.fastFails.Add(1)
	}
	return breakerTok{br, tok, ok}
}

// done reports the outcome of a command admitted by allow. An error reply
// (WRONGTYPE, "not an integer") is Redis answering: only a command that
// got no answer counts against the breaker.
func (r *Redis) done(bt breakerTok, err error) {
	var reply redis.Error
	failed := err != nil && !errors.Is(err, redis.Nil) && !errors.As(err, &reply)
	if failed {
		r.errors.Add(1)
	}
	bt.br.Done(bt.tok, !failed)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// RedisKey is the Redis key of a bucket: "ks:rl:" and the check's key.
// Gateways build check keys as "{tenant}:limit:value", so in a Redis
// Cluster every bucket of a tenant is in one hash slot and one script call
// may touch them all.
func RedisKey(key []byte) string { return "ks:rl:" + string(key) }

// Allow is Local.Allow on Redis: one EVALSHA for every check (EVAL once
// after Redis restarted without the script). The error is ErrUnavailable,
// or the command's error; checks are then left unreported.
func (r *Redis) Allow(checks []Check) (allowed bool, retryAfter int64, err error) {
	if len(checks) > MaxChecks {
		return false, 0, ErrTooManyChecks
	}
	if len(checks) == 0 {
		return true, 0, nil
	}
	keys := make([]string, len(checks))
	args := make([]any, 0, 2*len(checks))
	for i := range checks {
		c := &checks[i]
		keys[i] = RedisKey(c.Key)
		iv := max(c.Limit.interval/1000, 1)
		args = append(args, iv, c.Limit.Burst*iv)
	}
	var res []int64
	err = r.Do(keys[0], func(ctx context.Context, c redis.UniversalClient) error {
		v, err := r.script.Run(ctx, c, keys, args...).Int64Slice()
		res = v
		return err
	})
	if err != nil {
		return false, 0, err
	}
	if len(res) != 2+len(checks) {
		return false, 0, fmt.Errorf("ratelimit: script answered %d values, want %d", len(res), 2+len(checks))
	}
	allowed = res[0] == 1
	for i := range checks {
		c := &checks[i]
		reset := res[2+i] * 1000
		c.Reset = time.Duration(reset)
		c.Remaining = max((c.Limit.tolerance-reset)/c.Limit.interval, 0)
	}
	return allowed, res[1] * 1000, nil
}
