package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-gateway/keystone/config"
)

// hostileSeeds are inputs that have broken YAML loaders before: resource
// bombs, odd encodings, and every YAML feature the schema does not expect.
var hostileSeeds = []string{
	"",
	"\x00",
	"\xef\xbb\xbf",
	"\xff\xfe\x00s\x00e\x00r\x00v\x00e\x00r\x00",
	"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
	"server:\n\tlisten: :1\n",
	"server:\r\n  listen: :1\r\n" + okTenant,
	"\ufeffserver: {}\n" + okTenant,
	"a: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d]\ntenants: *e\n",
	"a: &a\n  <<: *a\n",
	"tenants: &t\n  - <<: *t\n",
	"x: &x {<<: [*x]}\n",
	"a: " + strings.Repeat("[", 300) + strings.Repeat("]", 300),
	"a: " + strings.Repeat("{b: ", 300) + strings.Repeat("}", 300),
	strings.Repeat("- ", 300) + "x",
	"server:\n  max_conns: 99999999999999999999999999999999\n" + okTenant,
	"server:\n  max_conns: -9223372036854775809\n" + okTenant,
	"server:\n  max_request_body: 9223372036854775807\n" + okTenant,
	"server:\n  max_request_body: 0x7fffffffffffffff\n" + okTenant,
	"tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], circuit_breaker: {failure_ratio: .nan}}\n",
	"tenants:\n  - {name: t, path_prefix: /t, upstreams: [{url: \"http://a:1\"}], circuit_breaker: {failure_ratio: 1e-400}}\n",
	"server:\n  listen: ${\n" + okTenant,
	"server:\n  listen: ${A:-${B:-${C:-${D:-${E:-${F}}}}}}\n" + okTenant,
	"server:\n  listen: \"$$${}\"\n" + okTenant,
	"server:\n  listen: !!binary aGVsbG8=\n" + okTenant,
	"server:\n  ? [complex, key]\n  : 1\n" + okTenant,
	"server: {listen: :1, listen: :2}\n" + okTenant,
	"--- !!map\n? a\n: b\n...\n---\n",
	"%YAML 1.2\n---\nserver: {}\n" + okTenant,
	"tenants:\n  - name: |\n      multi\n      line\n    path_prefix: >-\n      /folded\n    upstreams: [{url: \"http://a:1\"}]\n",
	"tenants: [{name: t, domains: [\"*.\", \"*..a\", \"[::1]:80\", \"[fe80::1%eth0]\"], upstreams: [{url: \"http://[::1]:99999\"}]}]\n",
	"tenants: [{name: t, path_prefix: /t, script: \"a\\u0000.lua\"}]\n",
	"tenants: [{name: t, path_prefix: /t, script: \"../../../../etc/passwd.lua\"}]\n",
	"tenants:\n- name: a\n  path_prefix: /a\n  upstreams:\n  - url: http://a:1\n",
	"'\n",
	"\"\\",
	"key: \"\\uD800\"\n",
	": :\n",
	"- - - - ]]]]",
	"&a *a",
	"*a",
	"!<tag:yaml.org,2002:str> x",
}

func FuzzParse(f *testing.F) {
	for _, s := range hostileSeeds {
		f.Add([]byte(s))
	}
	shipped, _ := filepath.Glob(filepath.Join("..", "configs", "*.yaml"))
	for _, p := range append(shipped, "default.yaml") {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("fuzz.yaml", data, config.WithEnv(lookup),
			config.WithScripts(testScripts, "scripts"))
		if err == nil {
			if c == nil || len(c.Tenants) == 0 {
				t.Fatalf("no error, but config %v has no tenants", c)
			}
			for _, tn := range c.Tenants {
				if tn.Name == "" || len(tn.Domains) == 0 && tn.PathPrefix == "" && tn.Name == "" {
					t.Fatalf("no error, but tenant %+v is incomplete", tn)
				}
				if len(tn.Upstreams) == 0 && tn.Script == "" {
					t.Fatalf("no error, but tenant %q has nothing to route to", tn.Name)
				}
			}
			return
		}
		if c != nil {
			t.Fatalf("got a config together with error %v", err)
		}
		var list config.ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("got %T %v, want a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if e.File != "fuzz.yaml" || e.Msg == "" || e.Line < 0 || e.Col < 0 || (e.Line == 0) != (e.Col == 0) {
				t.Fatalf("malformed error %#v", e)
			}
			// The parser's recover turns a goccy panic into an error;
			// the fuzzer should still hear about it.
			if strings.Contains(e.Msg, "internal parser error") {
				t.Fatalf("goccy/go-yaml panicked: %s", e.Msg)
			}
		}
	})
}
