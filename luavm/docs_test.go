package luavm

import (
	"fmt"
	"os"
	"strings"
	"testing"
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
