package server

import (
	"context"
	"crypto/rand"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tunnels registers the upgraded connections of a server, across
// snapshots: admin counts them and Shutdown closes them. Its methods are
// safe for concurrent use; none is on the plain request path.
type tunnels struct {
	mu       sync.Mutex
	all      map[*tunnel]struct{}
	byTenant map[string]int
	closing  bool
	// changed is closed and replaced whenever a tunnel ends, for drain.
	changed chan struct{}
}

func newTunnels() *tunnels {
	return &tunnels{all: make(map[*tunnel]struct{}), byTenant: make(map[string]int), changed: make(chan struct{})}
}

func (r *tunnels) isClosing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closing
}

func (r *tunnels) add(t *tunnel) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.all[t] = struct{}{}
	r.byTenant[t.tenant]++
	return true
}

func (r *tunnels) remove(t *tunnel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.all[t]; !ok {
		return
	}
	delete(r.all, t)
	if r.byTenant[t.tenant]--; r.byTenant[t.tenant] <= 0 {
		delete(r.byTenant, t.tenant)
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// active returns the number of upgraded connections of a tenant.
func (r *tunnels) active(tenant string) int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byTenant[tenant]
}

// shutdown refuses new tunnels, lets the open ones run until ctx is done
// (the shutdown grace), then closes those left, WebSocket ones with a
// close frame 1001 (going away) to each side, and waits for them to end.
func (r *tunnels) shutdown(ctx context.Context) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	for {
		r.mu.Lock()
		n, changed := len(r.all), r.changed
		r.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-changed:
			continue
		case <-ctx.Done():
		}
		break
	}
	r.mu.Lock()
	open := make([]*tunnel, 0, len(r.all))
	for t := range r.all {
		open = append(open, t)
	}
	r.mu.Unlock()
	for _, t := range open {
		t.close(closeGoingAway)
	}
	for _, t := range open {
		<-t.done
	}
}

// WebSocket close codes the gateway sends (RFC 6455 section 7.4.1; 1014 is
// registered with IANA).
const (
	closeGoingAway  = 1001 // shutdown, idle timeout, max lifetime
	closeBadGateway = 1014 // the upstream went away without a close frame
)

// closeLinger is how long a tunnel waits, after sending its close frames,
// for the peers to answer them and close.
const closeLinger = time.Second

// tunnelBuf is each direction's copy buffer: an idle tunnel holds two.
const tunnelBuf = 4 << 10

// tunnel is one upgraded connection: the client's (hijacked from fasthttp)
// joined to its own connection to the upstream. Two goroutines copy, one
// per direction; the last to stop closes both connections and
// unregisters it.
type tunnel struct {
	ws       bool
	tenant   string
	reg      *tunnels
	client   net.Conn
	upstream net.Conn
	idle     time.Duration
	end      time.Time // max lifetime; zero: none

	toClient, toUpstream side
	// last is when a byte last came from either side, in unix
	// nanoseconds. Written by both copiers after each read; read by both
	// when their read deadline passes, to tell an idle tunnel from a
	// one-way stream.
	last atomic.Int64
	// closingAt is when a tunnel the gateway is closing gives up on its
	// peers, in unix nanoseconds; 0 while open. Written once by close.
	closingAt atomic.Int64
	closeOnce sync.Once
	running   atomic.Int32
	done      chan struct{}
}

// side is where one copier writes. The gateway writes its own close frame
// under mu, between the copier's writes, only at a frame boundary.
type side struct {
	mu     sync.Mutex
	conn   net.Conn
	frames frameTracker // frames written to conn so far (WebSocket only)
	masked bool         // frames written here are masked: the upstream's side
	closed bool         // the gateway sent its close frame: forward no more
}

func (t *tunnel) start(c net.Conn, head, fromUpstream []byte) {
	// fasthttp's hijacked conn reads through the server's pooled read
	// buffer (server.max_header_bytes + max_request_line): take what it
	// holds and read the socket itself, so an idle tunnel does not pin
	// 40 KiB. A read with a deadline in the past returns only buffered
	// bytes.
	raw := c
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	var fromClient []byte
	if raw != c {
		_ = raw.SetReadDeadline(time.Unix(1, 0))
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			fromClient = append(fromClient, buf[:n]...)
			if err != nil {
				break
			}
		}
		_ = raw.SetReadDeadline(time.Time{})
	}
	t.client = raw
	t.toClient = side{conn: raw}
	t.toUpstream = side{conn: t.upstream, masked: true}
	t.last.Store(time.Now().UnixNano())
	if !t.reg.add(t) {
		// Shutdown began between the handshake and the hijack.
		raw.Close()
		t.upstream.Close()
		return
	}
	_ = raw.SetWriteDeadline(time.Now().Add(t.idle))
	if _, err := raw.Write(head); err != nil || !t.toClient.write(t, fromUpstream) || !t.toUpstream.write(t, fromClient) {
		t.running.Store(1)
		t.stopped(nil)
		return
	}
	t.running.Store(2)
	go t.copy(t.upstream, &t.toClient)
	go t.copy(raw, &t.toUpstream)
}

// copy relays src to dst until src ends, the tunnel idles or outlives its
// lifetime, or the gateway closes it.
func (t *tunnel) copy(src net.Conn, dst *side) {
	defer t.stopped(src)
	buf := make([]byte, tunnelBuf)
	for {
		_ = src.SetReadDeadline(t.deadline())
		n, err := src.Read(buf)
		if n > 0 {
			t.last.Store(time.Now().UnixNano())
			if !dst.write(t, buf[:n]) {
				return
			}
		}
		if err == nil {
			continue
		}
		if isTimeout(err) && t.closingAt.Load() == 0 {
			if time.Now().Before(t.deadline()) {
				continue // the other direction was active
			}
			t.close(closeGoingAway)
			continue // wait for the peers to answer, up to closeLinger
		}
		if t.ws && src == t.upstream && !t.toClient.frames.sawClose {
			// The upstream went away without a close frame: say so to
			// the client rather than only drop the connection.
			t.toClient.sendClose(closeBadGateway)
		}
		return
	}
}

// deadline is when a copier's read gives up: the idle timeout after the
// last byte either way, capped by the lifetime, or the close linger.
func (t *tunnel) deadline() time.Time {
	if c := t.closingAt.Load(); c != 0 {
		return time.Unix(0, c)
	}
	d := time.Unix(0, t.last.Load()).Add(t.idle)
	if !t.end.IsZero() && t.end.Before(d) {
		d = t.end
	}
	return d
}

// close starts closing the tunnel: a close frame with code to each side of
// a WebSocket tunnel, then closeLinger for the peers to close.
func (t *tunnel) close(code uint16) {
	t.closeOnce.Do(func() {
		t.closingAt.Store(time.Now().Add(closeLinger).UnixNano())
		if t.ws {
			t.toClient.sendClose(code)
			t.toUpstream.sendClose(code)
		} else {
			t.client.Close()
			t.upstream.Close()
		}
		// Wake the copiers so they pick up the linger deadline.
		_ = t.client.SetReadDeadline(time.Unix(0, t.closingAt.Load()))
		_ = t.upstream.SetReadDeadline(time.Unix(0, t.closingAt.Load()))
	})
}

// stopped is called by each copier as it ends, with the connection it read
// (nil from start). Outside a close the first closes both connections, so
// the other's read returns; while the gateway closes the tunnel, only its
// own, so the other peer can still answer the close frame within the
// linger. The last unregisters.
func (t *tunnel) stopped(src net.Conn) {
	if src != nil && t.closingAt.Load() != 0 {
		src.Close()
	} else {
		t.client.Close()
		t.upstream.Close()
	}
	if t.running.Add(-1) == 0 {
		t.client.Close()
		t.upstream.Close()
		t.reg.remove(t)
		close(t.done)
	}
}

// write forwards p unless the gateway closed this side. It reports false
// when the tunnel should stop.
func (s *side) write(t *tunnel, p []byte) bool {
	if len(p) == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true // discard: the gateway's close frame was the last
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(t.idle))
	if _, err := s.conn.Write(p); err != nil {
		return false
	}
	if t.ws {
		s.frames.feed(p)
	}
	return true
}

// sendClose writes a close frame with code, if the stream is at a frame
// boundary (otherwise it would land inside a frame), and stops forwarding.
func (s *side) sendClose(code uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if !s.frames.atBoundary() || s.frames.sawClose {
		return
	}
	var f [8]byte
	f[0] = 0x80 | 0x8 // FIN, close
	if !s.masked {
		f[1] = 2
		f[2], f[3] = byte(code>>8), byte(code)
		_ = s.conn.SetWriteDeadline(time.Now().Add(closeLinger))
		_, _ = s.conn.Write(f[:4])
		return
	}
	// Frames from a client are masked (RFC 6455 section 5.3), and to the
	// upstream the gateway is the client.
	f[1] = 0x80 | 2
	_, _ = rand.Read(f[2:6])
	f[6], f[7] = byte(code>>8)^f[2], byte(code)^f[3]
	_ = s.conn.SetWriteDeadline(time.Now().Add(closeLinger))
	_, _ = s.conn.Write(f[:8])
}

// frameTracker follows WebSocket frame boundaries in a byte stream (RFC
// 6455 section 5.2), so that the gateway writes its own frames only
// between frames. It reads headers and lengths only, never payloads.
type frameTracker struct {
	hdr      [14]byte
	hn       int    // header bytes collected
	payload  uint64 // payload bytes left of the current frame
	sawClose bool   // a close frame passed
}

func (f *frameTracker) feed(p []byte) {
	for len(p) > 0 {
		if f.payload > 0 {
			k := uint64(len(p))
			if k > f.payload {
				k = f.payload
			}
			p = p[k:]
			f.payload -= k
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn < 2 {
			continue
		}
		need := 2
		l7 := f.hdr[1] & 0x7f
		switch l7 {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4
		}
		if f.hn < need {
			continue
		}
		n := uint64(l7)
		switch l7 {
		case 126:
			n = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			n = 0
			for _, b := range f.hdr[2:10] {
				n = n<<8 | uint64(b)
			}
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.sawClose = true
		}
		f.payload = n
		f.hn = 0
	}
}

func (f *frameTracker) atBoundary() bool { return f.hn == 0 && f.payload == 0 }
