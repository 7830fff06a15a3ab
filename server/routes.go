package server

import (
	"bytes"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/keystone-gateway/keystone/luavm"
)

// Routes returns every tenant's routes on the published snapshot: a
// script's routes with the FILE:LINE that defined them, and for a tenant
// without a script its proxy route (every method under its path prefix).
func (s *Server) Routes() []admin.Route {
	snap := s.snap.Load()
	var out []admin.Route
	for _, t := range snap.tenants {
		if t.script == nil {
			out = append(out, admin.Route{Tenant: t.cfg.Name, Method: "*", Pattern: t.cfg.PathPrefix + "/*", Kind: "static"})
			continue
		}
		for _, r := range t.script.Routes() {
			kind := "static"
			if r.Runtime {
				kind = "runtime"
			}
			out = append(out, admin.Route{Tenant: t.cfg.Name, Method: r.Method, Pattern: r.Pattern, Source: r.Source, Kind: kind})
		}
	}
	return out
}

// runtimeRoutesFor returns the runtime routes t's script starts with: the
// running snapshot's for the same tenant when its script (file and the
// modules it may require) is unchanged, else a new, empty set. Runtime
// routes are dropped on a reload that changes the tenant's script (they
// were made by the old code), kept otherwise.
func (s *Server) runtimeRoutesFor(t *tenant) *luavm.RuntimeRoutes {
	if cur := s.snap.Load(); cur != nil {
		if ot, ok := cur.byName[t.cfg.Name]; ok && ot.runtime != nil && ot.cfg.Script == t.cfg.Script &&
			ot.cfg.PathPrefix == t.cfg.PathPrefix && bytes.Equal(ot.scriptSum, t.scriptSum) {
			return ot.runtime
		}
	}
	return luavm.NewRuntimeRoutes()
}

// droppedRuntimeRoutes counts the runtime routes of old that cur does not
// carry: those of tenants removed or whose script changed.
func droppedRuntimeRoutes(old, cur *snapshot) int {
	n := 0
	for _, ot := range old.tenants {
		if ot.runtime == nil {
			continue
		}
		if t, ok := cur.byName[ot.cfg.Name]; !ok || t.runtime != ot.runtime {
			n += ot.runtime.Len()
		}
	}
	return n
}
