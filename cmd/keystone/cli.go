package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/keystone-gateway/keystone/config"
)

// Usage texts, one per subcommand. Each names every flag its FlagSet
// defines, by the spelling users type (TestHelpNamesEveryFlag holds them
// to it); Go's flag package also accepts one dash for long names
// (-config) and two for short ones (--c).
const (
	usageRun = `usage: keystone run [FILE | -c|--config FILE] [--listen ADDR]

Run the gateway on FILE, else on $KEYSTONE_CONFIG, else on the embedded
default config. SIGTERM or SIGINT shuts it down gracefully; SIGHUP reloads
FILE and its scripts (see keystone reload).

  FILE, -c, --config FILE   the config file (FILE and -c are the same; give one)
  --listen ADDR             listen on ADDR (host:port, e.g. ":8080" or
                            "127.0.0.1:9090") instead of server.listen
  -h, --help                show this help
`
	usageCheck = `usage: keystone check [FILE | -c|--config FILE]

Validate FILE and every script it names, as the gateway would load them.
Prints "ok" on stdout and exits 0, or prints every problem on stderr as
FILE:LINE:COL: field.path: message and exits 1. Without FILE it checks
$KEYSTONE_CONFIG, else the embedded default config.

  FILE, -c, --config FILE   the config file (FILE and -c are the same; give one)
  -h, --help                show this help
`
	usageHealthcheck = `usage: keystone healthcheck [-c|--config FILE] [--url URL] [--timeout DURATION]

Exit 0 when the running gateway's own health endpoint (admin.prefix +
/health) answers 200 with its health document, 1 otherwise: the container
HEALTHCHECK. It reads the config the gateway runs with (-c, else
$KEYSTONE_CONFIG, else the embedded default) for the listen address, the
admin prefix and admin.token. It needs the admin endpoints: with
admin.enabled false it refuses rather than ask a tenant.

  -c, --config FILE       the gateway's config file
  --url URL               probe URL instead of the one derived from the config
  --timeout DURATION      give up after this long (default 3s)
  -h, --help              show this help
`
	usageReload = `usage: keystone reload [FILE | -c|--config FILE] [--timeout DURATION]

Make the running gateway reload its config and scripts. With server.pid_file
set in FILE, send SIGHUP to the process whose id it holds; otherwise POST
the gateway's admin reload endpoint (admin.prefix + /reload, with
admin.token) and print the result. Without FILE it reads $KEYSTONE_CONFIG.
A refused reload leaves the running config serving and exits 1.

  FILE, -c, --config FILE   the gateway's config file
  --timeout DURATION        give up after this long (default 10s)
  -h, --help                show this help
`
	usageVersion = `usage: keystone version

Print the build's version.

  -h, --help   show this help
`
)

// usage is the top-level help.
const usage = `usage:
  keystone                                   run on $KEYSTONE_CONFIG, else the embedded default config
  keystone run [FILE | -c|--config FILE] [--listen ADDR]
  keystone check [FILE | -c|--config FILE]   validate FILE and every script it names
  keystone healthcheck [--url URL]           exit 0 if the running gateway answers its health check
  keystone reload [FILE | -c|--config FILE]  make the running gateway reload its config and scripts
  keystone version

Run "keystone COMMAND --help" for a command's flags.
`

// cli is one subcommand's argument parsing: its flags, its usage text and
// where its messages go.
type cli struct {
	name   string // "check"
	usage  string
	fs     *flag.FlagSet
	stderr io.Writer
	config *string   // -c/--config's value; nil without configFlag
	use    configUse // how the subcommand takes its config
}

func newCLI(name, usage string, stderr io.Writer) *cli {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// parse reports errors itself, in the subcommand's words, followed by
	// the usage written above instead of flag's PrintDefaults, which shows
	// "-config" with one dash.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cli{name: name, usage: usage, fs: fs, stderr: stderr}
}

// parse parses args, flags and positional arguments in any order ("check
// FILE -c FILE" and "run --listen :9090 FILE" both work; "--" ends the
// flags), and returns the positional ones. It returns flag.ErrHelp for -h and
// --help, and a usage error, already printed with the usage on stderr,
// for anything else it cannot parse.
func (c *cli) parse(args []string) ([]string, error) {
	var pos []string
	for {
		err := c.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		if err != nil {
			// flag says "flag provided but not defined: -conifg"
			// whatever the user typed; say it as users type flags,
			// with the config's kind of suggestion.
			if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
				msg := "unknown flag " + dashed(name)
				if s := c.closest(name); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", dashed(s))
				}
				return nil, c.fail("%s", msg)
			}
			return nil, c.fail("%v", err)
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// fail prints "keystone NAME: message" and the usage on stderr, and
// returns the message as an error. Exit with 2.
func (c *cli) fail(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(c.stderr, "keystone %s: %s\n\n%s", c.name, msg, c.usage)
	return errors.New(msg)
}

// exit maps a parse error to the exit code: 0 after printing the help on
// stdout for flag.ErrHelp, 2 for a usage error (already printed).
func (c *cli) exit(err error, stdout io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, c.usage)
		return 0
	}
	return 2
}

// parseConfig parses args and resolves the config path from them
// (configPath). When the command is not to go on, ok is false and code is
// its exit status: 0 after --help, 2 after a usage error (already
// reported on stderr).
func (c *cli) parseConfig(args []string, stdout io.Writer) (path string, code int, ok bool) {
	pos, err := c.parse(args)
	if err != nil {
		return "", c.exit(err, stdout), false
	}
	if path, err = c.configPath(pos); err != nil {
		return "", 2, false
	}
	return path, 0, true
}

// noArgs refuses positional arguments.
func (c *cli) noArgs(pos []string) error {
	if len(pos) > 0 {
		return c.fail("unexpected argument %q", pos[0])
	}
	return nil
}

// configUse is how a subcommand takes its config. Every subcommand
// resolves it by the same rule (configPath); only these differ.
type configUse struct {
	// file lets a positional FILE name the config, as -c does
	// (run, check, reload). Without it a positional argument is a usage
	// error (healthcheck, whose arguments are all flags).
	file bool
	// needFile refuses the embedded default config: the subcommand
	// needs the file a running gateway was started with (reload).
	needFile bool
}

// configFlag adds -c and --config to the subcommand, which takes its
// config as use says.
func (c *cli) configFlag(p *string, use configUse) {
	c.fs.StringVar(p, "c", "", "config `FILE`")
	c.fs.StringVar(p, "config", "", "config `FILE` (same as -c)")
	c.config, c.use = p, use
}

// configPath resolves which config the subcommand reads, after parse, by
// the one rule every subcommand follows: the positional FILE or -c/--config
// (both given must name the same file), else $KEYSTONE_CONFIG, else the
// embedded default config, which it returns as "". What the subcommand
// does not take (configUse) is a usage error, already printed: exit 2.
func (c *cli) configPath(pos []string) (string, error) {
	if !c.use.file {
		if err := c.noArgs(pos); err != nil {
			return "", err
		}
	}
	if len(pos) > 1 {
		return "", c.fail("expected one config file, got %d arguments (%q, %q…)", len(pos), pos[0], pos[1])
	}
	flagPath := *c.config
	set := c.set("c") || c.set("config")
	path := os.Getenv("KEYSTONE_CONFIG")
	switch {
	case set && flagPath == "":
		return "", c.fail("-c/--config: expected a config file, got \"\"")
	case set && len(pos) == 1 && filepath.Clean(pos[0]) != filepath.Clean(flagPath):
		return "", c.fail("two config files given, %q and -c %q: give one", pos[0], flagPath)
	case set:
		path = flagPath
	case len(pos) == 1:
		path = pos[0]
	}
	if path == "" && c.use.needFile {
		return "", c.fail("no FILE, -c or $KEYSTONE_CONFIG given: the gateway's config file is needed to find it")
	}
	return path, nil
}

// loadConfig loads the config at path, or the embedded default config
// when path is "" (configPath) with opts: run passes its demo upstreams'
// addresses; without them the demo upstreams are at their fallback
// addresses. A file is read with the process environment.
func loadConfig(path string, opts ...config.Option) (*config.Config, error) {
	if path == "" {
		return config.Default(opts...)
	}
	return config.Load(path)
}

// set reports whether the flag name was given.
func (c *cli) set(name string) bool {
	found := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

// dashed spells a flag name as the usage does: "-c", "--config".
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// closest returns the defined flag nearest to name, within two edits, or "".
func (c *cli) closest(name string) string {
	var names []string
	c.fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) > 1 {
			names = append(names, f.Name)
		}
	})
	return config.Suggest(name, names)
}

// looksLikeConfig reports whether a word given in place of a command is
// probably a config file ("keystone staging.yaml").
func looksLikeConfig(s string) bool {
	return strings.HasSuffix(s, ".yaml") || strings.HasSuffix(s, ".yml")
}
