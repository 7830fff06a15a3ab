package server

import "github.com/keystone-gateway/keystone/admin"

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
