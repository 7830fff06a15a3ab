package server

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/config"
)

// Reload triggers, as the reload record and the audit log name them.
const (
	TriggerSignal = "signal" // SIGHUP
	TriggerAdmin  = "admin"  // POST /admin/reload
	TriggerWatch  = "watch"  // a watched file changed
	TriggerAPI    = "api"    // a Go caller of Reload
)

// maxReloadRecords is how many reload records GET /admin/reloads keeps.
const maxReloadRecords = 50

// ErrNoLoader is returned by ReloadFromDisk when the server was built from
// a config that has no file to read again.
var ErrNoLoader = errors.New("server: no config file to reload (Options.Load is nil)")

// snapLife counts the requests running on a snapshot, so that a reload
// retires it only after the last one finished.
//
// A request enters right after loading the snapshot pointer. A reload
// stores the new pointer, then sets retired, then waits for active to reach
// zero. enter increments active before it reads retired, and both are
// sequentially consistent atomics: an enter that reads retired false was
// counted before retire read active; one that reads true backs out and
// loads the newer pointer. Not to be copied.
type snapLife struct {
	// The snapshot's other fields are read by every request and never
	// written; active is written by every request on every core. The
	// padding keeps it on a cache line of its own.
	_ [64]byte
	// active is written (Add) by every request on the snapshot; read by
	// the retiring goroutine. Invariant: never negative.
	active atomic.Int64
	_      [56]byte
	// retired is set once, by the reload that replaced the snapshot.
	retired atomic.Bool
	// closed is set once, by snapshot.close.
	closed atomic.Bool
}

// enter counts a request on the snapshot and reports whether it may run
// on it: false once the snapshot is retired (load the newer one).
func (l *snapLife) enter() bool {
	l.active.Add(1)
	if l.retired.Load() {
		l.active.Add(-1)
		return false
	}
	return true
}

// exit ends a request counted by enter.
func (l *snapLife) exit() { l.active.Add(-1) }

// markClosed reports whether the caller is the first to close.
func (l *snapLife) markClosed() bool { return !l.closed.Swap(true) }

// reloads is the Server's reload state: one reload at a time, and the
// records of the last ones.
type reloads struct {
	mu      sync.Mutex // serializes reloads; guards records
	records []admin.Reload
	// retiring counts old snapshots waiting for their requests to end;
	// stop makes them close at once (Shutdown).
	retiring sync.WaitGroup
	stop     chan struct{}
	stopOnce sync.Once
	// down is set by Shutdown: no reload after it.
	down bool
}

// Reload builds a new runtime from cfg off the request path (every pool,
// checker and script, each script compiled and its VMs warmed) and, if
// all of it succeeds, publishes it in one atomic swap. Requests that
// started on the old snapshot finish on it; it is closed (scripts, VM
// pools, upstreams and checkers no longer used) in the background once the
// last of them ends. A config or script that fails is refused whole: the
// running snapshot keeps serving, and the error (FILE:LINE:COL for config
// and scripts) is in the returned record and the log.
//
// Upstream state carries over for every upstream whose tenant, URL and
// connection settings are unchanged (see registry). Settings a running
// server cannot change are listed in the record's NeedsRestart; the rest
// of the config applies. Reloads are serialized.
func (s *Server) Reload(cfg *config.Config, trigger string) admin.Reload {
	return s.reload(cfg, nil, trigger, admin.Caller{})
}

// ReloadFromDisk reads the config again with Options.Load and reloads it.
// by names who asked, for the audit log.
func (s *Server) ReloadFromDisk(trigger string, by admin.Caller) admin.Reload {
	if s.load == nil {
		return s.reload(nil, ErrNoLoader, trigger, by)
	}
	cfg, err := s.load()
	return s.reload(cfg, err, trigger, by)
}

func (s *Server) reload(cfg *config.Config, loadErr error, trigger string, by admin.Caller) admin.Reload {
	s.rl.mu.Lock()
	defer s.rl.mu.Unlock()
	start := time.Now()
	rec := admin.Reload{Time: start.UTC(), Trigger: trigger, TenantsAdded: []string{}, TenantsRemoved: []string{},
		TenantsChanged: []string{}, NeedsRestart: []string{}}
	old := s.snap.Load()
	err := loadErr
	var snap *snapshot
	if err == nil && cfg == nil {
		err = errors.New("server: nil config")
	}
	if err == nil && s.rl.down {
		err = errors.New("server: shutting down")
	}
	if err == nil {
		snap, err = s.build(cfg)
	}
	if err == nil {
		rec.TenantsAdded, rec.TenantsRemoved, rec.TenantsChanged = diffTenants(old, snap)
		rec.NeedsRestart = needsRestart(old.cfg, cfg)
		rec.RuntimeRoutesDropped = droppedRuntimeRoutes(old, snap)
		// Checkers of new upstreams start before the swap; those the
		// old snapshot started already run on.
		if s.serving.Load() {
			snap.start()
		}
		s.snap.Store(snap)
		s.retire(old)
		rec.Status = "ok"
		// The TLS listener's certificates come from the current
		// snapshot's config: tenants added, removed or given a new
		// pair. config checked every pair at load, so this fails only
		// if a file changed since; the old certificates then stay.
		if err := s.ReloadCertificates(); err != nil {
			s.log.Warn("certificates not reloaded; the previous ones stay in use", "component", "reload", "error", err)
		}
		s.obs.ConfigLoaded(true, start)
	} else {
		rec.Status = "error"
		rec.Error = err.Error()
		s.obs.ConfigFailed()
	}
	rec.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	s.rl.records = append(s.rl.records, rec)
	if len(s.rl.records) > maxReloadRecords {
		s.rl.records = slices.Delete(s.rl.records, 0, len(s.rl.records)-maxReloadRecords)
	}
	s.logReload(rec, by)
	return rec
}

// logReload writes the reload's log line and its audit line.
func (s *Server) logReload(rec admin.Reload, by admin.Caller) {
	if rec.Status == "ok" {
		s.log.Info("config reloaded", "component", "reload", "trigger", rec.Trigger, "duration_ms", rec.DurationMS,
			"tenants_added", rec.TenantsAdded, "tenants_removed", rec.TenantsRemoved, "tenants_changed", rec.TenantsChanged,
			"runtime_routes_dropped", rec.RuntimeRoutesDropped)
		if len(rec.NeedsRestart) > 0 {
			s.log.Warn("config keys changed that apply only after a restart; their old values stay in force",
				"component", "reload", "needs_restart", rec.NeedsRestart)
		}
	} else {
		// The error is the config's or the scripts' positioned list
		// (FILE:LINE:COL: …), one per line.
		s.log.Error("config reload refused; the running config keeps serving", "component", "reload",
			"trigger", rec.Trigger, "error", rec.Error)
	}
	s.audit("reload", by, rec.Status, "trigger", rec.Trigger)
}

// audit writes one audit line: what changed at run time, who asked, the
// result. The time is the log line's.
func (s *Server) audit(what string, by admin.Caller, result string, attrs ...any) {
	who := by.IP
	if who == "" {
		who = "local"
	}
	args := append([]any{"component", "audit", "what", what, "who", who, "token", by.Token, "result", result}, attrs...)
	s.log.Info("runtime change", args...)
}

// retire waits in the background for the requests running on old to end,
// then closes it.
func (s *Server) retire(old *snapshot) {
	old.life.retired.Store(true)
	s.rl.retiring.Add(1)
	go func() {
		defer s.rl.retiring.Done()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic retiring a snapshot", "component", "reload", "panic", fmt.Sprint(r))
			}
		}()
		// Polling, not a signal from every request's exit: the request
		// path stays two atomic adds. Most reloads find it drained at
		// once; a long request (a stream) is waited for as long as it
		// runs, or until Shutdown.
		wait := time.Millisecond
		for old.life.active.Load() > 0 {
			select {
			case <-s.rl.stop:
				old.close()
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 50*time.Millisecond)
		}
		old.close()
	}()
}

// waitRetired waits until every retired snapshot is closed.
func (s *Server) waitRetired() { s.rl.retiring.Wait() }

// stopRetiring closes retired snapshots still waiting for requests, and
// waits for them. Shutdown calls it after the listener's grace period.
func (s *Server) stopRetiring() {
	s.rl.stopOnce.Do(func() { close(s.rl.stop) })
	s.rl.retiring.Wait()
}

// Reloads returns up to the last 50 reload records, newest first.
func (s *Server) Reloads() []admin.Reload {
	s.rl.mu.Lock()
	defer s.rl.mu.Unlock()
	out := make([]admin.Reload, len(s.rl.records))
	for i, r := range s.rl.records {
		out[len(out)-1-i] = r
	}
	return out
}

// LastReload returns the latest reload record, nil before any.
func (s *Server) LastReload() *admin.Reload {
	s.rl.mu.Lock()
	defer s.rl.mu.Unlock()
	if len(s.rl.records) == 0 {
		return nil
	}
	r := s.rl.records[len(s.rl.records)-1]
	return &r
}

// diffTenants names the tenants added, removed and changed (config or
// script source) between two snapshots.
func diffTenants(old, cur *snapshot) (added, removed, changed []string) {
	added, removed, changed = []string{}, []string{}, []string{}
	for _, t := range cur.tenants {
		ot, ok := old.byName[t.cfg.Name]
		switch {
		case !ok:
			added = append(added, t.cfg.Name)
		case !reflect.DeepEqual(*ot.cfg, *t.cfg) || !bytes.Equal(ot.scriptSum, t.scriptSum):
			changed = append(changed, t.cfg.Name)
		}
	}
	for _, t := range old.tenants {
		if _, ok := cur.byName[t.cfg.Name]; !ok {
			removed = append(removed, t.cfg.Name)
		}
	}
	return added, removed, changed
}

// scriptSums hashes each tenant script of cfg with the modules it may
// require: a tenant's sum covers its own file and every file of the
// scripts folder that is no tenant's script (the modules), so editing a
// module marks every scripted tenant changed, editing one script only its
// tenants. The folder is read once per build.
func scriptSums(cfg *config.Config) map[string][]byte {
	if cfg.Scripts == nil {
		return nil
	}
	own := map[string]bool{}
	for i := range cfg.Tenants {
		if sc := cfg.Tenants[i].Script; sc != "" {
			own[sc] = true
		}
	}
	files := map[string][]byte{}
	modules := sha256.New()
	_ = fs.WalkDir(cfg.Scripts, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := fs.ReadFile(cfg.Scripts, p)
		if err != nil {
			return nil
		}
		if own[p] {
			sum := sha256.Sum256(b)
			files[p] = sum[:]
		} else {
			fmt.Fprintf(modules, "%s\x00%d\x00", p, len(b))
			modules.Write(b)
		}
		return nil
	})
	mod := modules.Sum(nil)
	out := make(map[string][]byte, len(files))
	for p, sum := range files {
		out[p] = append(append([]byte(nil), sum...), mod...)
	}
	return out
}

// needsRestart lists the config keys whose value changed but that a
// running server cannot apply: the listener's address, the fasthttp.Server
// settings fasthttp reads without synchronisation while it serves (it has
// no API to change them), the logger (built once) and the process's own
// settings. docs/configuration.md marks each of them "needs restart".
func needsRestart(old, cur *config.Config) []string {
	out := []string{}
	o, c := old.Server, cur.Server
	add := func(key string, changed bool) {
		if changed {
			out = append(out, key)
		}
	}
	add("server.listen", o.Listen != c.Listen)
	add("server.header_timeout", o.HeaderTimeout != c.HeaderTimeout)
	add("server.write_timeout", o.WriteTimeout != c.WriteTimeout)
	add("server.idle_timeout", o.IdleTimeout != c.IdleTimeout)
	add("server.max_header_bytes", o.MaxHeaderBytes != c.MaxHeaderBytes)
	add("server.max_request_line", o.MaxRequestLine != c.MaxRequestLine)
	add("server.max_request_body", o.MaxRequestBody != c.MaxRequestBody)
	add("server.stream_request_body_over", o.StreamRequestBodyOver != c.StreamRequestBodyOver)
	add("server.max_conns", o.MaxConns != c.MaxConns)
	add("server.max_conns_per_ip", o.MaxConnsPerIP != c.MaxConnsPerIP)
	add("server.shutdown_grace", o.ShutdownGrace != c.ShutdownGrace)
	add("server.pid_file", o.PIDFile != c.PIDFile)
	add("logging.level", old.Logging.Level != cur.Logging.Level)
	add("logging.format", old.Logging.Format != cur.Logging.Format)
	add("logging.output", old.Logging.Output != cur.Logging.Output)
	add("logging.access_log_file", old.Logging.AccessLogFile != cur.Logging.AccessLogFile)
	add("tracing.otlp_endpoint", old.Tracing.OTLPEndpoint != cur.Tracing.OTLPEndpoint)
	add("tracing.export_interval", old.Tracing.ExportInterval != cur.Tracing.ExportInterval)
	add("reload.watch", old.Reload.Watch != cur.Reload.Watch)
	add("reload.debounce", old.Reload.Debounce != cur.Reload.Debounce)
	add("server.tls", tlsListenerChanged(o.TLS, c.TLS))
	return out
}

// tlsListenerChanged reports whether the TLS listener's own settings
// changed (its address, versions, client CA, ACME, HTTP/2 limits): those
// are fixed when it starts. Certificates (server.tls.cert_file and
// key_file, tenants' tls) are re-read after every reload, and
// client_cert_headers, redirect_http and hsts are per snapshot: they apply.
func tlsListenerChanged(o, c *config.TLS) bool {
	if o == nil || c == nil {
		return (o == nil) != (c == nil)
	}
	oc, cc := *o, *c
	for _, t := range []*config.TLS{&oc, &cc} {
		t.CertFile, t.KeyFile = "", ""
		t.ClientCertHeaders, t.RedirectHTTP = false, false
		t.HSTS = config.HSTS{}
	}
	return !reflect.DeepEqual(oc, cc)
}

// adminControl is the server seen by the admin endpoints that act
// (admin.Control).
type adminControl struct{ s *Server }

func (a adminControl) Reload(trigger string, by admin.Caller) admin.Reload {
	return a.s.ReloadFromDisk(trigger, by)
}
func (a adminControl) Reloads() []admin.Reload   { return a.s.Reloads() }
func (a adminControl) LastReload() *admin.Reload { return a.s.LastReload() }
func (a adminControl) Routes() []admin.Route     { return a.s.Routes() }
func (a adminControl) SetDraining(tenant, url string, drain bool, by admin.Caller) error {
	return a.s.SetDraining(tenant, url, drain, by)
}

// SetDraining takes a tenant's upstream out of rotation (drain) or puts it
// back. Requests in flight to it finish. The flag lives on the upstream's
// registry entry, so it survives reloads that keep the upstream.
func (s *Server) SetDraining(tenant, url string, drain bool, by admin.Caller) error {
	what := "upstream_enable"
	if drain {
		what = "upstream_drain"
	}
	t, ok := s.snap.Load().byName[tenant]
	var found *upstream
	if ok {
		for _, up := range t.pool.ups {
			if up.URL == url {
				found = up
			}
		}
	}
	if found == nil {
		s.audit(what, by, "not_found", "tenant", tenant, "upstream", url)
		return fmt.Errorf("tenant %q has no upstream %q", tenant, url)
	}
	found.SetDraining(drain)
	s.audit(what, by, "ok", "tenant", tenant, "upstream", url)
	return nil
}
