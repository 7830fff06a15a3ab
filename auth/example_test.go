package auth_test

import (
	"fmt"
	"net/netip"

	"github.com/keystone-gateway/keystone/auth"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// ExampleNew builds a tenant's policy from its config and runs a request
// through it the way the server's access stage does.
func ExampleNew() {
	tenant := &config.Tenant{
		Name: "api",
		IP:   &config.IPRules{Allow: []string{"10.0.0.0/8"}},
		Auth: &config.Auth{Mode: "any", APIKeys: &config.APIKeys{Header: "X-API-Key",
			Keys: []config.APIKey{{Consumer: "partner-a", Key: "partner-a-key-0123"}}}},
	}
	// Load computes the key hashes; a config built by hand does it here.
	if msgs := config.CheckAuth(tenant.Auth, tenant.Name, nil); len(msgs) > 0 {
		fmt.Println(msgs)
		return
	}
	p, err := auth.New(tenant, auth.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Stop()

	ctx := &fasthttp.RequestCtx{}
	ctx.Request.SetRequestURI("/orders")
	ctx.Request.Header.Set("X-API-Key", "partner-a-key-0123")
	fmt.Println("allowed:", p.IP.Allowed(netip.MustParseAddr("10.1.2.3")))
	id, res := p.Auth.Authenticate(ctx)
	fmt.Println(res, id.Method, id.Consumer)

	ctx.Request.Header.Set("X-API-Key", "wrong")
	_, res = p.Auth.Authenticate(ctx)
	fmt.Println(res, res.Failed())
	// Output:
	// allowed: true
	// accepted api_key partner-a
	// invalid true
}
