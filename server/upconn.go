package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Keep-alive connections the upstream closed.
//
// fasthttp's HostClient reuses a pooled connection without asking whether
// the upstream closed it meanwhile (nginx learns it at once: an idle
// upstream connection stays in its event loop, and a close removes it from
// the cache). An upstream that closes each connection after its response,
// or whose idle timeout is shorter than pool.idle_timeout, then fails the
// next request on that connection before any answer. upConn wraps each
// upstream connection (above TLS, for https:// upstreams) so the proxy
// stage can tell that case from a real failure, and avoid most of it:
//
//   - before the first byte of a request on a reused connection it peeks
//     at the TCP socket (one non-blocking recv); a connection the upstream
//     closed (or sent anything on, a TLS close_notify say), or one idle
//     past the timeout the upstream announced in
//     Keep-Alive: timeout=N, fails the write with errStaleConn: nothing was
//     sent, so any request may go again;
//   - a reused connection that breaks before the first response byte says
//     so through the remote address it reports (reusedAddr): the request
//     may have been sent, and fasthttp reports only ErrConnectionClosed.
//
// An upConn is used by one request at a time (fasthttp's pool hands it over
// under its mutex), so its fields need no synchronisation; keepAlive is the
// upstream's and atomic.

// errStaleConn fails a request's first write on a reused connection that
// the upstream has closed or would close before it could answer. Nothing of
// the request was written.
var errStaleConn = errors.New("upstream closed the idle keep-alive connection")

// staleWriteError is a write error on a reused connection: the upstream
// closed it after the check before the request's first write. It wraps
// errNothingWritten too when not a byte of the request went out.
type staleWriteError struct {
	err    error
	unsent bool
}

// errNothingWritten marks a staleWriteError before which nothing was sent.
var errNothingWritten = errors.New("nothing written")

func (e *staleWriteError) Error() string { return "reused upstream connection: " + e.err.Error() }

func (e *staleWriteError) Unwrap() []error {
	if e.unsent {
		return []error{e.err, errNothingWritten}
	}
	return []error{e.err}
}

// clockBase anchors nanotime, a monotonic clock reading.
var clockBase = time.Now()

func nanotime() int64 { return int64(time.Since(clockBase)) }

// reusedAddr is the remote address an upConn reports to fasthttp (which
// stores it in the Response, ParseNetConn) when the request it starts is
// not the connection's first. It is allocated with the connection.
type reusedAddr struct{ net.Addr }

// upConn is a connection to an upstream, as its HostClient sees it.
type upConn struct {
	net.Conn
	// keepAlive is the upstream's announced keep-alive timeout in
	// nanoseconds (upstream.keepAlive), 0 if none.
	keepAlive *atomic.Int64
	reused    reusedAddr
	raw       syscall.RawConn       // nil if the conn has none
	peekFn    func(fd uintptr) bool // c.peek, bound once
	peekErr   error                 // of the last peek
	peekBuf   [1]byte

	// answered is set by a Read that returned bytes: a response has been
	// read since the request was written, so the next Write starts a new
	// request on a reused connection.
	answered bool
	// reusedNow is set when the request being sent is not the
	// connection's first.
	reusedNow bool
	// wrote is set once a Write of the current request went through.
	wrote bool
	// lastRead is the nanotime of the last Read that returned bytes,
	// recorded only while the upstream announces a keep-alive timeout.
	lastRead int64
}

// newUpConn wraps c, whose transport is tcp (c itself, or the TCP
// connection under c's TLS).
func newUpConn(c, tcp net.Conn, keepAlive *atomic.Int64) *upConn {
	u := &upConn{Conn: c, keepAlive: keepAlive, reused: reusedAddr{c.RemoteAddr()}}
	if sc, ok := tcp.(syscall.Conn); ok && canPeek {
		if raw, err := sc.SyscallConn(); err == nil {
			u.raw = raw
			u.peekFn = u.peek // bound once: RawConn.Read then allocates nothing
		}
	}
	return u
}

// upTLSConn is an upConn over TLS. Its Handshake method tells fasthttp that
// the connection speaks TLS already (dialAddr looks for it), so that it does
// not wrap it in TLS again; the handshake runs, as fasthttp's would, on the
// first write, under the request's deadline.
type upTLSConn struct {
	*upConn
	tls *tls.Conn
}

func (c *upTLSConn) Handshake() error { return c.tls.Handshake() }

// RemoteAddr reports the upstream's address; as a *reusedAddr when the
// request about to be sent is not the connection's first. fasthttp asks
// for it once per request, right after taking the connection from its pool.
func (c *upConn) RemoteAddr() net.Addr {
	if c.answered || c.reusedNow {
		return &c.reused
	}
	return c.reused.Addr
}

func (c *upConn) Write(p []byte) (int, error) {
	if c.answered {
		// The first write of a new request on a reused connection.
		c.answered, c.reusedNow, c.wrote = false, true, false
		if c.expired() || c.closedByPeer() {
			return 0, errStaleConn
		}
	}
	n, err := c.Conn.Write(p)
	if err != nil && c.reusedNow && !isTimeout(err) {
		// Reset or broken pipe: the upstream closed the connection
		// after the peek. The error is typed here because it never
		// reaches fasthttp's first-byte read, which would make any
		// error ErrConnectionClosed.
		err = &staleWriteError{err: err, unsent: !c.wrote && n == 0}
	}
	if n > 0 {
		c.wrote = true
	}
	return n, err
}

func (c *upConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.answered = true
		if c.keepAlive.Load() > 0 {
			c.lastRead = nanotime()
		}
	}
	return n, err
}

// expired reports whether the connection has been idle for about the
// keep-alive timeout the upstream announced: a second less (half of it, if
// shorter), so that the request arrives before the upstream closes.
func (c *upConn) expired() bool {
	ka := c.keepAlive.Load()
	if ka <= 0 || c.lastRead == 0 {
		return false
	}
	return nanotime()-c.lastRead >= ka-min(int64(time.Second), ka/2)
}

// closedByPeer reports whether the upstream closed the idle connection (or
// sent something unasked, which leaves it unusable too). It costs one
// non-blocking recv with MSG_PEEK.
func (c *upConn) closedByPeer() bool {
	if c.raw == nil {
		return false
	}
	c.peekErr = nil
	if err := c.raw.Read(c.peekFn); err != nil {
		return true
	}
	if c.peekErr != nil {
		return c.peekErr != syscall.EAGAIN && c.peekErr != syscall.EWOULDBLOCK && c.peekErr != syscall.EINTR
	}
	// 0 bytes: end of stream, the upstream closed its side. More: it
	// sent bytes no request asked for (a 408, say) before closing.
	return true
}

// parseKeepAliveTimeout returns the timeout=N of a Keep-Alive response
// header value (RFC 2068 section 19.7.1.1), in nanoseconds, or 0.
func parseKeepAliveTimeout(v []byte) int64 {
	for len(v) > 0 {
		param := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			param, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		param = bytes.TrimSpace(param)
		const key = "timeout="
		if len(param) <= len(key) || !bytes.EqualFold(param[:len(key)], []byte(key)) {
			continue
		}
		var secs int64
		for _, c := range param[len(key):] {
			if c < '0' || c > '9' || secs > 1<<20 {
				return 0
			}
			secs = secs*10 + int64(c-'0')
		}
		return secs * int64(time.Second)
	}
	return 0
}
