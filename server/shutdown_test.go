package server

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestShutdownLetsInFlightRequestsFinishAndClosesIdleConnections(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	release := make(chan struct{})
	up.setHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			<-release
		}
		ctx.SetBodyString("done")
	})
	g := startGateway(t, oneTenant("api", "", "", up.url()))

	// An idle keep-alive client must not hold shutdown up.
	idle, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.Write([]byte("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := idle.Read(buf); err != nil {
		t.Fatal(err)
	}

	slow := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			slow <- err.Error()
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		slow <- string(b[:n])
	}()
	eventually(t, 5*time.Second, "the slow request to reach the upstream", func() bool { return up.requests.Load() >= 2 })

	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownDone <- g.srv.Shutdown(ctx)
	}()
	// New connections are refused once shutdown began.
	eventually(t, 5*time.Second, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", g.addr, 100*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-shutdownDone:
		t.Fatalf("shutdown returned (%v) while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got := <-slow; !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "done") {
		t.Errorf("in-flight request did not complete: %q", got)
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not finish after the last request")
	}
}

func TestShutdownGraceBoundsAStuckRequest(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	stuck := make(chan struct{})
	defer close(stuck)
	up.setHandler(func(ctx *fasthttp.RequestCtx) { <-stuck })
	g := startGateway(t, oneTenant("api", "", "timeouts: {request: 30s}", up.url()))
	go func() {
		c, err := net.Dial("tcp", g.addr)
		if err == nil {
			defer c.Close()
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			_, _ = c.Read(make([]byte, 10))
		}
	}()
	eventually(t, 5*time.Second, "the request to reach the upstream", func() bool { return up.requests.Load() == 1 })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := g.srv.Shutdown(ctx)
	if err == nil {
		t.Error("Shutdown reported success with a request still in flight")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v with a 300ms grace", d)
	}
}
