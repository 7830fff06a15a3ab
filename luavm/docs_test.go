package luavm

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// TestDocsExamplesLoad loads every complete script (a lua block ending in
// "return r") in docs/lua.md, so the reference cannot drift from the DSL.
func TestDocsExamplesLoad(t *testing.T) {
	doc, err := os.ReadFile("../docs/lua.md")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.ups["api-canary"] = e.ups["api2"]
	blocks := 0
	const fence = "```lua\n"
	for rest, offset := string(doc), 0; ; {
		i := strings.Index(rest, fence)
		if i < 0 {
			break
		}
		src, _, _ := strings.Cut(rest[i+len(fence):], "```")
		line := strings.Count(string(doc[:offset+i]), "\n") + 2
		offset += i + len(fence)
		rest = rest[i+len(fence):]
		if !strings.HasSuffix(strings.TrimSpace(src), "return r") {
			continue
		}
		blocks++
		t.Run(fmt.Sprintf("block at line %d", line), func(t *testing.T) {
			f := serveScript(t, e.load(t, testConfig(&logBuffer{}), scriptFS(src), "main.lua", Options{}))
			// Every example must at least answer without a script error.
			if r := f.do(t, "GET", "/", nil, ""); r.status == 500 {
				t.Errorf("GET /: %d %s", r.status, r.body)
			}
		})
	}
	if blocks < 10 {
		t.Errorf("found %d complete scripts in docs/lua.md, want every example", blocks)
	}
}

// TestDocsLimitsAreConfigDefaults checks the defaults docs/lua.md states
// for the lua: settings, in its Limits table and in the "(default X)"
// comments of its config example, against config.DefaultLua. Defaults
// written as formulas (max(4×pool_size, 64), GOMAXPROCS) are skipped.
func TestDocsLimitsAreConfigDefaults(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/lua.md")
	if err != nil {
		t.Fatal(err)
	}
	def := reflect.ValueOf(config.DefaultLua())
	field := func(key string) (reflect.Value, bool) {
		for i := range def.NumField() {
			if tag, _, _ := strings.Cut(def.Type().Field(i).Tag.Get("yaml"), ","); tag == key {
				return def.Field(i), true
			}
		}
		return reflect.Value{}, false
	}
	comment := regexp.MustCompile("^  ([a-z_]+): .*# .*\\(default ([^)]+)\\)$")
	checked := 0
	for i, line := range strings.Split(string(doc), "\n") {
		var key, lit string
		if m := comment.FindStringSubmatch(line); m != nil {
			key, lit = m[1], m[2]
		} else if cells := strings.Split(line, "|"); len(cells) == 5 && strings.HasPrefix(line, "| `") {
			key, lit = strings.Trim(strings.TrimSpace(cells[1]), "`"), strings.TrimSpace(cells[2])
		} else {
			continue
		}
		f, ok := field(key)
		if !ok {
			continue // a row of another table, or a limit that is no setting
		}
		var got, want int64
		switch f.Type() {
		case reflect.TypeFor[config.Duration]():
			d, err := time.ParseDuration(lit)
			if err != nil {
				continue
			}
			got, want = f.Int(), int64(d)
		case reflect.TypeFor[config.Size]():
			s, err := config.ParseSize(lit)
			if err != nil {
				continue
			}
			got, want = f.Int(), int64(s)
		default:
			n, err := strconv.Atoi(lit)
			if err != nil {
				continue
			}
			got, want = f.Int(), int64(n)
		}
		if got != want {
			t.Errorf("docs/lua.md:%d: %s documents default %s; config's is %v", i+1, key, lit, f.Interface())
		}
		checked++
	}
	if checked < 12 {
		t.Errorf("checked %d documented Lua defaults, want those of the Limits table and the config example", checked)
	}
}
