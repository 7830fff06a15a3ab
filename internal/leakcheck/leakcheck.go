// Package leakcheck finds the goroutines a package's tests left running,
// so that a test which does not stop its servers, clients or loops fails
// the run instead of slowing, or skewing the measurements of, the tests
// after it:
//
//	func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }
//
// It checks at the end of the package rather than after each test, as
// go.uber.org/goleak's VerifyTestMain does, because parallel tests share
// the process: a goroutine alive after the last test is one nothing will
// stop.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Run runs the package's tests and, if they passed, Check with Grace,
// reporting leaks on stderr. It returns the exit code for os.Exit.
func Run(m *testing.M) int {
	code := m.Run()
	if code == 0 {
		if err := Check(Grace); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// Grace is how long Check waits for goroutines to end by default: a
// server's workers and a closed connection's readers end shortly after
// Shutdown returns, later on a loaded machine.
const Grace = 10 * time.Second

// ignored are the frames of goroutines that are not leaks: the runtime's
// and testing's own, and fasthttp's housekeeping, which is either
// process-wide or stops by itself once what it looks after is closed (a
// worker pool's cleaner sleeps MaxIdleWorkerDuration before it sees the
// pool stopped; a client's cleaners sleep up to MaxIdleConnDuration, 10s by
// default, before they see their connections gone).
var ignored = []string{
	"testing.(*M).",
	"testing.runTests",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"github.com/valyala/fasthttp.updateServerDate",
	"github.com/valyala/fasthttp.(*workerPool).Start.func",
	"github.com/valyala/fasthttp.(*HostClient).connsCleaner",
	"github.com/valyala/fasthttp.(*Client).mCleaner",
	"github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean",
	"github.com/valyala/fasthttp/stackless.NewFunc",
}

// Check waits up to grace for every goroutine but the caller and the
// ignored ones to end, and returns an error with the stacks of those still
// running then, or nil.
func Check(grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		left := running()
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leakcheck: %d goroutines still running %v after the tests:\n\n%s",
				len(left), grace, strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running returns the stacks of the goroutines other than the caller's
// and the ignored ones.
func running() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	// The first stack is the caller's.
	for _, g := range strings.Split(string(buf), "\n\n")[1:] {
		if !isIgnored(g) {
			out = append(out, g)
		}
	}
	return out
}

func isIgnored(stack string) bool {
	for _, f := range ignored {
		if strings.Contains(stack, f) {
			return true
		}
	}
	return false
}
