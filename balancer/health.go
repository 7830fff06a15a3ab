package balancer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// ErrInvalidHealthCheck is wrapped by HealthCheckConfig.Validate errors.
var ErrInvalidHealthCheck = errors.New("balancer: invalid health check")

// HealthCheckConfig configures active health checks: a GET of Path on each
// upstream every Interval.
type HealthCheckConfig struct {
	// Path is requested with GET; it must start with "/". If empty, "/".
	Path string

	// Host is the Host header sent. If empty, the upstream URL's host.
	Host string

	// Interval is the time between the starts of two checks of one
	// upstream. It must be > 0.
	Interval time.Duration

	// Timeout bounds one check, connect included; a check that has not
	// received the response headers by then fails. If zero, Interval.
	Timeout time.Duration

	// HealthyThreshold is the number of consecutive passing checks that
	// mark a down upstream up. If zero, 1.
	HealthyThreshold int

	// UnhealthyThreshold is the number of consecutive failing checks that
	// mark an up upstream down. If zero, 1.
	UnhealthyThreshold int

	// Expected reports whether a response status counts as healthy. If
	// nil, 200 through 399.
	Expected func(status int) bool

	// TLSConfig is used to check https upstreams. If nil, fasthttp's
	// default: the certificate is verified against the upstream's host.
	TLSConfig *tls.Config
}

// Validate reports whether c is acceptable to NewChecker. Errors wrap
// ErrInvalidHealthCheck and name the field.
func (c HealthCheckConfig) Validate() error {
	switch {
	case c.Path != "" && !strings.HasPrefix(c.Path, "/"):
		return fmt.Errorf("%w: Path: expected an absolute path, got %q", ErrInvalidHealthCheck, c.Path)
	case c.Interval <= 0:
		return fmt.Errorf("%w: Interval: expected > 0, got %v", ErrInvalidHealthCheck, c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout: expected >= 0, got %v", ErrInvalidHealthCheck, c.Timeout)
	case c.HealthyThreshold < 0:
		return fmt.Errorf("%w: HealthyThreshold: expected >= 0, got %d", ErrInvalidHealthCheck, c.HealthyThreshold)
	case c.UnhealthyThreshold < 0:
		return fmt.Errorf("%w: UnhealthyThreshold: expected >= 0, got %d", ErrInvalidHealthCheck, c.UnhealthyThreshold)
	}
	return nil
}

// Checker runs the active health checks of a set of upstreams: one
// goroutine per upstream, each with its own fasthttp.HostClient, so a slow
// upstream delays only its own checks and nothing is shared with the
// request path but the Upstream's healthy flag.
//
// Ownership: an Upstream has at most one owning Checker. Start takes
// ownership of each of its upstreams (the latest Start wins), and a
// displaced Checker stops checking that upstream and never writes its state
// again. On reload the server may therefore start the new snapshot's Checker
// before stopping the old one, with no gap in checking and no reset of the
// health state; Stop then releases only the upstreams the old Checker still
// owns. An upstream released with no new owner is marked healthy, since with
// no active checks Healthy is true.
//
// Start and Stop are safe for concurrent use; a Checker runs once: Start
// after Stop does nothing.
type Checker struct {
	cfg     HealthCheckConfig // thresholds, Path and Timeout resolved
	ups     []*Upstream
	clients []*fasthttp.HostClient
	uris    []string // full URL of the check of each upstream
	log     *slog.Logger

	stopCh   chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex // guards started and stopped
	started  bool
	stopped  bool
	stopOnce sync.Once
}

// NewChecker returns a Checker for ups, not yet started. It panics if
// cfg.Validate reports an error: the config package validates user input
// first, so an invalid cfg here is a programming error. If logger is nil,
// slog.Default() is used; logs carry component=health.
func NewChecker(cfg HealthCheckConfig, ups []*Upstream, logger *slog.Logger) *Checker {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = cfg.Interval
	}
	cfg.HealthyThreshold = max(cfg.HealthyThreshold, 1)
	cfg.UnhealthyThreshold = max(cfg.UnhealthyThreshold, 1)
	if cfg.Expected == nil {
		cfg.Expected = func(status int) bool { return status >= 200 && status <= 399 }
	}
	if logger == nil {
		logger = slog.Default()
	}
	c := &Checker{
		cfg:     cfg,
		ups:     ups,
		clients: make([]*fasthttp.HostClient, len(ups)),
		uris:    make([]string, len(ups)),
		log:     logger.With("component", "health"),
		stopCh:  make(chan struct{}),
	}
	for i, u := range ups {
		scheme := "http://"
		if u.TLS {
			scheme = "https://"
		}
		c.uris[i] = scheme + u.hostHeader + cfg.Path
		c.clients[i] = &fasthttp.HostClient{
			Addr:      u.Addr,
			IsTLS:     u.TLS,
			TLSConfig: cfg.TLSConfig,
			Name:      "keystone-health-check",
			// A failed check is a result, not something to retry: the
			// thresholds already absorb one-off failures.
			MaxIdemponentCallAttempts: 1,
			ReadTimeout:               cfg.Timeout,
			WriteTimeout:              cfg.Timeout,
			// Long enough to reuse the connection from one check to
			// the next; it is also how long the client's idle
			// cleaner goroutine outlives Stop (fasthttp's default, 10s,
			// would keep one per stopped checker that long).
			MaxIdleConnDuration: cfg.Interval + cfg.Timeout,
		}
	}
	return c
}

// Start takes ownership of the upstreams and starts one goroutine per
// upstream. Each makes its first check after a random delay in [0,
// Interval), so that a gateway starting with many upstreams (or many
// gateways starting together) do not check in lockstep; until an upstream
// fails UnhealthyThreshold checks it keeps its current state, which for a
// new Upstream is healthy. Start returns at once; it does nothing if called
// again or after Stop.
func (c *Checker) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return
	}
	c.started = true
	for i, u := range c.ups {
		u.checkMu.Lock()
		u.checker.Store(c)
		u.checkMu.Unlock()
		c.wg.Go(func() { c.run(i) })
	}
}

// Stop stops the checks and waits for the goroutines to return (at most
// one check Timeout). It then releases the upstreams this Checker still
// owns, marking them healthy. Stop is idempotent; concurrent calls all
// wait.
func (c *Checker) Stop() {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stopped = true
		c.mu.Unlock()
		close(c.stopCh)
		c.wg.Wait()
		for i, u := range c.ups {
			u.checkMu.Lock()
			if u.checker.Load() == c {
				u.checker.Store(nil)
				u.healthy.Store(true)
				u.checkFails, u.checkSuccesses = 0, 0
			}
			u.checkMu.Unlock()
			c.clients[i].CloseIdleConnections()
		}
	})
}

func (c *Checker) run(i int) {
	u := c.ups[i]
	jitter := time.NewTimer(time.Duration(rand.Int64N(int64(c.cfg.Interval))))
	defer jitter.Stop()
	select {
	case <-c.stopCh:
		return
	case <-jitter.C:
	}
	ticker := time.NewTicker(c.cfg.Interval)
	defer ticker.Stop()
	for {
		if u.checker.Load() != c {
			return // displaced by a newer Checker
		}
		c.record(u, c.check(i))
		select {
		case <-c.stopCh:
			return
		case <-ticker.C:
		}
	}
}

// check performs one check of upstream i and returns why it failed, or
// nil. A panic (say, in a user-supplied Expected) fails the check instead
// of killing the gateway.
func (c *Checker) check(i int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("health check panicked", "upstream", c.ups[i].URL, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("health check panicked: %v", r)
		}
	}()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(c.uris[i])
	if c.cfg.Host != "" {
		req.Header.SetHost(c.cfg.Host)
		req.UseHostHeader = true
	}
	// A new connection per check, as HAProxy does by default: the check
	// then also proves the upstream still accepts connections, which is
	// what the request path needs after a restart. It also lets the body
	// go unread: the connection is closed after the headers.
	req.SetConnectionClose()
	resp.SkipBody = true
	if err := c.clients[i].DoTimeout(req, resp, c.cfg.Timeout); err != nil {
		return err
	}
	if status := resp.StatusCode(); !c.cfg.Expected(status) {
		return fmt.Errorf("unexpected status %d", status)
	}
	return nil
}

// record applies the outcome of one check of u, unless c no longer owns u.
func (c *Checker) record(u *Upstream, err error) {
	var errText string
	if err != nil {
		errText = err.Error()
	}
	now := time.Now()
	u.checkMu.Lock()
	if u.checker.Load() != c {
		u.checkMu.Unlock()
		return
	}
	u.lastCheck, u.lastCheckErr = now, errText
	was := u.healthy.Load()
	is := was
	if err == nil {
		u.checkSuccesses++
		u.checkFails = 0
		is = was || u.checkSuccesses >= c.cfg.HealthyThreshold
	} else {
		u.checkFails++
		u.checkSuccesses = 0
		is = was && u.checkFails < c.cfg.UnhealthyThreshold
	}
	if is != was {
		u.healthy.Store(is) // pickers read this line on every request: write only on change
		if !is {
			u.outages.Add(1)
		}
	}
	u.checkMu.Unlock()

	switch {
	case err != nil && is:
		c.log.Debug("health check failed", "upstream", u.URL, "error", errText)
	case was && !is:
		c.log.Warn("upstream unhealthy", "upstream", u.URL, "from", "healthy", "to", "unhealthy", "error", errText)
	case !was && is:
		c.log.Info("upstream healthy", "upstream", u.URL, "from", "unhealthy", "to", "healthy")
	}
}
