package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/keystone-gateway/keystone/config"
)

// BenchmarkParseProduction bounds the config share of a reload: parsing,
// expanding, defaulting and validating the shipped production config
// (five tenants, anchors, a script check against the disk).
func BenchmarkParseProduction(b *testing.B) {
	path := filepath.Join("..", "configs", "production.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	env := config.WithEnv(func(k string) (string, bool) { return "token", k == "KEYSTONE_ADMIN_TOKEN" })
	b.ReportAllocs()
	for b.Loop() {
		if _, err := config.Parse(path, data, env); err != nil {
			b.Fatal(err)
		}
	}
}
