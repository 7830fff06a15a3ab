package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/ratelimit"
	"github.com/valyala/fasthttp"
)

// Error codes of the rate-limit stage.
const (
	codeRateLimited      = "rate_limited"
	codeTooManyInFlight  = "too_many_in_flight"
	codeLimitUnavailable = "rate_limit_unavailable"
)

// noneKey is the key a request counts under when its key is empty (no
// consumer, no header).
const noneKey = "_none"

// maxKeyValue caps the key value taken from a request (a header value);
// a longer one is replaced by its xxhash, so a client cannot make the
// gateway hold large keys.
const maxKeyValue = 128

var (
	headerRateLimitPolicy = []byte("RateLimit-Policy")
	headerRateLimit       = []byte("RateLimit")
	headerRetryAfter      = []byte(fasthttp.HeaderRetryAfter)
)

// limitRegistry is the rate-limit state that outlives snapshots, owned by
// the Server: the local GCRA store (so a reload does not forget who spent
// what), the in-flight counts, the Redis clients by address and the
// local_first reconciliation. Its mutex guards building; requests only
// read what a snapshot captured.
type limitRegistry struct {
	mu     sync.Mutex
	local  *ratelimit.Local
	conns  *ratelimit.Conns
	redis  map[string]*ratelimit.Redis
	syncer *syncer
}

// stores returns the local store and in-flight counts, creating them with
// the first config's local_max_keys (a later change takes a restart).
func (r *limitRegistry) stores(cfg *config.Config) (*ratelimit.Local, *ratelimit.Conns) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.local == nil {
		r.local = ratelimit.NewLocal(ratelimit.LocalConfig{MaxKeys: cfg.Shared.LocalMaxKeys})
		r.conns = ratelimit.NewConns()
	}
	return r.local, r.conns
}

// redisFor returns the client of cfg's shared.redis, or nil when
// shared.store is local.
func (r *limitRegistry) redisFor(cfg *config.Config, log *slog.Logger) *ratelimit.Redis {
	if cfg.Shared.Store != "redis" {
		return nil
	}
	rc := cfg.Shared.Redis
	addrs := rc.Addrs
	if rc.Addr != "" {
		addrs = []string{rc.Addr}
	}
	id := fmt.Sprintf("%q %q %q %d %v %v", addrs, rc.Username, rc.Password, rc.DB, rc.TLS, rc.Timeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.redis[id]; ok {
		return c
	}
	if r.redis == nil {
		r.redis = make(map[string]*ratelimit.Redis)
	}
	c := ratelimit.NewRedis(ratelimit.RedisConfig{
		Addrs: addrs, Cluster: len(rc.Addrs) > 0, Username: rc.Username, Password: rc.Password,
		DB: rc.DB, TLS: rc.TLS, Timeout: rc.Timeout.D(), Logger: log.With("component", "ratelimit"),
	})
	r.redis[id] = c
	return c
}

// syncerFor returns the local_first reconciliation against c, started.
func (r *limitRegistry) syncerFor(c *ratelimit.Redis, local *ratelimit.Local, log *slog.Logger) *syncer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.syncer == nil || r.syncer.redis != c {
		if r.syncer != nil {
			r.syncer.stop()
		}
		r.syncer = newSyncer(c, local, log)
	}
	return r.syncer
}

// close stops the reconciliation and closes the Redis clients.
func (r *limitRegistry) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.syncer != nil {
		r.syncer.stop()
		r.syncer = nil
	}
	for id, c := range r.redis {
		c.Close()
		delete(r.redis, id)
	}
}

// keyKind is what a limit counts.
type keyKind uint8

const (
	keyClientIP keyKind = iota
	keyConsumer
	keyTenant
	keyHeader
)

// limitKey is a parsed rate_limits or max_conns_per_key key.
type limitKey struct {
	kind   keyKind
	header []byte // canonical header name of keyHeader
}

func parseLimitKey(s string) limitKey {
	if name, ok := config.HeaderKey(s); ok {
		return limitKey{kind: keyHeader, header: []byte(textproto.CanonicalMIMEHeaderKey(name))}
	}
	switch s {
	case "consumer":
		return limitKey{kind: keyConsumer}
	case "tenant":
		return limitKey{kind: keyTenant}
	}
	return limitKey{kind: keyClientIP}
}

// appendValue appends the request's value of k: the client IP, the
// consumer, a header's value (hashed when long), nothing for keyTenant,
// and "_none" when a value is empty.
func (k limitKey) appendValue(b []byte, ctx *fasthttp.RequestCtx, rs *reqState) []byte {
	n := len(b)
	switch k.kind {
	case keyClientIP:
		if rs.clientIP.IsValid() {
			b = rs.clientIP.AppendTo(b)
		}
	case keyConsumer:
		if rs.ident != nil {
			b = appendBounded(b, rs.ident.Consumer)
		}
	case keyHeader:
		b = appendBounded(b, ctx.Request.Header.PeekBytes(k.header))
	case keyTenant:
		return b
	}
	if len(b) == n {
		b = append(b, noneKey...)
	}
	return b
}

func appendBounded[T string | []byte](b []byte, v T) []byte {
	if len(v) <= maxKeyValue {
		return append(b, v...)
	}
	b = append(b, '#')
	return strconv.AppendUint(b, xxhash.Sum64([]byte(v)), 16)
}

// limitSpec is one rate_limits entry of a tenant.
type limitSpec struct {
	name       string
	key        limitKey
	lim        ratelimit.Limit
	prefix     []byte // "{tenant}:name:", the bucket key without the value
	localFirst bool   // decided in memory, reconciled with Redis
	sync       time.Duration
}

// tenantLimits is a tenant's rate_limits and max_conns_per_key, built with
// its snapshot.
type tenantLimits struct {
	specs   []limitSpec
	nStrict int // specs decided by Redis (strict with shared.store redis)
	// policy is the RateLimit-Policy value, fixed per tenant.
	policy []byte

	conns      *ratelimit.Conns
	connKey    limitKey
	connLimit  int32
	connPrefix []byte

	local  *ratelimit.Local
	redis  *ratelimit.Redis // nil: shared.store local
	deny   bool             // on_error: deny
	syncer *syncer          // nil: no local_first limit on Redis
	log    *slog.Logger

	// onError counts requests decided by on_error because Redis failed;
	// written by requests, read by admin.
	onError atomic.Uint64
}

// newTenantLimits builds tc's limits, or returns nil when it has none.
func (s *Server) newTenantLimits(cfg *config.Config, tc *config.Tenant) *tenantLimits {
	if len(tc.RateLimits) == 0 && tc.MaxConnsPerKey == nil {
		return nil
	}
	local, conns := s.limits.stores(cfg)
	tl := &tenantLimits{local: local, log: s.log.With("component", "ratelimit", "tenant", tc.Name)}
	tl.redis = s.limits.redisFor(cfg, s.log)
	tl.deny = cfg.Shared.Redis.OnError == "deny"
	var policy []string
	for _, rc := range tc.RateLimits {
		sp := limitSpec{
			name:   rc.Name,
			key:    parseLimitKey(rc.Key),
			lim:    ratelimit.NewLimit(int64(rc.Rate), rc.Per.D(), int64(rc.Burst)),
			prefix: []byte("{" + tc.Name + "}:" + rc.Name + ":"),
			sync:   rc.Sync.D(),
		}
		sp.localFirst = tl.redis != nil && rc.Mode == "local_first"
		if tl.redis != nil && !sp.localFirst {
			tl.nStrict++
		}
		tl.specs = append(tl.specs, sp)
		policy = append(policy, policyItem(rc))
	}
	// Strict limits first: checks[:nStrict] go to Redis in one call.
	slices.SortStableFunc(tl.specs, func(a, b limitSpec) int {
		switch {
		case a.localFirst == b.localFirst:
			return 0
		case !a.localFirst:
			return -1
		}
		return 1
	})
	if tl.redis != nil && tl.nStrict < len(tl.specs) {
		tl.syncer = s.limits.syncerFor(tl.redis, local, s.log)
	}
	tl.policy = []byte(strings.Join(policy, ", "))
	if m := tc.MaxConnsPerKey; m != nil {
		tl.conns = conns
		tl.connKey = parseLimitKey(m.Key)
		tl.connLimit = int32(m.Limit)
		tl.connPrefix = []byte("{" + tc.Name + "}:" + "~conns:")
	}
	return tl
}

// policyItem renders one limit as a RateLimit-Policy list member
// (draft-ietf-httpapi-ratelimit-headers-09 section 3): quota q per window
// w seconds. A period that is not whole seconds is scaled to 1s.
func policyItem(rc config.RateLimit) string {
	q, w := int64(rc.Rate), int64(rc.Per.D()/time.Second)
	if rc.Per.D()%time.Second != 0 {
		q, w = max(int64(float64(rc.Rate)*float64(time.Second)/float64(rc.Per.D())), 1), 1
	}
	return fmt.Sprintf("%q;q=%d;w=%d", rc.Name, q, w)
}

// limitScratch is the per-request memory of the stage, pooled: bucket keys
// are built in buf and checks point into it.
type limitScratch struct {
	checks [ratelimit.MaxChecks]ratelimit.Check
	buf    [4096]byte
	hdr    [512]byte
}

var scratchPool = sync.Pool{New: func() any { return new(limitScratch) }}

// serveLimited is the rate-limit stage of a tenant with rate_limits or
// max_conns_per_key, after the access stage (so "consumer" is the identity
// auth accepted) and before the tenant's script and upstreams: every
// limit must allow the request, and then all are charged; otherwise 429
// with Retry-After. RateLimit-Policy and RateLimit headers are set on
// every answer of the tenant. An admitted request goes on to the tenant's
// script or upstreams (reqState.runTenant).
func (tl *tenantLimits) serve(ctx *fasthttp.RequestCtx, rs *reqState, t *tenant) {
	sc := scratchPool.Get().(*limitScratch)
	defer scratchPool.Put(sc)

	if tl.conns != nil {
		key := tl.connKey.appendValue(append(sc.buf[:0], tl.connPrefix...), ctx, rs)
		if !tl.conns.Acquire(key, tl.connLimit) {
			rs.errKind = codeTooManyInFlight
			writeError(ctx, rs.reqID, fasthttp.StatusTooManyRequests, codeTooManyInFlight, "too many requests in flight")
			ctx.Response.Header.SetCanonical(headerRetryAfter, []byte("1"))
			return
		}
		defer tl.conns.Release(key)
	}
	if len(tl.specs) == 0 {
		rs.runTenant(ctx, t)
		return
	}

	// Keys are built into one buffer past the in-flight key; offsets
	// first, slices after, since the buffer does not move (it is an
	// array that fits every key: 16 × (prefix + 128-byte value)).
	checks := sc.checks[:len(tl.specs)]
	buf := sc.buf[len(sc.buf)/2 : len(sc.buf)/2]
	var ends [ratelimit.MaxChecks]int
	for i := range tl.specs {
		sp := &tl.specs[i]
		buf = sp.key.appendValue(append(buf, sp.prefix...), ctx, rs)
		ends[i] = len(buf)
	}
	start := 0
	for i := range tl.specs {
		checks[i] = ratelimit.Check{Limit: tl.specs[i].lim, Key: buf[start:ends[i]]}
		start = ends[i]
	}

	allowed, retry, failed := tl.decide(checks)
	if failed && tl.deny {
		rs.errKind = codeLimitUnavailable
		writeError(ctx, rs.reqID, fasthttp.StatusServiceUnavailable, codeLimitUnavailable, "rate limit store unavailable")
		ctx.Response.Header.SetCanonical(headerRetryAfter, []byte("1"))
		tl.setHeaders(&ctx.Response.Header, checks, false, sc)
		return
	}
	if !allowed {
		rs.errKind = codeRateLimited
		writeError(ctx, rs.reqID, fasthttp.StatusTooManyRequests, codeRateLimited, "rate limit exceeded")
		secs := (retry + int64(time.Second) - 1) / int64(time.Second)
		ctx.Response.Header.SetCanonical(headerRetryAfter, strconv.AppendInt(sc.hdr[:0], max(secs, 1), 10))
		tl.setHeaders(&ctx.Response.Header, checks, !failed, sc)
		return
	}
	rs.runTenant(ctx, t)
	tl.setHeaders(&ctx.Response.Header, checks, !failed, sc)
}

// decide runs the checks: local_first ones (checks[nStrict:]) in memory
// first, each on this instance's share of its limit, then the strict ones
// on Redis in one round trip; with shared.store local every check is in
// memory on the whole limit. failed reports that Redis did not answer
// (on_error decides; local_first limits still applied).
func (tl *tenantLimits) decide(checks []ratelimit.Check) (allowed bool, retry int64, failed bool) {
	now := time.Now().UnixNano()
	if tl.redis == nil {
		allowed, retry = tl.local.Allow(now, checks)
		return allowed, retry, false
	}
	strict, lf := checks[:tl.nStrict], checks[tl.nStrict:]
	if len(lf) > 0 {
		for i := range lf {
			sp := &tl.specs[tl.nStrict+i]
			lf[i].Limit = sp.lim.Share(tl.syncer.demand(lf[i].Key, sp.lim, sp.sync, now))
		}
		if allowed, retry = tl.local.Allow(now, lf); !allowed {
			return false, retry, false
		}
	}
	allowed = true
	if len(strict) > 0 {
		var err error
		allowed, retry, err = tl.redis.Allow(strict)
		if err != nil {
			tl.onError.Add(1)
			allowed, failed = !tl.deny, true
		}
	}
	if len(lf) > 0 {
		if !allowed {
			tl.local.Refund(lf)
		} else {
			for i := range lf {
				tl.syncer.add(lf[i].Key, now)
			}
		}
	}
	return allowed, retry, failed
}

// setHeaders sets RateLimit-Policy and RateLimit
// (draft-ietf-httpapi-ratelimit-headers-09 section 4): for each limit, the
// remaining quota r and the seconds t until it is whole again. With
// Redis unanswered, only the policy is known.
func (tl *tenantLimits) setHeaders(h *fasthttp.ResponseHeader, checks []ratelimit.Check, known bool, sc *limitScratch) {
	h.SetCanonical(headerRateLimitPolicy, tl.policy)
	if !known && tl.nStrict > 0 {
		return
	}
	b := sc.hdr[:0]
	for i := range checks {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '"')
		b = append(b, tl.specs[i].name...)
		b = append(b, `";r=`...)
		b = strconv.AppendInt(b, checks[i].Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, int64((checks[i].Reset+time.Second-1)/time.Second), 10)
	}
	h.SetCanonical(headerRateLimit, b)
}

// syncer is the local_first reconciliation. Each local_first key is
// decided in memory on this instance's share of the limit, rate/n with
// the limit's tolerance (Limit.Share), where n is the number of instances
// that served the key recently. Every sync interval the syncer sends, in
// one pipelined round trip for all keys due, what this instance allowed
// since the last sync and its membership of each key (a sorted set with
// a lifetime per member, ratelimit.Redis.Sync), and gets back each key's
// shared TAT (every instance's charges) and member count. The member
// count becomes the key's share; the shared TAT may only raise the local
// one (an instance whose neighbours spent more than their share, or that
// restarted with an empty memory, is held back; none is ever freed). So N
// instances on one count allow together at most N × ((rate × T +
// burst)/N + 1) over any period T, with Redis up or down.
type syncer struct {
	redis *ratelimit.Redis
	local *ratelimit.Local
	log   *slog.Logger
	// id names this instance among a key's members: random, so two
	// instances never share one, and a restarted process is a new member.
	id string

	mu      sync.Mutex
	pending map[string]*pendingKey

	// guess is the member count a key not yet synced is decided on: the
	// largest count the last sync round saw (1 before any). Written by
	// run, read by demand.
	guess atomic.Int64

	// worst is the longest time between two reconciliations of one key
	// seen, ns: sync, stretched by the tick, Redis round trips and
	// scheduling. Written by run, read by admin and tests.
	worst atomic.Int64

	done chan struct{}
	wg   sync.WaitGroup
}

type pendingKey struct {
	lim     ratelimit.Limit
	every   int64 // sync interval, ns
	next    int64 // when to sync next, unix ns
	last    int64 // when it was last synced, unix ns; 0: never
	n       int64 // requests allowed since the last sync
	first   int64 // when the first of them was, unix ns
	idle    bool  // no request (allowed or not) since the last sync
	members int64 // instances sharing the key at the last sync; 0: not synced yet
}

// syncTick is the syncer's resolution; a key is synced at its own sync
// interval rounded up to it.
const syncTick = 10 * time.Millisecond

// memberLifetime is how long an instance counts as serving a key after
// its last sync of it: ten sync intervals, at least 1s, so that an
// instance stalled for a moment (GC, a starved CPU) is not dropped, which
// would double its neighbours' shares; an instance that stops serving the
// key frees its share after it.
func memberLifetime(every int64) time.Duration {
	return max(10*time.Duration(every), time.Second)
}

func newSyncer(r *ratelimit.Redis, local *ratelimit.Local, log *slog.Logger) *syncer {
	s := &syncer{redis: r, local: local, log: log, pending: make(map[string]*pendingKey), done: make(chan struct{})}
	var id [8]byte
	rand.Read(id[:])
	s.id = hex.EncodeToString(id[:])
	s.guess.Store(1)
	s.wg.Add(1)
	go s.run()
	return s
}

// demand records a request for key (allowed or not: an instance refused
// by its share still serves the key) and returns the number of shares
// to decide it on.
func (s *syncer) demand(key []byte, lim ratelimit.Limit, every time.Duration, now int64) int64 {
	s.mu.Lock()
	p, ok := s.pending[string(key)]
	if !ok {
		// A key new to this instance: synced at the next tick, so it
		// learns its members and what others spent within a tick.
		p = &pendingKey{lim: lim, every: int64(every)}
		s.pending[string(key)] = p
	}
	p.idle = false
	n := p.members
	s.mu.Unlock()
	if n == 0 {
		n = s.guess.Load()
	}
	return n
}

// add counts one request allowed locally under key, after demand.
func (s *syncer) add(key []byte, now int64) {
	s.mu.Lock()
	if p, ok := s.pending[string(key)]; ok {
		if p.n == 0 {
			p.first = now
		}
		p.n++
	}
	s.mu.Unlock()
}

func (s *syncer) stop() {
	close(s.done)
	s.wg.Wait()
}

func (s *syncer) run() {
	defer s.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("rate limit sync panicked", "component", "ratelimit", "panic", fmt.Sprint(r))
		}
	}()
	t := time.NewTicker(syncTick)
	defer t.Stop()
	var (
		batch  []ratelimit.SyncKey
		due    []*pendingKey
		firsts []int64
	)
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		batch, due, firsts = batch[:0], due[:0], firsts[:0]
		s.mu.Lock()
		for k, p := range s.pending {
			if now < p.next {
				continue
			}
			if p.idle {
				delete(s.pending, k)
				continue
			}
			age := time.Duration(0)
			if p.n > 0 {
				age = time.Duration(now - p.first)
			}
			batch = append(batch, ratelimit.SyncKey{Limit: p.lim, Key: []byte(k), N: p.n, Age: age, Lifetime: memberLifetime(p.every)})
			due = append(due, p)
			firsts = append(firsts, p.first)
			p.n, p.idle, p.next = 0, true, now+p.every
			if p.last != 0 && now-p.last > s.worst.Load() {
				s.worst.Store(now - p.last)
			}
			p.last = now
		}
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		// Sync sorts batch by slot: keep each key with its entry.
		byKey := make(map[string]int, len(batch))
		for i := range batch {
			byKey[string(batch[i].Key)] = i
		}
		order := append([]ratelimit.SyncKey(nil), batch...)
		s.redis.Sync(s.id, order)
		now = time.Now().UnixNano()
		guess := int64(0)
		warned := false
		s.mu.Lock()
		for i := range order {
			sk := &order[i]
			j := byKey[string(sk.Key)]
			p := due[j]
			if sk.Err != nil {
				if !warned && !errors.Is(sk.Err, ratelimit.ErrUnavailable) {
					s.log.Warn("rate limit sync failed", "component", "ratelimit", "error", sk.Err.Error())
					warned = true
				}
				// Keep the count for the next sync.
				if sk.N > 0 {
					if p.n == 0 {
						p.first = firsts[j]
					} else {
						p.first = min(p.first, firsts[j])
					}
					p.n += sk.N
				}
				p.idle = false
				continue
			}
			p.members = max(sk.Members, 1)
			guess = max(guess, p.members)
			// Redis's TAT holds every charge but those made here since
			// the batch was taken: add them on top, at the whole
			// limit's interval, as Redis will charge them.
			tat := now + int64(sk.Reset) + p.n*p.lim.Interval().Nanoseconds()
			s.local.RaiseTAT(now, sk.Key, tat)
		}
		s.mu.Unlock()
		if guess > 0 {
			// Only what Redis answered: during an outage the last
			// count stands.
			s.guess.Store(guess)
		}
	}
}

// limitsStatus is a tenant's admin "limits" object: its rate limits and
// its script's keystone.store; nil when it has neither.
func (s *Server) limitsStatus(t *tenant) *admin.Limits {
	tl := t.limits
	if tl == nil && t.script == nil {
		return nil
	}
	st := &admin.Limits{Store: s.snap.Load().cfg.Shared.Store, ScriptStoreKeys: s.scriptStoreKeys(t.cfg.Name)}
	s.limits.mu.Lock()
	local, conns := s.limits.local, s.limits.conns
	s.limits.mu.Unlock()
	if local != nil {
		st.LocalKeys = local.Len()
	}
	if conns != nil {
		st.InFlightKeys = conns.Len()
	}
	if tl == nil {
		return st
	}
	st.OnError = tl.onError.Load()
	if tl.redis != nil {
		rs := tl.redis.Stats()
		// The breaker of the tenant's own slot (a cluster has one per
		// slot; a single server one for every tenant).
		st.Redis = &admin.RedisStatus{Breaker: tl.redis.BreakerFor("{" + t.cfg.Name + "}"), Errors: rs.Errors, FastFails: rs.FastFails}
		if tl.syncer != nil {
			st.Redis.SyncIntervalMaxMS = float64(tl.syncer.worst.Load()) / 1e6
		}
	}
	return st
}
