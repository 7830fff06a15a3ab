package server

import (
	"fmt"
	"strings"
	"testing"
)

func testIndex(t testing.TB, routes ...route[string]) *index[string] {
	t.Helper()
	ix, err := newIndex(routes)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestIndexMatch(t *testing.T) {
	t.Parallel()
	ix := testIndex(t,
		route[string]{hosts: []string{"api.example.com"}, prefix: "/v2", value: "api-v2"},
		route[string]{hosts: []string{"api.example.com", "API2.example.com"}, value: "api"},
		route[string]{hosts: []string{"*.example.com"}, value: "wild"},
		route[string]{hosts: []string{"*.example.com"}, prefix: "/static", value: "wild-static"},
		route[string]{prefix: "/static", value: "static"},
		route[string]{prefix: "/static/img", value: "img"},
		route[string]{prefix: "/", value: "root"},
		route[string]{hosts: []string{"::1", "10.0.0.1"}, value: "ip"},
	)
	cases := []struct {
		name, host, path, want string
	}{
		{"host and path beat host alone", "api.example.com", "/v2/users", "api-v2"},
		{"the prefix matches itself", "api.example.com", "/v2", "api-v2"},
		{"a prefix only matches on a segment boundary", "api.example.com", "/v2x", "api"},
		{"host is compared case-insensitively", "API.Example.COM", "/v2/x", "api-v2"},
		{"the port is ignored", "api.example.com:8443", "/v2/x", "api-v2"},
		{"one trailing dot is ignored", "api.example.com.", "/v2", "api-v2"},
		{"a second domain of the tenant", "api2.example.com", "/", "api"},
		{"wildcard matches one label", "www.example.com", "/x", "wild"},
		{"wildcard host+path beats exact host-only", "api.example.com", "/static/a", "wild-static"},
		{"wildcard does not match two labels", "a.b.example.com", "/x", "root"},
		{"wildcard does not match the bare domain", "example.com", "/x", "root"},
		{"longest path prefix wins", "other.test", "/static/img/a.png", "img"},
		{"shorter path prefix", "other.test", "/static/css/a.css", "static"},
		{"root prefix catches the rest", "other.test", "/anything", "root"},
		{"root prefix catches /", "", "/", "root"},
		{"an IPv6 literal host", "[::1]:8080", "/x", "ip"},
		{"an IPv4 literal host", "10.0.0.1:80", "/x", "ip"},
		{"a broken IPv6 literal falls back to paths", "[::1", "/static", "static"},
		{"a trailing slash still matches the prefix", "other.test", "/static/", "static"},
	}
	for _, c := range cases {
		got, ok := ix.Match([]byte(c.host), []byte(c.path))
		if !ok || got != c.want {
			t.Errorf("%s: Match(%q, %q) = %q, %v; want %q", c.name, c.host, c.path, got, ok, c.want)
		}
	}
}

func TestIndexWithoutCatchAllReportsNoMatch(t *testing.T) {
	t.Parallel()
	ix := testIndex(t, route[string]{prefix: "/api", value: "api"}, route[string]{hosts: []string{"a.test"}, prefix: "/x", value: "ax"})
	for _, c := range []struct{ host, path string }{{"b.test", "/apix"}, {"b.test", "/"}, {"a.test", "/y"}, {strings.Repeat("h", 300), "/x"}} {
		if v, ok := ix.Match([]byte(c.host), []byte(c.path)); ok {
			t.Errorf("Match(%q, %q) = %q, want no match", c.host, c.path, v)
		}
	}
}

func TestIndexRejectsConflictingClaims(t *testing.T) {
	t.Parallel()
	for _, routes := range [][]route[string]{
		{{prefix: "/a", value: "1"}, {prefix: "/a", value: "2"}},
		{{hosts: []string{"x.test"}, value: "1"}, {hosts: []string{"X.TEST"}, value: "2"}},
		{{hosts: []string{"x.test"}, prefix: "/a", value: "1"}, {hosts: []string{"x.test"}, prefix: "/a", value: "2"}},
		{{value: "neither host nor path"}},
	} {
		if _, err := newIndex(routes); err == nil {
			t.Errorf("newIndex(%v) accepted a conflict", routes)
		}
	}
}

// FuzzIndexMatch checks that no host or path, however hostile, makes Match
// panic, and that a match is always one of the registered values.
func FuzzIndexMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"api.example.com", "/v2/x"}, {"[::1", "/"}, {"[]:", ""}, {":", "/"}, {".", "//"},
		{"*.example.com", "/static/../x"}, {strings.Repeat("a.", 200), strings.Repeat("/a", 500)},
		{"\x00\xff", "/\x00"}, {"API.EXAMPLE.COM.", "/v2/"},
	} {
		f.Add(s[0], s[1])
	}
	ix := testIndex(f,
		route[string]{hosts: []string{"api.example.com"}, prefix: "/v2", value: "a"},
		route[string]{hosts: []string{"*.example.com"}, value: "b"},
		route[string]{prefix: "/static", value: "c"},
	)
	f.Fuzz(func(t *testing.T, host, path string) {
		v, ok := ix.Match([]byte(host), []byte(path))
		if ok && v != "a" && v != "b" && v != "c" {
			t.Fatalf("Match returned unregistered value %q", v)
		}
	})
}

// manyTenants builds an index of n tenants: a third host-only, a third
// host+path, a third path-only, like a large multi-tenant deployment.
func manyTenants(tb testing.TB, n int) *index[string] {
	routes := make([]route[string], 0, n)
	for i := range n {
		switch i % 3 {
		case 0:
			routes = append(routes, route[string]{hosts: []string{fmt.Sprintf("svc%d.example.com", i)}, value: "h"})
		case 1:
			routes = append(routes, route[string]{hosts: []string{fmt.Sprintf("svc%d.example.com", i)}, prefix: "/api", value: "hp"})
		default:
			routes = append(routes, route[string]{prefix: fmt.Sprintf("/team%d", i), value: "p"})
		}
	}
	return testIndex(tb, routes...)
}

// BenchmarkMatch bounds tenant lookup: the cost must not grow with the number
// of tenants (it walks path segments and probes maps) and must not allocate.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 10000} {
		ix := manyTenants(b, n)
		host := []byte(fmt.Sprintf("SVC%d.example.com:8080", (n-2)/3*3+1))
		path := []byte(fmt.Sprintf("/team%d/v1/orders/123", (n-3)/3*3+2))
		b.Run(fmt.Sprintf("tenants=%d/host+path", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := ix.Match(host, []byte("/api/v1/orders")); !ok {
					b.Fatal("no match")
				}
			}
		})
		b.Run(fmt.Sprintf("tenants=%d/path-only", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := ix.Match([]byte("unknown.test"), path); !ok {
					b.Fatal("no match")
				}
			}
		})
	}
}
