package luavm_test

import (
	"errors"
	"fmt"
	"testing/fstest"

	"github.com/keystone-gateway/keystone/luavm"
	"github.com/valyala/fasthttp"
)

// exampleHost proxies nowhere and writes plain JSON errors.
type exampleHost struct{}

func (exampleHost) ProxyHandler(target string) (fasthttp.RequestHandler, error) {
	return nil, errors.New("no upstreams in this example")
}

func (exampleHost) ClientIP(ctx *fasthttp.RequestCtx) string { return ctx.RemoteIP().String() }

func (exampleHost) WriteError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetBodyString(`{"error":"` + msg + `"}`)
}

func ExampleLoad() {
	scripts := fstest.MapFS{"hello.lua": {Data: []byte(`
local r = chi.NewRouter()
r:Use(function(next)
  return function(w, req)
    w:Header():Set("X-Served-By", "keystone")
    next(w, req)
  end
end)
r:Get("/hello/{name}", function(w, req)
  w:JSON(200, { greeting = "Hello, " .. req:URLParam("name") })
end)
return r
`)}}
	script, err := luavm.Load(luavm.Config{PoolSize: 1}, scripts, "hello.lua", luavm.Options{
		Tenant: "example",
		Host:   exampleHost{},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer script.Close()

	for _, path := range []string{"/hello/gopher", "/nowhere"} {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(path)
		script.Handler(&ctx)
		fmt.Println(ctx.Response.StatusCode(), string(ctx.Response.Header.Peek("X-Served-By")), string(ctx.Response.Body()))
	}
	// Output:
	// 200 keystone {"greeting":"Hello, gopher"}
	// 404 keystone {"error":"not found"}
}

func ExampleLoad_errors() {
	scripts := fstest.MapFS{"bad.lua": {Data: []byte(`local r = chi.NewRouter()
r:Get("/users/{id:[0-9+}", function(w, req) end)
r:Handle("/*", keystone.Proxy("billing"))
return r
`)}}
	_, err := luavm.Load(luavm.Config{PoolSize: 1}, scripts, "bad.lua", luavm.Options{Host: exampleHost{}})
	fmt.Println(err)
	// Output:
	// bad.lua:2: route "/users/{id:[0-9+}": parameter "id": invalid regexp "[0-9+": missing closing ]
	// bad.lua:3: keystone.Proxy("billing"): no upstreams in this example
}
