package main

import (
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary play the harness's child roles: the harness
// re-executes os.Executable(), which under go test is this binary.
func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "upstream":
		if err := runUpstream(envOr("KEYSTONE_BENCH_LISTEN", "127.0.0.1:0")); err != nil {
			fmt.Fprintln(os.Stderr, "upstream:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "loadgen":
		if err := runLoadgen(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
