package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestExampleConfigsPassCheck runs "keystone check FILE" over every config
// the repository ships, as their comments tell users to: configs/*.yaml
// and the default config's source, config/default.yaml.
func TestExampleConfigsPassCheck(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found %d example configs in configs/, want development, staging, production and production-high-load", len(files))
	}
	files = append(files, "../../config/default.yaml")
	// With and without the variables the configs read: ${VAR} references
	// with fallbacks must be valid both ways.
	for _, env := range []map[string]string{
		{},
		{"KEYSTONE_ADMIN_TOKEN": "t0ken", "KEYSTONE_LISTEN": "127.0.0.1:18080"},
	} {
		for _, name := range []string{"KEYSTONE_CONFIG", "KEYSTONE_ADMIN_TOKEN", "KEYSTONE_LISTEN"} {
			t.Setenv(name, env[name])
		}
		for _, f := range files {
			var out, errOut bytes.Buffer
			if code := run([]string{"check", f}, &out, &errOut); code != 0 || out.String() != "ok\n" {
				t.Errorf("keystone check %s (env %v): exit %d, stdout %q\n%s", f, env, code, out.String(), errOut.String())
			}
		}
	}
}

// TestReadmeConfigPassesCheck saves the README's "Your own config" example
// and its scripts/web.lua as a user would, and checks them.
func TestReadmeConfigPassesCheck(t *testing.T) {
	t.Setenv("KEYSTONE_CONFIG", "")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := func(lang, firstLine string) string {
		t.Helper()
		m := regexp.MustCompile("(?s)```" + lang + "\n(" + regexp.QuoteMeta(firstLine) + "\n.*?)```").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README.md has no ```%s block starting %q", lang, firstLine)
		}
		return string(m[1])
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keystone.yaml")
	write(t, cfg, block("yaml", "# keystone.yaml"))
	if err := os.Mkdir(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "scripts", "web.lua"), block("lua", "-- scripts/web.lua: routes are relative to the tenant's path_prefix"))
	var out, errOut bytes.Buffer
	if code := run([]string{"check", cfg}, &out, &errOut); code != 0 {
		t.Errorf("keystone check on the README's keystone.yaml and scripts/web.lua: exit %d\n%s", code, errOut.String())
	}
}
