package server

import (
	"time"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/valyala/fasthttp"
)

// adminSource shows the server's current snapshot to the admin endpoints.
type adminSource struct{ s *Server }

func (a adminSource) Version() string    { return a.s.version }
func (a adminSource) Started() time.Time { return a.s.started }

func (a adminSource) Tenants() []admin.Tenant {
	snap := a.s.snap.Load()
	out := make([]admin.Tenant, 0, len(snap.tenants))
	for _, t := range snap.tenants {
		c := t.cfg
		at := admin.Tenant{
			Name:        c.Name,
			Domains:     append([]string(nil), c.Domains...),
			PathPrefix:  c.PathPrefix,
			StripPrefix: c.StripPrefix,
			Balancer:    c.Balancer,
			Script:      c.Script,
			Upgraded:    a.s.tunnels.active(c.Name),
		}
		if t.script != nil {
			st := t.script.Stats()
			at.Lua = &admin.Lua{
				VMsLive:        st.VMsLive,
				VMsIdle:        st.VMsIdle,
				VMsCreated:     st.VMsCreated,
				VMsDiscarded:   st.VMsDiscarded,
				Threads:        st.Threads,
				Inflight:       st.Inflight,
				MemoryBytes:    st.MemoryBytes,
				MaxMemoryBytes: int64(snap.cfg.Lua.MaxMemory),
				Requests:       st.Requests,
				Errors:         st.Errors,
				VMWaits:        st.VMWaits,
				VMWaitSeconds:  st.VMWaitTime.Seconds(),
				VMWaitTimeouts: st.VMWaitTimeouts,
			}
		}
		for _, up := range t.pool.ups {
			st := up.Status()
			au := admin.Upstream{
				URL:                 st.URL,
				Weight:              st.Weight,
				Healthy:             st.Healthy,
				Available:           up.Available(),
				Ejected:             st.Ejected,
				Breaker:             st.Breaker,
				ConsecutiveFailures: st.ConsecutiveFailures,
				PassiveFailures:     st.PassiveFailures,
				LastError:           st.LastCheckError,
				Inflight:            st.Inflight,
				Draining:            st.Draining,
			}
			if st.Ejected && !st.EjectedUntil.IsZero() {
				u := st.EjectedUntil
				au.EjectedUntil = &u
			}
			if !st.LastCheck.IsZero() {
				lc := st.LastCheck
				au.LastCheck = &lc
			}
			at.Upstreams = append(at.Upstreams, au)
		}
		at.Limits = a.s.limitsStatus(t)
		out = append(out, at)
	}
	return out
}

// newAdmin builds the admin handler of a snapshot. The pipeline serves it
// with ServeRequest and the request's state (adminRequest).
func (s *Server) newAdmin(token string) *admin.Handler {
	return admin.New(admin.Config{Token: token, Control: adminControl{s}}, adminSource{s})
}

// adminRequest is a request's state as admin sees it (admin.Request): the
// client IP for the audit log, and errors answered with the request id and
// recorded for the access log.
type adminRequest reqState

var _ admin.Request = (*adminRequest)(nil)

func (r *adminRequest) ClientIP() string { return r.clientIP.String() }

func (r *adminRequest) WriteError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	r.errKind = code
	writeError(ctx, r.reqID, status, code, msg)
}
