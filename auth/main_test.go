package auth

import (
	"os"
	"testing"

	"github.com/keystone-gateway/keystone/internal/leakcheck"
)

// TestMain fails the run if the tests left goroutines running
// (internal/leakcheck).
func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m))
}
