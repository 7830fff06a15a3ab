package luavm

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// Handler serves one request: it matches the route in Go, and only the
// matched handler and its middleware chain run in Lua, in a VM taken from
// the pool. A script error answers 500 "script error", a script running
// past MaxExecution 500 "script timeout", both through Host.WriteError
// with one log line; no VM available within VMWait answers 503 with
// Retry-After.
func (s *Script) Handler(ctx *fasthttp.RequestCtx) {
	s.requests.Add(1)
	p := b2s(ctx.Path())
	if h := s.match(b2s(ctx.Method()), p, ctx); h != nil {
		h(ctx)
		return
	}
	if h := s.runtimeLookup(b2s(ctx.Method()), p, ctx); h != nil {
		h(ctx)
		return
	}
	s.miss(ctx, p)
}

// serve runs handler index i on a pooled thread and VM.
func (s *Script) serve(ctx *fasthttp.RequestCtx, i int) {
	t, v, err := s.acquire()
	if err != nil {
		s.busy(ctx, err)
		return
	}
	s.run(ctx, t, v, v.handlers[i])
}

// busy answers a request acquire found no thread or VM for: 503 with
// Retry-After.
func (s *Script) busy(ctx *fasthttp.RequestCtx, err error) {
	s.errors.Add(1)
	s.log.Warn("no Lua VM available", slog.String("request_id", s.requestID(ctx)), slog.String("error", err.Error()))
	ctx.Response.Reset()
	s.host.WriteError(ctx, fasthttp.StatusServiceUnavailable, "script busy")
	// After WriteError, which replaces the whole response. The queue was
	// full for VMWait: a client may try again after as long (RFC 9110
	// section 10.2.3).
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfter(s.cfg.VMWait))
}

// run calls fn, a function of v, for the request on thread t, then gives
// t and v back (or discards them) and answers a failure.
func (s *Script) run(ctx *fasthttp.RequestCtx, t *thread, v *vm, fn lua.LValue) {
	s.pool.inflight.Add(1)
	keepThread, keepVM, err := v.call(t, ctx, fn, s.cfg.MaxExecution)
	s.pool.inflight.Add(-1)
	s.releaseVM(v, keepVM)
	s.releaseThread(t, keepThread)
	if err != nil {
		s.fail(ctx, err)
	}
}

// retryAfter is the Retry-After value for a wait of d: whole seconds,
// rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(max(1, (d+time.Second-1)/time.Second)))
}

// acquire takes a thread and locks a VM for a request: idle ones if there
// are, new ones while the memory budget and MaxVMs allow, else it queues
// for VMWait in all (not charged to MaxExecution: no Lua runs yet). The
// fast path allocates nothing.
func (s *Script) acquire() (*thread, *vm, error) {
	var w waitState
	defer w.done(s.pool)
	t, create, _ := s.pool.getThread(false)
	if t == nil {
		var err error
		if t, err = s.acquireThread(create, &w); err != nil {
			return nil, nil, err
		}
	}
	v, create := s.pool.getVM()
	if v == nil {
		var err error
		if v, err = s.acquireVM(create, &w); err != nil {
			s.releaseThread(t, true)
			return nil, nil, err
		}
	}
	return t, v, nil
}

// waitState is one request's wait for a thread and a VM: one bound for
// both, and the wait statistics.
type waitState struct {
	timer   *time.Timer
	start   time.Duration
	timeout bool
}

// wait blocks until ready fires or the request's VMWait has passed in all;
// it reports false on timeout.
func (w *waitState) begin(s *Script) <-chan time.Time {
	if w.timer == nil {
		w.start = monotonic()
		w.timer = time.NewTimer(s.cfg.VMWait)
	}
	return w.timer.C
}

func (w *waitState) done(p *pool) {
	if w.timer == nil {
		return
	}
	w.timer.Stop()
	p.waits.Add(1)
	p.waitNanos.Add(int64(monotonic() - w.start))
	if w.timeout {
		p.waitTimeouts.Add(1)
	}
}

func (s *Script) acquireThread(create bool, w *waitState) (*thread, error) {
	for {
		if s.closed.Load() {
			if create {
				s.pool.unreserveThread()
			}
			return nil, ErrClosed
		}
		if create {
			return s.newThread(), nil
		}
		var t *thread
		var ch chan bool
		if t, create, ch = s.pool.getThread(true); t != nil || create {
			if t != nil {
				return t, nil
			}
			continue
		}
		select {
		case <-ch:
		case <-w.begin(s):
			if !s.pool.cancelThreadWait(ch) {
				<-ch // woken as the timer fired: take the last chance below
			}
			if t, create, _ = s.pool.getThread(false); t != nil {
				return t, nil
			}
			if create {
				return s.newThread(), nil
			}
			w.timeout = true
			return nil, ErrBusy
		}
		t, create, _ = s.pool.getThread(false)
		if t != nil {
			return t, nil
		}
	}
}

func (s *Script) acquireVM(create bool, w *waitState) (*vm, error) {
	for {
		if s.closed.Load() {
			if create {
				s.pool.unreserveVM()
			}
			return nil, ErrClosed
		}
		if create {
			return s.newLockedVM()
		}
		ch := s.pool.waitVM()
		// Scan again after queueing: a VM unlocked in between told
		// nobody.
		v, create := s.pool.getVM()
		if v != nil || create {
			s.pool.cancelVMWait(ch)
			if v != nil {
				return v, nil
			}
			continue
		}
		select {
		case <-ch:
		case <-w.begin(s):
			s.pool.cancelVMWait(ch)
			if v, create = s.pool.getVM(); v != nil {
				return v, nil
			}
			if create {
				return s.newLockedVM()
			}
			w.timeout = true
			return nil, ErrBusy
		}
		if v, create = s.pool.getVM(); v != nil {
			return v, nil
		}
	}
}

// newLockedVM builds a VM for a reservation, locked by the caller.
func (s *Script) newLockedVM() (*vm, error) {
	v, err := s.newVM()
	if err != nil {
		s.pool.unreserveVM()
		return nil, err
	}
	s.pool.addVM(v)
	return v, nil
}

// release gives back a healthy thread and VM taken with acquire.
func (s *Script) release(t *thread, v *vm) {
	s.releaseVM(v, true)
	s.releaseThread(t, true)
}

// releaseVM unlocks a VM, or drops it when it must not serve again.
func (s *Script) releaseVM(v *vm, keep bool) {
	closeIt := false
	if keep {
		closeIt = s.pool.unlock(v, false)
	} else {
		s.discarded.Add(1)
		closeIt = s.pool.drop(v)
	}
	if closeIt {
		v.close()
	}
}

// releaseThread gives a thread back, or drops it after a timeout (its
// deadline's channel is closed for good) or once the Script is closed.
func (s *Script) releaseThread(t *thread, keep bool) {
	if keep && s.pool.putThread(t) {
		return
	}
	if !keep {
		s.discarded.Add(1)
		s.pool.unreserveThread()
	}
	t.close()
}

// reap runs while the pool holds VMs or threads above PoolSize, closing
// those idle for IdleVMTTL; it is started by the pool when it grows and
// returns when nothing above PoolSize is left or the Script closes.
func (s *Script) reap() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("Lua VM reaper panicked", slog.Any("panic", r))
		}
	}()
	tick := time.NewTicker(reapEvery(s.cfg.IdleVMTTL))
	defer tick.Stop()
	for {
		select {
		case <-s.pool.stop:
			return
		case <-tick.C:
		}
		if !s.trim() {
			return
		}
	}
}

// trim closes the VMs and threads above PoolSize idle for IdleVMTTL. It
// reports whether any above PoolSize remain.
func (s *Script) trim() bool {
	vms, threads, more := s.pool.trim()
	for _, v := range vms {
		v.close()
	}
	for _, t := range threads {
		t.close()
	}
	return more
}

// fail answers a request whose script failed and logs one line with the
// script position. The client sees neither the Lua error nor anything the
// script had written: the response is reset first. The error itself says
// whether it was the deadline: the timer may also fire while a builtin
// that then fails for another reason is finishing.
func (s *Script) fail(ctx *fasthttp.RequestCtx, err error) {
	s.errors.Add(1)
	msg := err.Error()
	var aerr *lua.ApiError
	if errors.As(err, &aerr) {
		// Object.String, not tostring: a __tostring metamethod would run
		// Lua outside any deadline.
		msg = aerr.Object.String()
	}
	e := errorAt(pos{file: s.prog.File()}, msg)
	text := "script error"
	if strings.HasSuffix(e.Msg, errTimeoutText) {
		text = "script timeout"
	}
	s.log.LogAttrs(context.Background(), slog.LevelError, text,
		slog.String("request_id", s.requestID(ctx)),
		slog.String("file", clipLog(e.File)),
		slog.Int("line", e.Line),
		slog.String("error", clipLog(e.Msg)),
	)
	ctx.Response.Reset()
	s.host.WriteError(ctx, fasthttp.StatusInternalServerError, text)
}

// requestID returns the request id header, copied: it is logged after the
// handler may have changed the request.
func (s *Script) requestID(ctx *fasthttp.RequestCtx) string {
	return string(ctx.Request.Header.Peek(s.reqIDHeader))
}

// fallback serves a request no route matched when the script set no
// NotFound handler.
func (s *Script) fallback(ctx *fasthttp.RequestCtx) {
	if s.opts.Fallback != nil {
		s.opts.Fallback(ctx)
		return
	}
	s.host.WriteError(ctx, fasthttp.StatusNotFound, "not found")
}

// notAllowed is the default MethodNotAllowed handler. Allow is already set,
// and Host.WriteError replaces the whole response, headers included, so it
// is put back: a 405 must carry Allow (RFC 9110 section 15.5.6). The copy
// allocates, on the 405 path only.
func (s *Script) notAllowed(ctx *fasthttp.RequestCtx) {
	allow := string(ctx.Response.Header.Peek(fasthttp.HeaderAllow))
	s.host.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
	if allow != "" {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	}
}

// b2s views b as a string without copying. The string must not outlive
// the request that owns b, nor be used after b is modified.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
