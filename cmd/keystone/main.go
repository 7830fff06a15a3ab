// Command keystone is the Keystone gateway: a multi-tenant reverse proxy and
// API gateway configured by one YAML file and scripted in Lua.
//
//	keystone                              run on $KEYSTONE_CONFIG, else the embedded default config
//	keystone run [FILE | -c FILE] [--listen ADDR]
//	keystone check [FILE | -c FILE]       validate a config and its scripts
//	keystone healthcheck [--url URL]      probe a running gateway (for containers)
//	keystone reload [FILE | -c FILE]      make a running gateway reload (SIGHUP or admin POST)
//	keystone version
//
// Exit codes: 0 success, 1 failure (a bad config, an unhealthy gateway),
// 2 usage error (an unknown command, argument or flag, a bad flag value).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only on KEYSTONE_PPROF's listener
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/server"
	"github.com/valyala/fasthttp"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return 0
		case "-version", "--version":
			return cmdVersion(args[1:], stdout, stderr)
		}
		// "keystone -c FILE" and "keystone --listen ADDR" run.
		return cmdRun(args, stdout, stderr)
	}
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
		return cmdHealthcheck(args, stdout, stderr)
	case "reload":
		return cmdReload(args, stdout, stderr)
	case "version":
		return cmdVersion(args, stdout, stderr)
	case "help":
		switch {
		case len(args) == 0:
			fmt.Fprint(stdout, usage)
			return 0
		case len(args) == 1 && (args[0] == "run" || args[0] == "check" || args[0] == "healthcheck" || args[0] == "reload" || args[0] == "version"):
			// "keystone help check" is "keystone check --help".
			return run([]string{args[0], "--help"}, stdout, stderr)
		}
		fmt.Fprintf(stderr, "keystone help: unknown command %q\n\n%s", args[0], usage)
		return 2
	default:
		msg := fmt.Sprintf("unknown command %q", cmd)
		if looksLikeConfig(cmd) {
			msg += fmt.Sprintf(" (did you mean \"keystone run %s\" or \"keystone check %s\"?)", cmd, cmd)
		}
		fmt.Fprintf(stderr, "keystone: %s\n\n%s", msg, usage)
		return 2
	}
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	c := newCLI("version", usageVersion, stderr)
	pos, err := c.parse(args)
	if err == nil {
		err = c.noArgs(pos)
	}
	if err != nil {
		return c.exit(err, stdout)
	}
	fmt.Fprintln(stdout, "keystone", buildVersion())
	return 0
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

// runArgs are keystone run's flags.
type runArgs struct{ config, listen string }

func (a *runArgs) cli(stderr io.Writer) *cli {
	c := newCLI("run", usageRun, stderr)
	c.configFlag(&a.config, configUse{file: true})
	c.fs.StringVar(&a.listen, "listen", "", "listen `ADDR`")
	return c
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	// First thing: SIGHUP's default action ends the process (status
	// 129), and one may arrive while the config loads.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)
	var a runArgs
	c := a.cli(stderr)
	cfgPath, code, ok := c.parseConfig(args, stdout)
	if !ok {
		return code
	}
	listen := a.listen
	if c.set("listen") {
		if err := config.CheckListen(listen); err != nil {
			c.fail("--listen: %v", err)
			return 2
		}
	}

	var defaultOpts []config.Option
	if cfgPath == "" {
		// The default config proxies /demo/ to three demo upstreams that
		// this process starts on loopback ports it picks.
		demo, derr := startDemoUpstreams(3)
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
		defaultOpts = append(defaultOpts, config.WithEnv(env))
	}
	cfg, err := loadConfig(cfgPath, defaultOpts...)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if c.set("listen") {
		cfg.Server.Listen = listen
	}

	out := stdout
	if cfg.Logging.Output == "stderr" {
		out = stderr
	}
	logger := server.NewLogger(cfg.Logging, out)
	var load func() (*config.Config, error)
	if cfgPath != "" {
		// A reload reads the same file with the same overrides.
		load = func() (*config.Config, error) {
			cfg, err := config.Load(cfgPath)
			if err == nil && c.set("listen") {
				cfg.Server.Listen = listen
			}
			return cfg, err
		}
	}
	srv, err := server.New(cfg, server.Options{Logger: logger, Version: buildVersion(), Load: load})
	if err != nil {
		fmt.Fprintln(stderr, "keystone:", err)
		return 1
	}
	if addr := os.Getenv("KEYSTONE_PPROF"); addr != "" {
		go servePprof(addr, logger)
	}

	if pf := cfg.Server.PIDFile; pf != "" {
		if err := os.WriteFile(pf, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintln(stderr, "keystone: server.pid_file:", err)
			return 1
		}
		defer os.Remove(pf)
	}

	errc := make(chan error, 2)
	go func() { errc <- srv.ListenAndServe() }()
	stopReopen := reopenOnSIGUSR1(srv, logger)
	defer stopReopen()
	if cfg.Server.TLS != nil {
		go func() { errc <- srv.ListenAndServeTLS() }()
	}

	for {
		var sig os.Signal
		select {
		case err := <-errc:
			logger.Error("server stopped", "component", "main", "error", err)
			return 1
		case sig = <-sigc:
		}
		if sig == syscall.SIGHUP {
			// Reload, never exit: the record is logged (and kept for
			// /admin/reloads) by the server.
			srv.ReloadFromDisk(server.TriggerSignal, admin.Caller{IP: "signal"})
			continue
		}
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

// reloadArgs are keystone reload's flags.
type reloadArgs struct {
	config  string
	timeout time.Duration
}

func (a *reloadArgs) cli(stderr io.Writer) *cli {
	c := newCLI("reload", usageReload, stderr)
	c.configFlag(&a.config, configUse{file: true, needFile: true})
	c.fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "give up after this `DURATION`")
	return c
}

// cmdReload makes a running gateway reload: SIGHUP to the pid in
// server.pid_file, else POST admin.prefix/reload.
func cmdReload(args []string, stdout, stderr io.Writer) int {
	var a reloadArgs
	c := a.cli(stderr)
	cfgPath, code, ok := c.parseConfig(args, stdout)
	if !ok {
		return code
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if pf := cfg.Server.PIDFile; pf != "" {
		b, err := os.ReadFile(pf)
		if err != nil {
			fmt.Fprintln(stderr, "keystone reload: server.pid_file:", err)
			return 1
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			fmt.Fprintf(stderr, "keystone reload: %s: expected a process id, got %q\n", pf, strings.TrimSpace(string(b)))
			return 1
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			fmt.Fprintf(stderr, "keystone reload: signal process %d: %v\n", pid, err)
			return 1
		}
		fmt.Fprintf(stdout, "sent SIGHUP to process %d; the result is in its log and %s/reloads\n", pid, cfg.Admin.Prefix)
		return 0
	}
	if !cfg.Admin.Enabled {
		fmt.Fprintf(stderr, "keystone reload: %s sets neither server.pid_file nor admin.enabled: no way to reach the gateway\n", cfg.File)
		return 1
	}
	url := strings.TrimSuffix(healthURL(cfg), "/health") + "/reload"
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod(fasthttp.MethodPost)
	if cfg.Admin.Token != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+cfg.Admin.Token)
	}
	if err := (&fasthttp.Client{}).DoTimeout(req, resp, a.timeout); err != nil {
		fmt.Fprintf(stderr, "keystone reload: %s: %v\n", url, err)
		return 1
	}
	var rec admin.Reload
	if err := json.Unmarshal(resp.Body(), &rec); err != nil || rec.Status == "" {
		fmt.Fprintf(stderr, "keystone reload: %s answered %d: %s\n", url, resp.StatusCode(), resp.Body())
		return 1
	}
	if rec.Status != "ok" {
		fmt.Fprintf(stderr, "keystone reload: refused; the running config keeps serving:\n%s\n", rec.Error)
		return 1
	}
	fmt.Fprintf(stdout, "reloaded in %.1fms: tenants added %v, removed %v, changed %v\n",
		rec.DurationMS, rec.TenantsAdded, rec.TenantsRemoved, rec.TenantsChanged)
	if len(rec.NeedsRestart) > 0 {
		fmt.Fprintf(stdout, "needs a restart to apply: %s\n", strings.Join(rec.NeedsRestart, ", "))
	}
	return 0
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

// checkArgs are keystone check's flags.
type checkArgs struct{ config string }

func (a *checkArgs) cli(stderr io.Writer) *cli {
	c := newCLI("check", usageCheck, stderr)
	c.configFlag(&a.config, configUse{file: true})
	return c
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	var a checkArgs
	c := a.cli(stderr)
	cfgPath, code, ok := c.parseConfig(args, stdout)
	if !ok {
		return code
	}
	if cfgPath == "" {
		// "keystone check" alone printing a bare "ok" reads as if a
		// file had been checked.
		fmt.Fprintln(stderr, "keystone check: no FILE, -c or $KEYSTONE_CONFIG given: checking the embedded default config")
	}
	cfg, err := loadConfig(cfgPath)
	if err == nil {
		err = server.Check(cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// healthcheckArgs are keystone healthcheck's flags.
type healthcheckArgs struct {
	config, url string
	timeout     time.Duration
}

func (a *healthcheckArgs) cli(stderr io.Writer) *cli {
	c := newCLI("healthcheck", usageHealthcheck, stderr)
	c.configFlag(&a.config, configUse{})
	c.fs.StringVar(&a.url, "url", "", "health `URL`")
	c.fs.DurationVar(&a.timeout, "timeout", 3*time.Second, "give up after this `DURATION`")
	return c
}

// cmdHealthcheck probes a running gateway's own health endpoint: the
// container HEALTHCHECK, which must work without curl in the image.
//
// It answers only for the gateway itself. With the admin endpoints off,
// the derived URL would reach whichever tenant claims the path, so it
// refuses; and it accepts only a 200 carrying the admin health document,
// so a tenant answering 200 at --url is not taken for a healthy gateway.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	var a healthcheckArgs
	c := a.cli(stderr)
	cfgPath, code, ok := c.parseConfig(args, stdout)
	if !ok {
		return code
	}
	url := a.url
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if url == "" {
		if !cfg.Admin.Enabled {
			fmt.Fprintf(stderr, "keystone healthcheck: %s sets admin.enabled: false, and the health check needs the gateway's own %s/health; enable admin (with an admin.token) or pass --url\n", cfg.File, cfg.Admin.Prefix)
			return 1
		}
		url = healthURL(cfg)
	}
	token := cfg.Admin.Token
	if token == "" {
		// A gateway started from another config (--url) may still
		// want the token from the environment.
		token = os.Getenv("KEYSTONE_ADMIN_TOKEN")
	}
	status, err := probeHealth(url, token, a.timeout)
	if err != nil {
		fmt.Fprintln(stderr, "keystone healthcheck:", err)
		return 1
	}
	fmt.Fprintf(stdout, "ok: %s, status %q\n", url, status)
	return 0
}

// probeHealth GETs url and returns the health document's status. Anything
// but a 200 with an admin.Health document is an error.
func probeHealth(url, token string, timeout time.Duration) (string, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if token != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+token)
	}
	// The health document grows with the tenants (about 300 bytes per
	// upstream); 64 MiB covers any real config and bounds a wrong --url.
	client := &fasthttp.Client{MaxResponseBodySize: 64 << 20}
	if err := client.DoTimeout(req, resp, timeout); err != nil {
		return "", fmt.Errorf("%s: %w", url, err)
	}
	switch code := resp.StatusCode(); {
	case code == fasthttp.StatusUnauthorized && token == "":
		return "", fmt.Errorf("%s answered 401: the gateway has an admin.token and the config given here has none", url)
	case code == fasthttp.StatusUnauthorized:
		return "", fmt.Errorf("%s answered 401: the gateway's admin.token is not the one sent", url)
	case code != fasthttp.StatusOK:
		return "", fmt.Errorf("%s answered %d", url, code)
	}
	// Pointers tell a missing field from a zero one: every field of
	// admin.Health must be there.
	var doc struct {
		Status        *string           `json:"status"`
		UptimeSeconds *float64          `json:"uptime_seconds"`
		Version       *string           `json:"version"`
		Tenants       []json.RawMessage `json:"tenants"`
	}
	if err := json.Unmarshal(resp.Body(), &doc); err != nil || doc.Status == nil || doc.UptimeSeconds == nil || doc.Version == nil || doc.Tenants == nil {
		return "", fmt.Errorf("%s answered 200 without Keystone's health document: not the gateway's admin endpoint", url)
	}
	switch *doc.Status {
	case admin.StatusOK, admin.StatusDegraded, admin.StatusDown:
		// Down upstreams are not the gateway's ill health: restarting
		// it would not bring them back (docs/operations.md).
		return *doc.Status, nil
	}
	return "", fmt.Errorf("%s answered 200 with status %q, not Keystone's health document", url, *doc.Status)
}

// reopenOnSIGUSR1 reopens the access log file on each SIGUSR1 (logrotate's
// postrotate convention) until the returned stop is called.
func reopenOnSIGUSR1(srv *server.Server, logger *slog.Logger) (stop func()) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-usr1:
				if err := srv.ReopenLogs(); err != nil {
					logger.Error("reopening the access log", "component", "main", "error", err)
				} else {
					logger.Info("reopened the access log", "component", "main")
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(usr1)
		close(done)
	}
}
