package luavm

import (
	"context"
	"errors"
	"log/slog"
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
// with one log line; no VM available before the deadline answers 503.
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

// serve runs handler index i in a pooled VM.
func (s *Script) serve(ctx *fasthttp.RequestCtx, i int) {
	v, err := s.acquire()
	if err != nil {
		s.errors.Add(1)
		s.log.Warn("no Lua VM available", slog.String("request_id", s.requestID(ctx)), slog.String("error", err.Error()))
		ctx.Response.Reset()
		s.host.WriteError(ctx, fasthttp.StatusServiceUnavailable, "script busy")
		return
	}
	keep, err := v.call(ctx, v.handlers[i], s.cfg.MaxExecution)
	s.release(v, keep)
	if err != nil {
		s.fail(ctx, err)
	}
}

// acquire takes an idle VM, creates one if the cap allows, or waits for
// one up to MaxExecution. The fast path allocates nothing.
func (s *Script) acquire() (*vm, error) {
	if v := s.pool.tryGet(); v != nil {
		return v, nil
	}
	return s.acquireSlow()
}

func (s *Script) acquireSlow() (*vm, error) {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if s.closed.Load() {
			return nil, ErrClosed
		}
		if v := s.pool.tryGet(); v != nil {
			return v, nil
		}
		if s.pool.reserve() {
			v, err := s.newVM()
			if err != nil {
				s.pool.unreserve()
				return nil, err
			}
			return v, nil
		}
		if t == nil {
			// Only when every VM is busy and the cap is reached.
			t = time.NewTimer(s.cfg.MaxExecution)
		}
		select {
		case v := <-s.pool.idle:
			return v, nil
		case <-s.pool.freed:
		case <-t.C:
			return nil, ErrBusy
		}
	}
}

// release returns a VM to the pool, or drops it when it must not serve
// again or the Script is closed.
func (s *Script) release(v *vm, keep bool) {
	if keep && !s.closed.Load() && s.pool.put(v) {
		return
	}
	if !keep {
		s.discarded.Add(1)
	}
	v.close()
	s.pool.unreserve()
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
