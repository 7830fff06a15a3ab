package luavm

import (
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/router"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// Script is a loaded tenant script ready to serve: one fasthttp/router tree
// built at Load from the routes the script defined, and a pool of VMs that
// each ran the script once and hold its composed handlers.
//
// Handler is safe for concurrent use. Everything a Script holds is
// immutable after Load returns except the pool and the counters, which are
// synchronised. Close must be called once no Handler call is running or
// will run; a reload drains the old snapshot before closing its scripts.
type Script struct {
	prog        *Program
	cfg         Config
	opts        Options
	host        Host
	store       Store
	http        httpClient
	log         *slog.Logger
	reqIDHeader string
	prefix      string

	pool   *pool
	closed atomic.Bool

	// Routing, immutable after Load. mux holds every route; catchAll only
	// the catch-all ones, consulted when mux answers with a trailing-slash
	// recommendation instead of a handler (fasthttp/router stops there,
	// chi would go on to a catch-all); slash the roots of subrouters at
	// their mount point plus "/" (see match); scopes maps mount points to their
	// NotFound/MethodNotAllowed handling, nil when nothing is mounted.
	mux       *router.Router
	catchAll  *router.Router
	slash     *router.Router // subrouter roots at mount point + "/", nil if none
	scopes    *router.Router
	rootMiss  fasthttp.RequestHandler
	methods   []string                  // methods that have routes, sorted
	targets   []fasthttp.RequestHandler // by handler index: routes, then NotFound and MethodNotAllowed per scope
	nRoutes   int
	signature string
	routeInfo []RouteInfo   // the routes registered, for Routes (routes.go)
	rt        scriptRuntime // routes added by keystone.AddRoute (runtime_routes.go)

	// proxies holds the keystone.Proxy targets resolved while loading;
	// written only while loading is true, by Load's goroutine. Targets
	// first seen at request time go to lateProxies.
	loading     bool
	proxies     map[string]fasthttp.RequestHandler
	lateProxies sync.Map

	modMu   sync.Mutex
	modules map[string]compiledModule

	created, discarded, errors atomic.Uint64

	// requests is written by every request on every core; the padding
	// keeps it off the cache lines of the fields every request reads.
	_        [64]byte
	requests atomic.Uint64
	_        [56]byte
}

// Stats is a snapshot of a Script's counters.
type Stats struct {
	// VMsCreated counts VMs ever created, warm-up included. It stays at
	// PoolSize under steady load that never keeps every VM busy.
	VMsCreated uint64
	// VMsIdle is the number of VMs waiting in the pool.
	VMsIdle int
	// VMsLive is the number of VMs in existence, idle or serving.
	VMsLive int
	// VMsDiscarded counts Lua states dropped: a request's thread after a
	// timeout, its thread and VM after a Go panic.
	VMsDiscarded uint64
	// Requests counts Handler calls.
	Requests uint64
	// Errors counts requests answered with a script error, a script
	// timeout or 503 for want of a VM.
	Errors uint64

	// Inflight is the number of requests being served, running Lua or
	// parked on the network.
	Inflight int
	// Threads is the number of request threads in existence, serving
	// or pooled.
	Threads int
	// MemoryBytes is the memory budget in use: VMs and threads at the
	// estimates Config.MaxMemory names.
	MemoryBytes int64
	// VMWaits counts requests that queued for a thread or a VM;
	// VMWaitTime is their total time queued; VMWaitTimeouts how many
	// of them gave up after Config.VMWait (answered 503).
	VMWaits        uint64
	VMWaitTime     time.Duration
	VMWaitTimeouts uint64
}

// Load compiles name from fsys and loads it: see LoadProgram.
func Load(cfg Config, fsys fs.FS, name string, opts Options) (*Script, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	prog, err := compile(fsys, name, opts.ScriptsDir, cfg.MaxScriptSize)
	if err != nil {
		return nil, err
	}
	return LoadProgram(cfg, prog, opts)
}

// LoadProgram runs a compiled script in a fresh VM to build its routers,
// builds the fasthttp/router tree, then warms cfg.PoolSize VMs, each
// checked to define the same routes. Load errors are an ErrorList naming
// file and line: a runtime error while building, a bad pattern or regexp,
// Use after routes, an unknown keystone.Proxy target, a script not
// returning a router.
func LoadProgram(cfg Config, prog *Program, opts Options) (*Script, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Host == nil {
		return nil, fmt.Errorf("luavm: Options.Host is nil")
	}
	prefix := strings.TrimSuffix(opts.PathPrefix, "/")
	if prefix != "" {
		if _, err := translatePattern(prefix); err != nil || strings.ContainsAny(prefix, "{}*") {
			return nil, fmt.Errorf("luavm: invalid path prefix %q: expected a static path", opts.PathPrefix)
		}
	}
	s := &Script{
		prog:        prog,
		cfg:         cfg,
		opts:        opts,
		host:        opts.Host,
		store:       opts.Store,
		reqIDHeader: opts.RequestIDHeader,
		prefix:      prefix,
		pool:        newPool(cfg),
		loading:     true,
		proxies:     map[string]fasthttp.RequestHandler{},
		modules:     map[string]compiledModule{},
	}
	s.pool.reap = s.reap
	if s.store == nil {
		s.store = NewMemoryStore()
	}
	if s.rt.shared = opts.RuntimeRoutes; s.rt.shared == nil {
		s.rt.shared = NewRuntimeRoutes()
	}
	s.http.given = opts.HTTPClient
	if s.reqIDHeader == "" {
		s.reqIDHeader = config.DefaultRequestIDHeader
	}
	s.log = cfg.Logger.With(slog.String("component", "lua"), slog.String("tenant", opts.Tenant), slog.String("script", prog.name))

	v, ft, errs := s.buildVM(true)
	if errs != nil {
		return nil, errs
	}
	if errs := s.defineRoutes(v, ft); errs != nil {
		v.close()
		return nil, errs
	}
	s.loading = false
	s.adopt(v)
	sched.acquire() // released by Close
	for s.created.Load() < uint64(cfg.PoolSize) {
		v, _, errs := s.buildVM(false)
		if errs != nil {
			s.Close()
			return nil, errs
		}
		s.adopt(v)
	}
	return s, nil
}

// adopt pools a VM built at load, with a request thread to go with it.
func (s *Script) adopt(v *vm) {
	s.pool.adopt(v, s.newThread())
	s.created.Add(1)
}

// buildVM creates a VM, runs the script in it, flattens its routers and
// composes every handler chain. After the first VM, the routes must match
// the first VM's.
func (s *Script) buildVM(first bool) (*vm, *flatTable, ErrorList) {
	v := s.newState()
	v.dl.arm(buildBudget)
	root, errs := v.runMain()
	var ft *flatTable
	if errs == nil {
		ft, errs = flatten(root, s.prefix)
	}
	if errs == nil && !first && ft.signature() != s.signature {
		errs = ErrorList{s.endPos().errorf("script is not deterministic: this VM defined different routes than the first one")}
	}
	if errs == nil {
		if err := v.composeAll(ft); err != nil {
			errs = ErrorList{v.loadError(err, s.endPos())}
		}
	}
	if !v.dl.disarm() && errs == nil {
		errs = ErrorList{s.endPos().errorf("script did not finish loading within %s", buildBudget)}
	}
	if errs != nil {
		v.close()
		return nil, nil, errs
	}
	return v, ft, nil
}

// endPos is the position load errors without a better one point at.
func (s *Script) endPos() pos { return pos{file: s.prog.File(), line: s.prog.lines} }

// newVM builds a VM after Load, when every pooled VM is busy.
func (s *Script) newVM() (*vm, error) {
	v, _, errs := s.buildVM(false)
	if errs != nil {
		s.log.Error("cannot create a Lua VM", slog.String("error", errs.Error()))
		return nil, errs
	}
	s.created.Add(1)
	return v, nil
}

// Stats returns the Script's counters.
func (s *Script) Stats() Stats {
	st := Stats{
		VMsCreated:   s.created.Load(),
		VMsDiscarded: s.discarded.Load(),
		Requests:     s.requests.Load(),
		Errors:       s.errors.Load(),
	}
	s.pool.stats(&st)
	return st
}

// Close releases the pooled VMs and closes the idle connections of the
// script's keystone.http client. Handler must not be called after Close; a
// VM still serving a request when Close is called is released when it
// finishes, and a keystone.http call it makes returns an error.
func (s *Script) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.http.close()
	sched.release()
	vms, threads := s.pool.drain()
	for _, v := range vms {
		v.close()
	}
	for _, t := range threads {
		t.close()
	}
}
