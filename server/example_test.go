package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"

	"github.com/keystone-gateway/keystone/config"
	"github.com/keystone-gateway/keystone/server"
)

// ExampleNew runs a gateway with one tenant proxying to an upstream, sends a
// request through it and shuts it down.
func ExampleNew() {
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s %s", r.Method, r.URL.Path)
	})}
	uln, _ := net.Listen("tcp", "127.0.0.1:0")
	go upstream.Serve(uln) //nolint:errcheck
	defer upstream.Close()

	cfg, err := config.Parse("example.yaml", []byte(`
tenants:
  - name: api
    path_prefix: /api
    strip_prefix: true
    upstreams: [{url: "http://`+uln.Addr().String()+`"}]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)                         //nolint:errcheck
	defer srv.Shutdown(context.Background()) //nolint:errcheck

	resp, err := http.Get("http://" + ln.Addr().String() + "/api/users/7")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body), len(resp.Header.Get("X-Request-ID")))
	// Output: 200 upstream saw GET /users/7 32
}
