package luavm

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// connUpstream is a raw HTTP/1.1 upstream on loopback that keeps
// connections alive and numbers them: each answer's body is "conn N", and
// closed reports when the client closed connection N (the server's read
// got EOF). A request to /hold waits until release is closed.
type connUpstream struct {
	addr    string
	held    chan struct{} // receives when a /hold request arrives
	release chan struct{} // closed to answer the /hold requests

	mu     sync.Mutex
	next   int
	closed map[int]chan struct{} // closed when conn N reads EOF
}

func startConnUpstream(t *testing.T) *connUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &connUpstream{addr: ln.Addr().String(), held: make(chan struct{}, 16), release: make(chan struct{}), closed: map[int]chan struct{}{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	var conns []net.Conn
	t.Cleanup(func() {
		u.mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		u.mu.Unlock()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.next++
			n, done := u.next, make(chan struct{})
			u.closed[n] = done
			conns = append(conns, c)
			u.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(done)
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return // EOF: the client closed the connection
					}
					req.Body.Close()
					if req.URL.Path == "/hold" {
						u.held <- struct{}{}
						<-u.release
					}
					body := fmt.Sprintf("conn %d", n)
					if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
						return
					}
				}
			}()
		}
	}()
	return u
}

// closedCh returns the channel closed when connection n reads EOF.
func (u *connUpstream) closedCh(t *testing.T, n int) chan struct{} {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	ch, ok := u.closed[n]
	if !ok {
		t.Fatalf("the upstream has no connection %d", n)
	}
	return ch
}

// waitClosed fails unless the client closes connection n within 5s.
func (u *connUpstream) waitClosed(t *testing.T, n int) {
	t.Helper()
	select {
	case <-u.closedCh(t, n):
	case <-time.After(5 * time.Second):
		t.Fatalf("upstream connection %d still open 5s after its script closed", n)
	}
}

// open reports whether connection n has not read EOF.
func (u *connUpstream) open(t *testing.T, n int) bool {
	t.Helper()
	select {
	case <-u.closedCh(t, n):
		return false
	default:
		return true
	}
}

// httpCallScript answers GET /call with the body keystone.http got from
// the upstream, and GET /twice with the results of a call to /hold and a
// second call, the error text in place of a failed call's body.
const httpCallScript = `
local up = "http://%s"
local function get(path)
  local res, err = keystone.http.Get(up .. path)
  if res then return res.body end
  return "error: " .. err
end
local r = chi.NewRouter()
r:Get("/call", function(w, req) w:Write(get("/x")) end)
r:Get("/twice", function(w, req) w:Write(get("/hold") .. "; " .. get("/x")) end)
return r
`

// connOf returns N of a "conn N" body.
func connOf(t *testing.T, body string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(body, "conn %d", &n); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return n
}

// TestHTTPClientClosesWithScript checks that each script has its own
// keystone.http connections, and that Close closes them: the upstream
// reads EOF on the closed script's kept-alive connection while the other
// script's stays open and in use.
func TestHTTPClientClosesWithScript(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := startConnUpstream(t)
	src := scriptFS(fmt.Sprintf(httpCallScript, up.addr))
	a, err := Load(testConfig(nil), src, "main.lua", Options{Tenant: "a", Host: e.host})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := e.load(t, testConfig(nil), src, "main.lua", Options{Tenant: "b"})
	fa, fb := serveScript(t, a), serveScript(t, b)

	ca := connOf(t, fa.do(t, "GET", "/call", nil, "").body)
	if again := connOf(t, fa.do(t, "GET", "/call", nil, "").body); again != ca {
		t.Fatalf("script a's second call went over connection %d, not its kept-alive %d", again, ca)
	}
	cb := connOf(t, fb.do(t, "GET", "/call", nil, "").body)
	if cb == ca {
		t.Fatalf("scripts a and b share upstream connection %d", ca)
	}

	a.Close()
	up.waitClosed(t, ca)
	if !up.open(t, cb) {
		t.Fatalf("closing script a closed script b's connection %d", cb)
	}
	if again := connOf(t, fb.do(t, "GET", "/call", nil, "").body); again != cb {
		t.Errorf("script b's call after a closed went over connection %d, not its kept-alive %d", again, cb)
	}
}

// TestHTTPClientCallAfterClose closes a script while one of its requests
// waits on keystone.http: that call completes, its connection is closed
// when it returns to the pool, and the request's next keystone.http call
// returns nil and an error instead of dialing again.
func TestHTTPClientCallAfterClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := startConnUpstream(t)
	s, err := Load(testConfig(nil), scriptFS(fmt.Sprintf(httpCallScript, up.addr)), "main.lua", Options{Host: e.host})
	if err != nil {
		t.Fatal(err)
	}
	f := serveScript(t, s)

	got := make(chan result, 1)
	go func() { got <- f.do(t, "GET", "/twice", nil, "") }()
	select {
	case <-up.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the script's first keystone.http call never reached the upstream")
	}
	s.Close()
	close(up.release)
	res := <-got
	first, second, _ := strings.Cut(res.body, "; ")
	if res.status != 200 || second != "error: keystone.http: the script is closed" {
		t.Fatalf("got %d %q, want the first call answered and the second refused", res.status, res.body)
	}
	up.waitClosed(t, connOf(t, first))
	up.mu.Lock()
	n := up.next
	up.mu.Unlock()
	if n != 1 {
		t.Errorf("the upstream accepted %d connections, want 1: a closed script dialed again", n)
	}
}
