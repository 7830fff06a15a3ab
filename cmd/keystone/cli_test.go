package main

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigPathRule holds every subcommand that reads a config to the one
// rule configPath states: FILE or -c/--config (the same file if both),
// else $KEYSTONE_CONFIG, else the embedded default (""); what differs is
// only whether FILE is taken (not by healthcheck) and whether the default
// will do (not for reload).
func TestConfigPathRule(t *testing.T) {
	// configPath only names the file; nothing is read.
	a, b, env := filepath.Join("conf", "a.yaml"), filepath.Join("conf", "b.yaml"), filepath.Join("conf", "env.yaml")
	subcommands := []struct {
		name string
		cli  func(io.Writer) *cli
	}{
		{"run", func(w io.Writer) *cli { return new(runArgs).cli(w) }},
		{"check", func(w io.Writer) *cli { return new(checkArgs).cli(w) }},
		{"healthcheck", func(w io.Writer) *cli { return new(healthcheckArgs).cli(w) }},
		{"reload", func(w io.Writer) *cli { return new(reloadArgs).cli(w) }},
	}
	cases := []struct {
		name string
		env  string // $KEYSTONE_CONFIG
		args []string
		// want is the path, or, with a leading "!", the usage error's
		// start; per subcommand where it differs.
		want    string
		wantFor map[string]string
	}{
		{name: "-c", args: []string{"-c", a}, want: a},
		{name: "--config=", args: []string{"--config=" + a}, want: a},
		{name: "-c over $KEYSTONE_CONFIG", env: env, args: []string{"-c", a}, want: a},
		{name: "$KEYSTONE_CONFIG", env: env, want: env},
		{name: "nothing: the embedded default", want: "",
			wantFor: map[string]string{"reload": "!no FILE, -c or $KEYSTONE_CONFIG given"}},
		{name: "-c empty", args: []string{"-c", ""}, want: `!-c/--config: expected a config file, got ""`},
		{name: "FILE", args: []string{a}, want: a,
			wantFor: map[string]string{"healthcheck": `!unexpected argument "` + a + `"`}},
		{name: "FILE over $KEYSTONE_CONFIG", env: env, args: []string{a}, want: a,
			wantFor: map[string]string{"healthcheck": `!unexpected argument "` + a + `"`}},
		{name: "FILE and -c naming the same file", args: []string{a, "-c", "./" + a}, want: "./" + a, // -c's spelling
			wantFor: map[string]string{"healthcheck": `!unexpected argument "` + a + `"`}},
		{name: "FILE and -c naming two files", args: []string{a, "-c", b}, want: "!two config files given",
			wantFor: map[string]string{"healthcheck": `!unexpected argument "` + a + `"`}},
		{name: "two FILEs", args: []string{a, b}, want: "!expected one config file, got 2 arguments",
			wantFor: map[string]string{"healthcheck": `!unexpected argument "` + a + `"`}},
	}
	for _, sc := range subcommands {
		for _, c := range cases {
			t.Run(sc.name+"/"+c.name, func(t *testing.T) {
				t.Setenv("KEYSTONE_CONFIG", c.env)
				want := c.want
				if w, ok := c.wantFor[sc.name]; ok {
					want = w
				}
				var stderr bytes.Buffer
				cl := sc.cli(&stderr)
				pos, err := cl.parse(c.args)
				if err != nil {
					t.Fatalf("parse %q: %v", c.args, err)
				}
				path, err := cl.configPath(pos)
				if msg, isErr := strings.CutPrefix(want, "!"); isErr {
					if err == nil || !strings.HasPrefix(stderr.String(), "keystone "+sc.name+": "+msg) ||
						!strings.Contains(stderr.String(), "\nusage: keystone "+sc.name) {
						t.Errorf("keystone %s %q: path %q, error %v, stderr:\n%s\nwant a usage error starting %q", sc.name, c.args, path, err, stderr.String(), msg)
					}
					return
				}
				if err != nil || path != want || stderr.Len() != 0 {
					t.Errorf("keystone %s %q: path %q, error %v, stderr %q; want %q", sc.name, c.args, path, err, stderr.String(), want)
				}
			})
		}
	}
}
