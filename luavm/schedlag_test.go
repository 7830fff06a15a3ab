package luavm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDeadlineExtendsByTheSchedulerLag drives expire as the timer would,
// with lag added to the meter by hand: lag since the budget started
// extends it, up to lagMaxExtend budgets; without lag it ends.
func TestDeadlineExtendsByTheSchedulerLag(t *testing.T) {
	d := newDeadline()
	defer d.stop()
	const budget = time.Hour // the real timer never fires during the test
	d.arm(budget)

	sched.total.Add(int64(30 * time.Minute)) // the host starved the process
	d.expire()
	if d.expiredNow() {
		t.Fatal("expired although the scheduler held goroutines back for half the budget")
	}
	// The real meter may be running too (a script another test left
	// open) and add its own few microseconds.
	if got := time.Duration(d.extended.Load()); got < 30*time.Minute || got > 30*time.Minute+time.Second {
		t.Fatalf("extended by %v, want 30m", got)
	}
	// pause sees the extension: the remaining budget includes it.
	if !d.pause() {
		t.Fatal("pause after an extension reported the deadline fired")
	}
	if d.remaining < budget {
		t.Errorf("remaining %v after a 30m extension of a 1h budget that just started, want more than 1h", d.remaining)
	}
	rem := d.remaining
	d.resume()

	// resume starts counting anew, with a cap of lagMaxExtend times the
	// budget left: lag before it is not credited again.
	sched.total.Add(int64(100 * time.Hour))
	d.expire()
	if got := time.Duration(d.extended.Load()); got != lagMaxExtend*rem {
		t.Fatalf("extended by %v, want the cap %v", got, lagMaxExtend*rem)
	}
	d.expire() // the cap is spent: the budget ends
	if !d.expiredNow() {
		t.Fatal("did not expire past the extension cap")
	}
}

func TestDeadlineWithoutLagExpires(t *testing.T) {
	d := newDeadline()
	defer d.stop()
	d.arm(time.Hour)
	d.expire()
	if !d.expiredNow() {
		t.Fatal("a budget with no scheduler lag did not end")
	}
}

// TestSchedLagSeesAStarvedProcess runs the meter while more goroutines
// spin than there are Ps: the meter's goroutine waits for a P like any
// other, and its lateness grows. Bounded: the spinners stop after 300ms.
func TestSchedLagSeesAStarvedProcess(t *testing.T) {
	sched.acquire()
	defer sched.release()
	before := sched.lag()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if sched.lag() <= before {
		t.Errorf("no scheduler lag measured while %d goroutines spun on %d Ps", 4*runtime.GOMAXPROCS(0), runtime.GOMAXPROCS(0))
	}
}
