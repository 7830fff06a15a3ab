package server

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/config"
)

// watcher reloads the gateway when the config file, a file of the
// scripts folder or a file the config names (certificates, keys, CA
// bundles, htpasswd and public key files: config.Config.Files) changes
// (reload.watch). It watches directories, not
// files: editors that save by writing a new file and renaming it over the
// old one, and Kubernetes ConfigMap volumes, which swap a "..data" symlink
// to a new directory, replace the watched file's inode, and a watch on the
// file itself would go silent after the first save. Events are debounced:
// one reload once the files have been quiet for reload.debounce.
type watcher struct {
	s        *Server
	w        *fsnotify.Watcher
	debounce time.Duration
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

	// Read and written by the watcher's goroutine only (and by newWatcher
	// before it starts).
	cfgDir, cfgBase string
	scriptsDir      string
	files           map[string]bool // absolute paths of cfg.Files
}

// startWatcher starts watching cfg's files. Serve calls it when
// reload.watch is set and the config has a file to read again.
func (s *Server) startWatcher(cfg *config.Config) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("server: reload.watch: %w", err)
	}
	w := &watcher{s: s, w: fw, debounce: cfg.Reload.Debounce.D(), stop: make(chan struct{}), done: make(chan struct{})}
	if err := w.watch(cfg); err != nil {
		fw.Close()
		return nil, err
	}
	go w.run()
	return w, nil
}

// watch adds the directories of cfg's config file, of the files it names
// and of its scripts folder (with its subdirectories: modules a script
// requires). Adding a watched directory again does nothing.
func (w *watcher) watch(cfg *config.Config) error {
	abs, err := filepath.Abs(cfg.File)
	if err != nil {
		return fmt.Errorf("server: reload.watch: %w", err)
	}
	w.cfgDir, w.cfgBase = filepath.Dir(abs), filepath.Base(abs)
	if err := w.w.Add(w.cfgDir); err != nil {
		return fmt.Errorf("server: reload.watch: %s: %w", w.cfgDir, err)
	}
	w.files = make(map[string]bool, len(cfg.Files))
	for _, f := range cfg.Files {
		abs, err := filepath.Abs(f)
		if err != nil {
			return fmt.Errorf("server: reload.watch: %w", err)
		}
		w.files[abs] = true
		if err := w.w.Add(filepath.Dir(abs)); err != nil {
			return fmt.Errorf("server: reload.watch: %s: %w", filepath.Dir(abs), err)
		}
	}
	if cfg.ScriptsDir == "" || cfg.ScriptsDir == "(default)" {
		return nil
	}
	sd, err := filepath.Abs(cfg.ScriptsDir)
	if err != nil {
		return fmt.Errorf("server: reload.watch: %w", err)
	}
	w.scriptsDir = sd
	// The folder itself first: WalkDir does not follow a symlinked root
	// (a ConfigMap's "scripts" -> "..data/scripts"), inotify does.
	if err := w.w.Add(sd); err != nil {
		return fmt.Errorf("server: reload.watch: %s: %w", sd, err)
	}
	return filepath.WalkDir(sd, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a folder that vanished meanwhile
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), "..") && p != sd {
				// A ConfigMap's timestamped data folders: "..data"
				// events in the parent stand for them.
				return filepath.SkipDir
			}
			if err := w.w.Add(p); err != nil {
				return fmt.Errorf("server: reload.watch: %s: %w", p, err)
			}
		}
		return nil
	})
}

// relevant reports whether an event can change what a reload reads: the
// config file, a file it names, a ConfigMap's "..data" swap, or a script
// file.
func (w *watcher) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	dir, base := filepath.Dir(ev.Name), filepath.Base(ev.Name)
	if strings.HasPrefix(base, "..") {
		return true
	}
	if dir == w.cfgDir && base == w.cfgBase || w.files[ev.Name] {
		return true
	}
	if w.scriptsDir != "" && (dir == w.scriptsDir || strings.HasPrefix(dir, w.scriptsDir+string(filepath.Separator))) {
		// Editors' swap and backup files ("x.lua.swp", "x.lua~",
		// vim's "4913") are not scripts; a new folder may hold some.
		return strings.HasSuffix(base, ".lua") || ev.Op.Has(fsnotify.Create) && !strings.Contains(base, ".")
	}
	return false
}

func (w *watcher) run() {
	defer close(w.done)
	defer w.w.Close()
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-w.stop:
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			if !w.relevant(ev) {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(w.debounce)
			} else {
				timer.Reset(w.debounce)
			}
			fire = timer.C
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			w.s.log.Warn("watching config files", "component", "reload", "error", err.Error())
		case <-fire:
			fire = nil
			w.reload()
		}
	}
}

// reload reloads from disk, then watches the folders the new config names
// (a new scripts_dir, a new module folder).
func (w *watcher) reload() {
	defer func() {
		if r := recover(); r != nil {
			w.s.log.Error("panic in a watch reload", "component", "reload", "panic", fmt.Sprint(r))
		}
	}()
	rec := w.s.ReloadFromDisk(TriggerWatch, admin.Caller{})
	if rec.Status == "ok" {
		if err := w.watch(w.s.snap.Load().cfg); err != nil {
			w.s.log.Warn("watching config files", "component", "reload", "error", err.Error())
		}
	}
}

// close stops the watcher and waits for its goroutine.
func (w *watcher) close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
