package config_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/keystone-gateway/keystone/config"
)

func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "keystone")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keystone.yaml")
	os.WriteFile(path, []byte(`
server:
  listen: ":9000"
tenants:
  - name: api
    domains: [API.example.com]
    path_prefix: /v1
    upstreams:
      - url: http://10.0.0.1:8080
      - url: http://10.0.0.2:8080
    circuit_breaker: {}   # on, with the defaults
`), 0o644)

	cfg, err := config.Load(path)
	if err != nil {
		fmt.Println(err) // every problem, one "FILE:LINE:COL: path: message" per line
		return
	}
	api := cfg.TenantByName("api")
	fmt.Println(cfg.Server.Listen, cfg.Server.ReadTimeout)
	fmt.Println(api.Domains, api.PathPrefix, api.Balancer, len(api.Upstreams))
	fmt.Println(api.CircuitBreaker.FailureThreshold, api.CircuitBreaker.OpenTimeout)
	// Output:
	// :9000 30s
	// [api.example.com] /v1 round_robin 2
	// 5 30s
}

func ExampleParse() {
	yaml := `server:
  listn: ":8080"
  read_timeout: 15
tenants:
  - name: api
    path_prefix: /api/
    upstreams:
      - url: 127.0.0.1:9001
`
	_, err := config.Parse("keystone.yaml", []byte(yaml))
	fmt.Println(err)
	// Output:
	// keystone.yaml:2:3: server: unknown field "listn" (did you mean "listen"?)
	// keystone.yaml:3:17: server.read_timeout: expected a duration such as "15s", got 15
	// keystone.yaml:6:18: tenants[0].path_prefix: expected a path without a trailing "/", got "/api/" (did you mean "/api"?)
	// keystone.yaml:8:14: tenants[0].upstreams[0].url: expected absolute http(s) URL, got "127.0.0.1:9001"
}

func ExampleParse_env() {
	env := map[string]string{"API_ADDR": "10.0.0.7:8080", "MAX_CONNS": "4096"}
	yaml := `server:
  max_conns: ${MAX_CONNS:-1024}
admin:
  token: ${ADMIN_TOKEN}
tenants:
  - name: api
    path_prefix: /api
    upstreams:
      - url: http://${API_ADDR}
`
	cfg, err := config.Parse("keystone.yaml", []byte(yaml), config.WithEnv(func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Server.MaxConns, cfg.Admin.Token == "", cfg.Tenants[0].Upstreams[0].URL)
	// Output:
	// 4096 true http://10.0.0.7:8080
}

func ExampleDefault() {
	cfg, err := config.Default()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range cfg.Tenants {
		fmt.Printf("%s prefix=%q script=%q upstreams=%d\n", t.Name, t.PathPrefix, t.Script, len(t.Upstreams))
	}
	// Output:
	// hello prefix="" script="hello.lua" upstreams=0
	// demo prefix="/demo" script="" upstreams=3
}

func ExampleParseSize() {
	s, _ := config.ParseSize("10MiB")
	fmt.Println(int64(s), s)
	_, err := config.ParseSize("10 megs")
	fmt.Println(err)
	// Output:
	// 10485760 10MiB
	// expected a size such as "10MiB" or a byte count, got "10 megs"
}
