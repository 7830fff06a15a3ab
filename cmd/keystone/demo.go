package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// demoUpstreams are the small upstreams the default config proxies /demo/
// to, so that `keystone` with no config shows round-robin balancing without
// anything else installed. Each answers every path with its own id as JSON
// and GET /health with 200.
type demoUpstreams struct {
	// Addrs are the loopback addresses the upstreams listen on, in id order.
	Addrs   []string
	servers []*fasthttp.Server
}

// startDemoUpstreams starts n demo upstreams on 127.0.0.1 ports chosen by
// the kernel.
func startDemoUpstreams(n int) (*demoUpstreams, error) {
	d := &demoUpstreams{}
	for i := 1; i <= n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("demo upstream %d: %w", i, err)
		}
		id := strconv.Itoa(i)
		srv := &fasthttp.Server{
			Name: "keystone-demo",
			Handler: func(ctx *fasthttp.RequestCtx) {
				ctx.SetContentType("application/json")
				if string(ctx.Path()) == "/health" {
					ctx.SetBodyString(`{"status":"ok"}` + "\n")
					return
				}
				b := append([]byte(`{"upstream":"demo-`), id...)
				b = append(b, `","method":`...)
				b = strconv.AppendQuote(b, string(ctx.Method()))
				b = append(b, `,"path":`...)
				b = strconv.AppendQuote(b, string(ctx.Path()))
				b = append(b, `,"request_id":`...)
				b = strconv.AppendQuote(b, string(ctx.Request.Header.Peek("X-Request-ID")))
				b = append(b, "}\n"...)
				ctx.SetBody(b)
			},
		}
		d.Addrs = append(d.Addrs, ln.Addr().String())
		d.servers = append(d.servers, srv)
		go srv.Serve(ln) //nolint:errcheck // Serve returns when Close shuts it down
	}
	return d, nil
}

// Close stops the demo upstreams.
func (d *demoUpstreams) Close() {
	for _, s := range d.servers {
		_ = s.Shutdown()
	}
}

// healthURL is the URL of cfg's /admin/health as seen from the same host:
// what `keystone healthcheck` probes inside a container.
func healthURL(cfg *config.Config) string {
	host, port, err := net.SplitHostPort(cfg.Server.Listen)
	if err != nil {
		host, port = "", "8080"
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + cfg.Admin.Prefix + "/health"
}
