package config

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
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

// TestDocsTableDefaults reads the Default column of every key table in
// docs/configuration.md and checks each single literal (`30s`, `1MiB`,
// `"X-Request-ID"`, `true`) against the default the code applies to that
// key, so the tables cannot drift from config's defaults. Defaults written
// in words (GOMAXPROCS, off, none) are left to the prose.
func TestDocsTableDefaults(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	tenant := defaultTenant()
	sections := map[string]any{
		"server": defaultConfig().Server, "server.tls": defaultTLS(), "admin": defaultConfig().Admin,
		"logging": defaultConfig().Logging, "metrics": defaultConfig().Metrics, "tracing": defaultConfig().Tracing,
		"lua": DefaultLua(), "reload": defaultConfig().Reload, "shared": DefaultShared(),
		"tenants": tenant, "upstreams": Upstream{Weight: 1}, "timeouts": tenant.Timeouts, "pool": tenant.Pool,
		"retries": tenant.Retries, "health_check": defaultHealthCheck(), "outlier_detection": defaultOutlierDetection(),
		"circuit_breaker": defaultCircuitBreaker(), "auth": DefaultAuth(), "auth.jwt": DefaultJWT(),
		"auth.api_keys": DefaultAPIKeys(), "cors": defaultCORS(), "compression": defaultCompression(),
		"websocket": defaultWebSocket(), "rate_limits": defaultRateLimit(),
	}
	var section reflect.Value // the defaults of the current key table, if known
	var ok bool
	checked := 0
	for i, line := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(line, "## ") || strings.HasPrefix(line, "### "):
			section = reflect.Value{}
			if v, known := sections[strings.TrimSpace(strings.TrimLeft(line, "#"))]; known {
				section = reflect.ValueOf(v)
			}
			continue
		case strings.HasPrefix(line, "| Key |"):
			continue
		case section.IsValid() && strings.HasPrefix(line, "| `") && strings.Contains(line, "` key |"):
			// "| `acme` key | ...": a table of a block's keys.
			block, _, _ := strings.Cut(line[3:], "`")
			if section, ok = fieldByTag(section, block); !ok {
				t.Errorf("docs/configuration.md:%d: block %q has no field in its section's defaults", i+1, block)
			}
			continue
		case !section.IsValid() || !strings.HasPrefix(line, "| `"):
			if !strings.HasPrefix(line, "|") {
				continue
			}
			if !strings.HasPrefix(line, "| `") && !strings.HasPrefix(line, "|---") {
				section = reflect.Value{} // a table of something other than keys
			}
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			continue
		}
		key, def := strings.Trim(strings.TrimSpace(cells[1]), "`"), strings.TrimSpace(cells[3])
		if len(def) < 2 || def[0] != '`' || def[len(def)-1] != '`' || strings.Count(def, "`") != 2 {
			continue
		}
		lit := def[1 : len(def)-1]
		f, ok := fieldByTag(section, key)
		if !ok {
			t.Errorf("docs/configuration.md:%d: key %q has no field in its section's defaults", i+1, key)
			continue
		}
		if msg := literalMatches(f, lit); msg != "" {
			t.Errorf("docs/configuration.md:%d: %s documents default %s: %s", i+1, key, def, msg)
		}
		checked++
	}
	if checked < 100 {
		t.Errorf("checked %d documented defaults, want every key table's", checked)
	}
}

// fieldByTag returns the field of struct v whose yaml tag is key, or of
// its nested blocks for a dotted key ("redis.timeout").
func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
	name, rest, nested := strings.Cut(key, ".")
	for i := range v.NumField() {
		if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); tag == name {
			if nested {
				return fieldByTag(v.Field(i), rest)
			}
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// literalMatches reports how the documented literal lit differs from the
// default f, or "" if it is the same value. Types without a one-literal
// form (lists, blocks) always match.
func literalMatches(f reflect.Value, lit string) string {
	var want any
	var err error
	switch f.Type() {
	case reflect.TypeFor[Duration]():
		var d time.Duration
		d, err = time.ParseDuration(lit)
		want = Duration(d)
	case reflect.TypeFor[Size]():
		want, err = ParseSize(lit)
	default:
		switch f.Kind() {
		case reflect.Int:
			want, err = strconv.Atoi(lit)
		case reflect.Float64:
			want, err = strconv.ParseFloat(lit, 64)
		case reflect.Bool:
			want, err = strconv.ParseBool(lit)
		case reflect.String:
			want = strings.Trim(lit, `"`)
		default:
			return ""
		}
	}
	if err != nil {
		return err.Error()
	}
	if got := f.Interface(); got != want {
		return fmt.Sprintf("the code's default is %v", got)
	}
	return ""
}
