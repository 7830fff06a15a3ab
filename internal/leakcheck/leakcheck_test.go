package leakcheck

import (
	"strings"
	"testing"
	"time"
)

func TestCheckNamesTheGoroutineLeftRunningAndPassesOnceItEnds(t *testing.T) {
	stop := make(chan struct{})
	ended := make(chan struct{})
	go blockedUntil(stop, ended)
	err := Check(50 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "leakcheck.blockedUntil") {
		t.Fatalf("Check with a goroutine blocked = %v, want an error naming blockedUntil", err)
	}
	close(stop)
	<-ended
	if err := Check(time.Second); err != nil {
		t.Fatalf("Check after the goroutine ended: %v", err)
	}
}

func TestCheckWaitsForAGoroutineThatEndsWithinTheGrace(t *testing.T) {
	stop := make(chan struct{})
	go blockedUntil(stop, make(chan struct{}))
	time.AfterFunc(100*time.Millisecond, func() { close(stop) })
	if err := Check(5 * time.Second); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func blockedUntil(stop <-chan struct{}, ended chan<- struct{}) {
	<-stop
	close(ended)
}
