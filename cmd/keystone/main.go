// Command keystone is the Keystone gateway: a multi-tenant reverse proxy and
// API gateway configured by one YAML file and scripted in Lua.
//
//	keystone                              run on the embedded default config
//	keystone run [-c FILE] [--listen ADDR]
//	keystone check -c FILE                validate a config and its scripts
//	keystone healthcheck [--url URL]      probe a running gateway (for containers)
//	keystone version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only on KEYSTONE_PPROF's listener
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/server"
	"github.com/valyala/fasthttp"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  keystone                                 run on the embedded default config
  keystone run [-c|--config FILE] [--listen ADDR]
  keystone check -c|--config FILE          validate FILE and every script it names
  keystone healthcheck [--url URL]         exit 0 if a running gateway answers its health check
  keystone version
`

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(args, stdout, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(args, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "keystone", buildVersion())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "keystone: unknown command %q\n%s", cmd, usage)
		return 2
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// newFlags returns a flag set with -c/--config (Go's flag package accepts
// both one and two dashes for every flag). KEYSTONE_CONFIG is the default,
// so a container sets the config once for both the gateway and its
// HEALTHCHECK.
func newFlags(name string, stderr io.Writer, cfgPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("KEYSTONE_CONFIG")
	fs.StringVar(cfgPath, "c", def, "config `FILE` (default: $KEYSTONE_CONFIG, else the embedded default config)")
	fs.StringVar(cfgPath, "config", def, "config `FILE` (same as -c)")
	return fs
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	var cfgPath, listen string
	fs := newFlags("run", stderr, &cfgPath)
	fs.StringVar(&listen, "listen", "", "listen `ADDR`, overriding server.listen")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keystone run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	var cfg *config.Config
	var err error
	if cfgPath == "" {
		// The default config proxies /demo/ to three demo upstreams that
		// this process starts on loopback ports it picks.
		demo, derr := server.StartDemoUpstreams(3)
		if derr != nil {
			fmt.Fprintln(stderr, "keystone:", derr)
			return 1
		}
		defer demo.Close()
		env := func(name string) (string, bool) {
			switch name {
			case "KEYSTONE_DEMO_1", "KEYSTONE_DEMO_2", "KEYSTONE_DEMO_3":
				i, _ := strconv.Atoi(name[len(name)-1:])
				return demo.Addrs[i-1], true
			}
			return os.LookupEnv(name)
		}
		cfg, err = config.Default(config.WithEnv(env))
	} else {
		cfg, err = config.Load(cfgPath)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if listen != "" {
		cfg.Server.Listen = listen
	}

	out := stdout
	if cfg.Logging.Output == "stderr" {
		out = stderr
	}
	logger := server.NewLogger(cfg.Logging, out)
	srv, err := server.New(cfg, server.Options{Logger: logger, Version: buildVersion()})
	if err != nil {
		fmt.Fprintln(stderr, "keystone:", err)
		return 1
	}
	if addr := os.Getenv("KEYSTONE_PPROF"); addr != "" {
		go servePprof(addr, logger)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	select {
	case err := <-errc:
		logger.Error("server stopped", "component", "main", "error", err)
		return 1
	case sig := <-sigc:
		grace := cfg.Server.ShutdownGrace.D()
		logger.Info("shutting down", "component", "main", "signal", sig.String(), "grace", grace.String())
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			logger.Warn("shutdown grace expired with requests in flight", "component", "main", "error", err)
		}
		logger.Info("stopped", "component", "main")
		return 0
	}
}

// servePprof serves net/http/pprof on a separate debug listener, never on
// the gateway's own.
func servePprof(addr string, log *slog.Logger) {
	log.Info("pprof listening", "component", "main", "addr", addr)
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof listener failed", "component", "main", "error", err)
	}
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	var cfgPath string
	fs := newFlags("check", stderr, &cfgPath)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var cfg *config.Config
	var err error
	if cfgPath == "" {
		cfg, err = config.Default()
	} else {
		cfg, err = config.Load(cfgPath)
	}
	if err == nil {
		err = server.Check(cfg)
	}
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// cmdHealthcheck probes a running gateway's /admin/health: the container
// HEALTHCHECK, which must work without curl in the image.
func cmdHealthcheck(args []string, stderr io.Writer) int {
	var cfgPath, url string
	fs := newFlags("healthcheck", stderr, &cfgPath)
	fs.StringVar(&url, "url", "", "health `URL` (default: derived from the config's listen address and admin prefix)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if url == "" {
		var cfg *config.Config
		var err error
		if cfgPath == "" {
			cfg, err = config.Default()
		} else {
			cfg, err = config.Load(cfgPath)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		url = server.HealthURL(cfg)
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if tok := os.Getenv("KEYSTONE_ADMIN_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if err := fasthttp.DoTimeout(req, resp, *timeout); err != nil {
		fmt.Fprintln(stderr, "keystone healthcheck:", err)
		return 1
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		fmt.Fprintf(stderr, "keystone healthcheck: %s answered %d\n", url, resp.StatusCode())
		return 1
	}
	return 0
}
