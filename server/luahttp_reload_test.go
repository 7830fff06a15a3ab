package server

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// connTracker is an upstream on loopback that answers each request with
// the number of the connection it came on, and records when the client
// closes one. Its own idle timeout is off, so only the client closes.
type connTracker struct {
	addr string

	mu     sync.Mutex
	ids    map[net.Conn]int
	closed map[int]chan struct{}
}

func startConnTracker(t *testing.T) *connTracker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &connTracker{addr: ln.Addr().String(), ids: map[net.Conn]int{}, closed: map[int]chan struct{}{}}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			u.mu.Lock()
			n := u.ids[ctx.Conn()]
			u.mu.Unlock()
			fmt.Fprintf(ctx, "conn %d", n)
		},
		ConnState: func(c net.Conn, st fasthttp.ConnState) {
			u.mu.Lock()
			defer u.mu.Unlock()
			switch st {
			case fasthttp.StateNew:
				n := len(u.ids) + 1
				u.ids[c] = n
				u.closed[n] = make(chan struct{})
			case fasthttp.StateClosed:
				close(u.closed[u.ids[c]])
			}
		},
	}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	return u
}

// waitClosed fails unless connection n closes within d.
func (u *connTracker) waitClosed(t *testing.T, n int, d time.Duration) {
	t.Helper()
	u.mu.Lock()
	ch := u.closed[n]
	u.mu.Unlock()
	if ch == nil {
		t.Fatalf("the upstream has no connection %d", n)
	}
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("upstream connection %d still open %s after the reload that retired its script", n, d)
	}
}

const luaHTTPScript = `
local r = chi.NewRouter()
r:Get("/call", function(w, req)
  local res, err = keystone.http.Get("http://%s/x")
  if not res then error(err) end
  w:Write(res.body)
end)
return r
`

// TestReloadClosesRetiredScriptsHTTPConnections calls out with
// keystone.http from two tenants' scripts, then reloads to a config
// without one of them: the two scripts used two connections, and the
// removed script's kept-alive connection is closed once its snapshot is
// retired, while the remaining tenant keeps calling out.
func TestReloadClosesRetiredScriptsHTTPConnections(t *testing.T) {
	t.Parallel()
	up := startConnTracker(t)
	tenants := func(names ...string) string {
		y := luaBlock + "logging: {access_log: false}\ntenants:\n"
		for _, n := range names {
			y += yamlf("  - {name: %s, path_prefix: /%s, script: call.lua}\n", n, n)
		}
		return y
	}
	d := newConfDir(t, tenants("a", "b"), "scripts/call.lua", fmt.Sprintf(luaHTTPScript, up.addr))
	g := d.start(t)

	call := func(tenant string) string {
		t.Helper()
		resp := g.get("/" + tenant + "/call")
		defer fasthttp.ReleaseResponse(resp)
		if resp.StatusCode() != 200 {
			t.Fatalf("/%s/call: %d %s", tenant, resp.StatusCode(), resp.Body())
		}
		return string(resp.Body())
	}
	a, b := call("a"), call("b")
	if a == b {
		t.Fatalf("tenants a and b called out on the same connection (%s)", a)
	}
	if again := call("a"); again != a {
		t.Fatalf("tenant a's second call came on %s, not its kept-alive %s", again, a)
	}

	d.write("keystone.yaml", tenants("b"))
	g.reload()
	var n int
	if _, err := fmt.Sscanf(a, "conn %d", &n); err != nil {
		t.Fatalf("tenant a's answer %q: %v", a, err)
	}
	up.waitClosed(t, n, 5*time.Second)
	if got := call("b"); got == a {
		t.Errorf("tenant b called out on the retired script's connection %s", a)
	}
}
