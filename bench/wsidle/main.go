// Command wsidle measures the memory a Keystone gateway spends on idle
// WebSocket connections: it builds (or takes) the keystone binary, runs it
// on loopback in front of a WebSocket echo upstream of its own, samples the
// gateway process's RSS, opens N WebSockets through it, waits, samples
// again, then proves every connection still echoes and closes them.
//
//	go run ./bench/wsidle -n 1000
//
// The upstream and the clients live in this process; only the gateway's
// memory is measured.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func main() {
	n := flag.Int("n", 1000, "WebSocket connections to hold open")
	hold := flag.Duration("hold", 3*time.Second, "how long they stay idle before RSS is sampled")
	bin := flag.String("keystone", "", "keystone binary (default: build ./cmd/keystone)")
	flag.Parse()
	if err := run(*n, *hold, *bin); err != nil {
		log.Fatal(err)
	}
}

func run(n int, hold time.Duration, bin string) error {
	dir, err := os.MkdirTemp("", "wsidle")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin == "" {
		bin = filepath.Join(dir, "keystone")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/keystone").CombinedOutput(); err != nil {
			return fmt.Errorf("build: %v\n%s", err, out)
		}
	}
	upstream, err := echoUpstream()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "keystone.yaml")
	yaml := fmt.Sprintf(`server: {listen: %q}
logging: {level: warn, access_log: false}
tenants:
  - {name: ws, path_prefix: /, upstreams: [{url: "http://%s"}], pool: {max_conns: 4096}}
`, addr, upstream)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("gateway did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// One connection first, so the baseline includes the tunnel code's
	// warm-up (pools, first goroutines), then settle.
	warm, _, err := websocket.Dial(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	before, err := rssKiB(cmd.Process.Pid)
	if err != nil {
		return err
	}
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", nil)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return fmt.Errorf("dial: %w", err)
	}
	time.Sleep(hold)
	after, err := rssKiB(cmd.Process.Pid)
	if err != nil {
		return err
	}
	for i, c := range conns {
		msg := []byte("still here " + strconv.Itoa(i))
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			return fmt.Errorf("conn %d after the hold: %w", i, err)
		}
		if _, b, err := c.Read(ctx); err != nil || string(b) != string(msg) {
			return fmt.Errorf("conn %d after the hold: %q, %v", i, b, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	warm.Close(websocket.StatusNormalClosure, "")
	fmt.Printf("gateway RSS: %d KiB with 1 WebSocket, %d KiB with %d more idle for %v: %.1f KiB per connection; all %d echoed after the hold\n",
		before, after, n, hold, float64(after-before)/float64(n), n)
	return nil
}

// echoUpstream serves WebSocket echo on loopback and returns its address.
func echoUpstream() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { //nolint:errcheck
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if err := c.Write(context.Background(), typ, b); err != nil {
				return
			}
		}
	}))
	return ln.Addr().String(), nil
}

// rssKiB reads VmRSS of a process from /proc.
func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
