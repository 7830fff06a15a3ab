package server

import (
	"os"
	"testing"

	"github.com/keystone-gateway/keystone/internal/leakcheck"
)

// TestMain fails the run if the tests left goroutines running: a server,
// client or loop a test did not stop keeps working, and allocating, during
// the tests after it, whose allocation budgets count the whole process.
func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}
