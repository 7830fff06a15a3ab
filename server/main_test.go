package server

import (
	"fmt"
	"os"
	"testing"

	"github.com/keystone-gateway/keystone/internal/leakcheck"
)

// TestMain fails the run if the tests left goroutines running: a server,
// client or loop a test did not stop keeps working, and allocating, during
// the tests after it, whose allocation budgets count the whole process.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := leakcheck.Check(leakcheck.Grace); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
