package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keystone-gateway/keystone/internal/redisslot"
	"github.com/redis/go-redis/v9"
)

// syncScript is the local_first reconciliation of many keys in one atomic
// step, on Redis's clock. KEYS come in pairs: a bucket (its TAT, as in
// gcraScript) and the bucket's members, a sorted set of the instances
// that synced it, scored by when. ARGV[1] is this instance's id; then for
// pair i, ARGV[4i-2..4i+1] are the interval (µs), the count n of requests
// allowed here since the last sync, the age (µs) of the oldest of them,
// and the member lifetime (µs). The count is charged starting at now-age,
// as those requests were (charging them at now would forget the time
// since), the instance is recorded as a member now, members not seen for
// a lifetime are dropped. It returns, per pair, the bucket's TAT minus now
// (negative: the bucket is full) and the number of members.
const syncScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  local a = 4 * (i - 1) + 1
  local iv, n, age, live = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local bucket, members = KEYS[2*i-1], KEYS[2*i]
  local tat = tonumber(redis.call('GET', bucket) or '0') or 0
  if n > 0 then
    if tat < now - age then tat = now - age end
    tat = tat + n * iv
    local ttl = math.max(math.ceil((tat - now) / 1000), 0) + 1
    redis.call('SET', bucket, string.format('%.0f', tat), 'PX', ttl)
  end
  redis.call('ZADD', members, now, id)
  redis.call('ZREMRANGEBYSCORE', members, '-inf', now - live)
  redis.call('PEXPIRE', members, math.ceil(live / 1000))
  if tat < now then tat = now end
  out[2*i-1] = tat - now
  out[2*i] = redis.call('ZCARD', members)
end
return out
`

// syncBatch is the most keys one EVALSHA of syncScript carries: bounds
// the time one script holds Redis (about 10µs a key).
const syncBatch = 128

// SyncKey is one local_first key reconciled by Redis.Sync: Limit, Key, N,
// Age and Lifetime are inputs, Reset, Members and Err outputs.
type SyncKey struct {
	Limit Limit
	Key   []byte
	// N requests were allowed here since the last sync, the oldest Age
	// ago.
	N   int64
	Age time.Duration
	// Lifetime is how long this instance counts as a member of the key
	// after this sync.
	Lifetime time.Duration

	// Reset is the key's TAT minus now on Redis's clock after the charge
	// (0 when its bucket is full): every instance's charges.
	Reset time.Duration
	// Members is the number of instances that synced the key within
	// their lifetime, this one included.
	Members int64
	// Err is ErrUnavailable (the breaker of the key's server is open) or
	// the command's error; Reset and Members are then unset.
	Err error
}

// MembersKey is the Redis key of a bucket's members: "ks:in:" and the
// check's key, in the bucket's hash slot (the same "{tenant}" tag) and
// never equal to a bucket's key.
func MembersKey(key []byte) string { return "ks:in:" + string(key) }

// Sync reconciles keys with Redis in one pipelined round trip: one
// EVALSHA of up to 128 keys per hash slot (a cluster's pipeline goes to
// every master at once; a single server gets every key in one script
// call per 128). id names this instance among the members. Each key's Err
// says whether its part was answered. Keys whose server's breaker is open
// are not sent.
func (r *Redis) Sync(id string, keys []SyncKey) {
	type group struct {
		first, n int // keys[first:first+n] after sorting by slot
		cmd      *redis.Cmd
		tok      breakerTok
	}
	if len(keys) == 0 {
		return
	}
	// Group by slot on a cluster; a single server takes any keys
	// together.
	if r.slots != nil {
		sortBySlot(keys)
	}
	var groups []group
	for i := 0; i < len(keys); {
		j := i + 1
		for j < len(keys) && j-i < syncBatch && (r.slots == nil || redisslot.Of(string(keys[j].Key)) == redisslot.Of(string(keys[i].Key))) {
			j++
		}
		groups = append(groups, group{first: i, n: j - i})
		i = j
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	send := func(eval func(pipe redis.Pipeliner, keys []string, args []any) *redis.Cmd, retry func(*group) bool) {
		pipe := r.c.Pipeline()
		sent := 0
		for gi := range groups {
			g := &groups[gi]
			if !retry(g) {
				continue
			}
			ks := keys[g.first : g.first+g.n]
			names := make([]string, 0, 2*len(ks))
			args := make([]any, 1, 1+4*len(ks))
			args[0] = id
			for _, k := range ks {
				names = append(names, RedisKey(k.Key), MembersKey(k.Key))
				args = append(args, max(k.Limit.interval/1000, 1), max(k.N, 0), max(k.Age.Microseconds(), 0), max(k.Lifetime.Microseconds(), 1))
			}
			g.cmd = eval(pipe, names, args)
			sent++
		}
		if sent > 0 {
			_, _ = pipe.Exec(ctx)
		}
	}
	for gi := range groups {
		g := &groups[gi]
		g.tok = r.allow(string(keys[g.first].Key))
		if !g.tok.ok {
			for k := range keys[g.first : g.first+g.n] {
				keys[g.first+k].Err = ErrUnavailable
			}
		}
	}
	send(func(pipe redis.Pipeliner, k []string, a []any) *redis.Cmd {
		return syncLua.EvalSha(ctx, pipe, k, a...)
	}, func(g *group) bool { return g.tok.ok })
	// A Redis that restarted has lost the script: EVAL it (which caches
	// it again) for the groups that said NOSCRIPT, in a second round trip.
	send(func(pipe redis.Pipeliner, k []string, a []any) *redis.Cmd {
		return syncLua.Eval(ctx, pipe, k, a...)
	}, func(g *group) bool {
		return g.tok.ok && g.cmd != nil && g.cmd.Err() != nil && strings.HasPrefix(g.cmd.Err().Error(), "NOSCRIPT")
	})
	for gi := range groups {
		g := &groups[gi]
		if !g.tok.ok {
			continue
		}
		res, err := g.cmd.Int64Slice()
		if err == nil && len(res) != 2*g.n {
			err = fmt.Errorf("ratelimit: sync script answered %d values, want %d", len(res), 2*g.n)
		}
		r.done(g.tok, err)
		for k := range g.n {
			sk := &keys[g.first+k]
			if sk.Err = err; err == nil {
				sk.Reset = time.Duration(res[2*k] * 1000)
				sk.Members = res[2*k+1]
			}
		}
	}
}

var syncLua = redis.NewScript(syncScript)

// sortBySlot orders keys by hash slot (insertion sort: a sync batch is
// small and mostly one tenant's keys).
func sortBySlot(keys []SyncKey) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && redisslot.Of(string(keys[j].Key)) < redisslot.Of(string(keys[j-1].Key)); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}
