package admin_test

import (
	"testing"

	"github.com/keystone-gateway/keystone/admin"
	"github.com/valyala/fasthttp"
)

// request is an admin.Request that records what the handler asked of it.
type request struct {
	ip     string
	errors []string // codes written
}

func (r *request) ClientIP() string { return r.ip }

func (r *request) WriteError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	r.errors = append(r.errors, code)
	writeError(ctx, status, code, msg)
}

// control records who asked for a reload.
type control struct{ by admin.Caller }

func (c *control) Reload(trigger string, by admin.Caller) admin.Reload {
	c.by = by
	return admin.Reload{Trigger: trigger, Status: "ok"}
}
func (*control) Reloads() []admin.Reload                              { return nil }
func (*control) LastReload() *admin.Reload                            { return nil }
func (*control) Routes() []admin.Route                                { return nil }
func (*control) SetDraining(string, string, bool, admin.Caller) error { return nil }

// TestServeRequestUsesTheRequestsClientIPAndErrorWriter checks that
// ServeRequest takes the caller's address and the error writer from the
// Request it is given, not from Config: the server passes what it resolved
// about the request (trusted proxies applied, its request id) explicitly.
func TestServeRequestUsesTheRequestsClientIPAndErrorWriter(t *testing.T) {
	t.Parallel()
	ctl := &control{}
	h := admin.New(admin.Config{Token: "s3cret", Control: ctl}, source{})

	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/admin/reload")
	ctx.Request.Header.Set("Authorization", "Bearer s3cret")
	r := &request{ip: "203.0.113.9"}
	h.ServeRequest(&ctx, []byte("/reload"), r)
	if ctx.Response.StatusCode() != 200 || ctl.by.IP != "203.0.113.9" || ctl.by.Token != "admin" {
		t.Errorf("reload: status %d, caller %+v; want 200 by 203.0.113.9 with the admin token", ctx.Response.StatusCode(), ctl.by)
	}

	var bad fasthttp.RequestCtx
	bad.Request.Header.SetMethod("GET")
	bad.Request.SetRequestURI("/admin/nope")
	r = &request{}
	h.ServeRequest(&bad, []byte("/nope"), r)
	if bad.Response.StatusCode() != 401 || len(r.errors) != 1 || r.errors[0] != "unauthorized" {
		t.Errorf("without a token: status %d, errors %q; want 401 through the Request", bad.Response.StatusCode(), r.errors)
	}
}
