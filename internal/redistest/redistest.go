// Package redistest runs a real redis-server for tests, the way httptest
// runs an HTTP server: on a free loopback port, with persistence off, owned
// and stopped by the test.
//
//	srv := redistest.Start(t)
//	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
//	srv.Kill()    // the server dies mid-test
//	srv.Restart() // and comes back on the same port, empty
//
// StartCluster runs a Redis Cluster of three masters the same way:
//
//	cl := redistest.StartCluster(t)
//	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs})
//	cl.Nodes[cl.NodeFor("{api}")].Kill() // the master of {api}'s slot dies
package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Server is a redis-server process owned by a test.
type Server struct {
	// Addr is host:port of the server.
	Addr string

	t    testing.TB
	port int
	args []string // extra redis-server arguments (cluster mode)
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// Start starts redis-server on a free loopback port and stops it when the
// test ends. Without redis-server on PATH the test is skipped, unless CI is
// "true": CI installs it, so there its absence fails the test.
func Start(t testing.TB) *Server {
	t.Helper()
	need(t)
	return startServer(t, nil)
}

// need skips the test when redis-server is missing, or fails it under CI.
func need(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not installed (CI=true: .ci/run installs it): %v", err)
		}
		t.Skip("redis-server not installed (Debian package redis-server)")
	}
}

func startServer(t testing.TB, args func(port int) []string) *Server {
	t.Helper()
	s := &Server{t: t, port: freePort(t)}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	if args != nil {
		s.args = args(s.port)
	}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning")
	cmd.Args = append(cmd.Args, s.args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			ok := ping(c)
			c.Close()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s did not answer within 10s: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ping(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprint(c, "PING\r\n"); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}

// Kill stops the server with SIGKILL (no shutdown courtesy) and waits for
// it to exit. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// Restart starts the server again on the same address, with no data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
