package main

import (
	"os"
	"strconv"
	"testing"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestStatFieldsSurvivesOddCommandNames(t *testing.T) {
	t.Parallel()
	f, err := statFields([]byte("42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 31 12 0 0 20 0 1 0 1 1 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f[0] != "S" || f[1] != "7" || f[11] != "31" || f[12] != "12" {
		t.Errorf("fields %q", f)
	}
	if _, err := statFields([]byte("42 (x S 1")); err == nil {
		t.Error("malformed stat accepted")
	}
}

func TestTreeUsageOfThisProcess(t *testing.T) {
	t.Parallel()
	// Burn a little CPU so the counters move.
	x := 0
	for i := 0; i < 20_000_000; i++ {
		x += i % 7
	}
	_ = x
	u, err := treeUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSSKiB <= 0 || u.Pids < 1 {
		t.Errorf("usage %+v", u)
	}
	if u.Ticks <= 0 && u.CPUNanos <= 0 {
		t.Errorf("no CPU time recorded: %+v", u)
	}
	if _, err := treeUsage(1 << 30); err == nil {
		t.Error("a missing process gave no error")
	}
}
