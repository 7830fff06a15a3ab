package main

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerIgnore reads root/.dockerignore into matchers with Docker's
// semantics for the patterns it holds: paths relative to the context root,
// a leading "/" ignored, "*" and "?" within one path element, "**" across
// elements, and a match on a directory excluding everything in it. It
// refuses "!" exceptions and "[" classes rather than get them wrong.
func dockerIgnore(root string) ([]*regexp.Regexp, error) {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []*regexp.Regexp
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || p[0] == '#' {
			continue
		}
		if strings.ContainsAny(p, "![\\") {
			return nil, fmt.Errorf(".dockerignore: pattern %q: this test's matcher does not handle it", p)
		}
		p = path.Clean(strings.TrimPrefix(p, "/"))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("$")
		out = append(out, regexp.MustCompile(re.String()))
	}
	return out, sc.Err()
}

// ignored reports whether rel (slash-separated, relative to the context
// root) or one of its parent directories matches a pattern.
func ignored(pats []*regexp.Regexp, rel string) bool {
	for p := rel; p != "." && p != "/"; p = path.Dir(p) {
		for _, re := range pats {
			if re.MatchString(p) {
				return true
			}
		}
	}
	return false
}

// copyDockerContext copies what a `docker build` of src would send as its
// context into dst, and returns the paths it left out.
func copyDockerContext(src, dst string) (left []string, err error) {
	pats, err := dockerIgnore(src)
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel != "." && ignored(pats, rel) {
			left = append(left, rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		to := filepath.Join(dst, filepath.FromSlash(rel))
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case !d.Type().IsRegular():
			return nil // a git worktree's .git file is regular; sockets and links are not context
		}
		return copyFile(p, to)
	})
	return left, err
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestDockerContextLeavesOutHistoryAndBuildOutput checks .dockerignore
// against a fake checkout: history, bench output and test binaries stay out
// of the context, and what the Dockerfile copies stays in. That the build
// works from the context is TestDockerBuildProducesAStaticBinary's job.
func TestDockerContextLeavesOutHistoryAndBuildOutput(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(src, ".dockerignore"), string(b))
	files := map[string]bool{ // path → in the context
		".git/HEAD":                       false,
		".git/objects/ab/cdef":            false,
		"bench/out/smoke/report.json":     false,
		"bench/results/x/report.md":       false,
		"server/server.test":              false,
		"cpu.prof":                        false,
		"keystone":                        false,
		"go.mod":                          true,
		"go.sum":                          true,
		"cmd/keystone/main.go":            true,
		"config/default.yaml":             true,
		"config/defaultscripts/hello.lua": true,
		"configs/production.yaml":         true,
		"configs/scripts/auth.lua":        true,
		"bench/main.go":                   true,
	}
	for f := range files {
		p := filepath.Join(src, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, p, "x")
	}
	if _, err := copyDockerContext(src, dst); err != nil {
		t.Fatal(err)
	}
	for f, want := range files {
		_, err := os.Stat(filepath.Join(dst, filepath.FromSlash(f)))
		if got := err == nil; got != want {
			t.Errorf("%s in the build context: %v, want %v", f, got, want)
		}
	}
}
