package server

import (
	"github.com/keystone-gateway/keystone/auth"
	"github.com/valyala/fasthttp"
)

// codeForbidden is the error code of a request refused by a tenant's ip
// rules or a refused CORS preflight.
const codeForbidden = "forbidden"

// serveAccess is the access-control stage of a tenant with an auth, ip,
// cors or headers block, between the tenant match and the tenant's script
// and upstreams:
//
//  1. ip rules on the trusted client IP (rs.clientIP): 403;
//  2. a CORS preflight is answered here and never reaches auth, the
//     script or the upstream (refused: 403);
//  3. authentication: 401 with WWW-Authenticate, the body never saying
//     which part of which credential was wrong;
//  4. request header rules, then the script and upstreams;
//  5. response header rules on every answer, the gateway's own included;
//     CORS headers on every answer but a preflight's (which has its own),
//     the 401 included (a browser must be able to read it).
func serveAccess(ctx *fasthttp.RequestCtx, rs *reqState, t *tenant) {
	p := t.access
	switch {
	case p.IP != nil && !p.IP.Allowed(rs.clientIP):
		rs.errKind = codeForbidden
		writeError(ctx, rs.reqID, fasthttp.StatusForbidden, codeForbidden, "client address not allowed")
	case p.CORS != nil && auth.IsPreflight(&ctx.Request.Header):
		if !p.CORS.Preflight(ctx) {
			rs.errKind = codeForbidden
			writeError(ctx, rs.reqID, fasthttp.StatusForbidden, codeForbidden, "cross-origin request not allowed")
		}
		if p.Headers != nil {
			p.Headers.Response(&ctx.Response.Header)
		}
		return
	case !authenticate(ctx, rs, p):
	default:
		if p.Headers != nil {
			p.Headers.Request(&ctx.Request.Header)
		}
		rs.serveTenant(ctx, t)
	}
	respondAccess(ctx, p)
}

// authenticate runs the tenant's auth, if any, and reports whether the
// request may go on; a refused one has been answered 401.
func authenticate(ctx *fasthttp.RequestCtx, rs *reqState, p *auth.Policy) bool {
	if p.Auth == nil {
		return true
	}
	id, res := p.Auth.Authenticate(ctx)
	if res.Failed() {
		rs.errKind = codeUnauthorized
		writeError(ctx, rs.reqID, fasthttp.StatusUnauthorized, codeUnauthorized, "missing or invalid credentials")
		p.Auth.Challenge(&ctx.Response.Header, res)
		return false
	}
	rs.ident = id
	return true
}

// respondAccess applies the response side of a policy.
func respondAccess(ctx *fasthttp.RequestCtx, p *auth.Policy) {
	if p.Headers != nil {
		p.Headers.Response(&ctx.Response.Header)
	}
	if p.CORS != nil {
		p.CORS.Actual(ctx)
	}
}

// Auth returns the identity the request was accepted as, for req.Auth
// (luavm.AuthHost); nil when none.
func (h *scriptHost) Auth(ctx *fasthttp.RequestCtx) *auth.Identity {
	if rs := scriptState(ctx); rs != nil {
		return rs.ident
	}
	return nil
}

// SetAuth records the identity a script's keystone.auth middleware
// accepted, for req.Auth and the access log (luavm.AuthHost).
func (h *scriptHost) SetAuth(ctx *fasthttp.RequestCtx, id *auth.Identity) {
	if rs := scriptState(ctx); rs != nil {
		rs.ident = id
	}
}
