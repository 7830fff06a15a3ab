package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

// docBlock is one fenced code block of a Markdown file.
type docBlock struct {
	lang, text string
	line       int // of the opening fence, 1-based
}

// fencedBlocks returns the fenced code blocks of a Markdown document.
func fencedBlocks(doc string) []docBlock {
	var out []docBlock
	var cur *docBlock
	var body []string
	for i, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "```") {
			if cur != nil {
				body = append(body, line)
			}
			continue
		}
		if cur == nil {
			cur = &docBlock{lang: strings.TrimSpace(line[3:]), line: i + 1}
			body = body[:0]
			continue
		}
		cur.text = strings.Join(body, "\n") + "\n"
		out = append(out, *cur)
		cur = nil
	}
	return out
}

// completeConfig reports whether a YAML block is a whole config rather than
// a fragment: it has a top-level tenants key.
func completeConfig(text string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "tenants:") {
			return true
		}
	}
	return false
}

// parseDocExample loads a config from the docs as keystone.yaml, with an
// empty environment and no scripts directory.
func parseDocExample(text string) (*Config, error) {
	noEnv := func(string) (string, bool) { return "", false }
	return Parse("keystone.yaml", []byte(text), WithEnv(noEnv), WithScripts(fstest.MapFS{}, "scripts"))
}

// TestDocsExamplesLoad loads every complete config in
// docs/configuration.md, so the reference cannot drift from the schema. A
// YAML block followed by a text block of "keystone.yaml:..." lines is an
// example of `keystone check` output: it must fail with exactly those lines.
func TestDocsExamplesLoad(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := fencedBlocks(string(doc))
	loaded, failing := 0, 0
	for i, b := range blocks {
		if b.lang != "yaml" || !completeConfig(b.text) {
			continue
		}
		t.Run(fmt.Sprintf("block at line %d", b.line), func(t *testing.T) {
			_, err := parseDocExample(b.text)
			if i+1 < len(blocks) && blocks[i+1].lang == "text" && strings.HasPrefix(blocks[i+1].text, "keystone.yaml:") {
				failing++
				want := strings.TrimSpace(blocks[i+1].text)
				if err == nil {
					t.Fatalf("loads, but the docs show it failing with:\n%s", want)
				}
				if got := err.Error(); got != want {
					t.Errorf("errors differ from the docs\ngot:\n%s\nwant:\n%s", got, want)
				}
				return
			}
			loaded++
			if err != nil {
				t.Errorf("does not load:\n%v", err)
			}
		})
	}
	if loaded < 7 || failing < 1 {
		t.Errorf("found %d complete configs and %d error examples in docs/configuration.md, want every example", loaded, failing)
	}
}

// TestDocsDefaultsAreTheDefaults loads the "every key at its default" config
// of docs/configuration.md and checks that it equals the smallest config
// with the same tenant, that is, that every default it writes is the one
// the code applies.
func TestDocsDefaultsAreTheDefaults(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var written *Config
	for _, b := range fencedBlocks(string(doc)) {
		if b.lang == "yaml" && strings.HasPrefix(b.text, "# Every key at its default.") {
			if written, err = parseDocExample(b.text); err != nil {
				t.Fatalf("block at line %d: %v", b.line, err)
			}
		}
	}
	if written == nil {
		t.Fatal(`docs/configuration.md has no block starting "# Every key at its default."`)
	}
	minimal, err := parseDocExample(`
tenants:
  - name: app
    path_prefix: /
    upstreams:
      - url: http://10.0.0.11:8080
      - url: http://10.0.0.12:8080
    health_check: {}
    outlier_detection: {}
    circuit_breaker: {}
`)
	if err != nil {
		t.Fatal(err)
	}
	// An empty list written out and a list left out both mean none.
	for _, c := range []*Config{written, minimal} {
		if len(c.Server.TrustedProxies) == 0 {
			c.Server.TrustedProxies = nil
		}
		for i := range c.Tenants {
			if len(c.Tenants[i].Domains) == 0 {
				c.Tenants[i].Domains = nil
			}
			if len(c.Tenants[i].UpgradeProtocols) == 0 {
				c.Tenants[i].UpgradeProtocols = nil
			}
		}
	}
	for _, s := range []struct {
		name      string
		got, want any
	}{
		{"server", written.Server, minimal.Server},
		{"admin", written.Admin, minimal.Admin},
		{"logging", written.Logging, minimal.Logging},
		{"lua", written.Lua, minimal.Lua},
		{"tenants", written.Tenants, minimal.Tenants},
	} {
		if !reflect.DeepEqual(s.got, s.want) {
			t.Errorf("%s written out as documented defaults:\n%+v\ndiffers from the defaults:\n%+v", s.name, s.got, s.want)
		}
	}
}
