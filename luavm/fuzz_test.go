package luavm

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzTranslatePattern feeds route patterns, as a script would, through the
// translation and into a fasthttp/router tree: neither may panic past
// addRoute, and an accepted pattern must keep its static text.
func FuzzTranslatePattern(f *testing.F) {
	for _, seed := range []string{
		"/", "/users/{id}", "/users/{id:[0-9]+}", "/files/*", "/a/{b}/c/{d:[a-z]{2,3}}", "/{x}.json",
		"", "x", "/*", "/a*", "/a/*/b", "/{", "/}", "/{}", "/{:re}", "/{a:}", "/{a:*}", "/{a?}",
		"/{a}{b}", "/{a:(}", "/{a:[}", "/{a:{{{}", "/%00", "/a/{b:\x00}", "/é/{ü}", strings.Repeat("/{a}", 50),
		"/{a:.*}/x", "/{*:*}", "/x/{y:/}",
	} {
		f.Add(seed, "/users/42/x")
	}
	ok := func(*fasthttp.RequestCtx) {}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		fh, err := translatePattern(pattern)
		if err != nil {
			return
		}
		if !strings.HasPrefix(fh, "/") {
			t.Fatalf("translatePattern(%q) = %q: not absolute", pattern, fh)
		}
		r := newRouter()
		if err := addRoute(r, fasthttp.MethodGet, fh, ok); err != nil {
			return
		}
		if strings.HasSuffix(pattern, "*") && !strings.HasSuffix(fh, catchAll) {
			t.Fatalf("translatePattern(%q) = %q: lost the catch-all", pattern, fh)
		}
		var ctx fasthttp.RequestCtx
		func() {
			defer func() {
				if rec := recover(); rec != nil {
					t.Fatalf("lookup of %q in %q panicked: %v", path, fh, rec)
				}
			}()
			if len(path) > 0 && path[0] == '/' {
				r.Lookup(fasthttp.MethodGet, path, &ctx)
			}
		}()
	})
}

// FuzzHandler sends arbitrary methods and paths through a script with
// every kind of route, mount and scope: Handler must answer, never panic.
func FuzzHandler(f *testing.F) {
	for _, seed := range [][2]string{
		{"GET", "/get"}, {"POST", "/api/v1/3"}, {"GET", "/legacy/old/"}, {"GET", "/api/nested/"},
		{"GET", ""}, {"OPTIONS", "*"}, {"CONNECT", "example.com:443"}, {"GET", "//"}, {"GET", "/files/../../etc"},
		{"G\x00T", "/get"}, {"", "/"}, {"GET", "/users/%2F/posts/1"}, {"GET", "/num/" + strings.Repeat("9", 5000)},
		{"PURGE", "/purge/"}, {"GET", "/api/"}, {"GET", "/legacy/"}, {"DELETE", "/mounted/"},
	} {
		f.Add(seed[0], seed[1])
	}
	e := newEnv(f)
	s := loadTestdata(f, e, testConfig(&logBuffer{}), "routes.lua", Options{})
	f.Fuzz(func(t *testing.T, method, path string) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(method)
		ctx.Request.SetRequestURI(path)
		s.Handler(&ctx)
		if ctx.Response.StatusCode() == 0 {
			t.Fatalf("%q %q: no status", method, path)
		}
	})
}
