//go:build !race

package main

// raceEnabled reports whether the test binary was built with -race; the
// smoke test then builds keystone with -race too.
const raceEnabled = false
