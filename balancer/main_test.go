package balancer

import (
	"fmt"
	"os"
	"testing"

	"github.com/keystone-gateway/keystone/internal/leakcheck"
)

// TestMain fails the run if the tests left goroutines running
// (internal/leakcheck).
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
