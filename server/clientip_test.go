package server

import (
	"net/netip"
	"testing"
	"time"
)

func TestClientIPIsTheRightmostUntrustedAddress(t *testing.T) {
	t.Parallel()
	trusted := trustedProxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("fd00::/8")}
	cases := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{"an untrusted peer is the client whatever it claims", "203.0.113.7", []string{"1.1.1.1"}, "203.0.113.7"},
		{"a trusted peer without a header is the client", "10.1.1.1", nil, "10.1.1.1"},
		{"a trusted peer's claim is believed", "10.1.1.1", []string{"198.51.100.2"}, "198.51.100.2"},
		{"spoofed entries left of the first untrusted one are ignored", "10.1.1.1", []string{"6.6.6.6, 198.51.100.2, 10.2.2.2"}, "198.51.100.2"},
		{"several header lines form one chain", "127.0.0.1", []string{"6.6.6.6", "198.51.100.2", "10.9.9.9"}, "198.51.100.2"},
		{"all trusted: the leftmost", "10.1.1.1", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"},
		{"ports and brackets are accepted", "10.1.1.1", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"IPv4-mapped addresses are unmapped", "10.1.1.1", []string{"::ffff:198.51.100.9"}, "198.51.100.9"},
		{"garbage stops the walk at the last trusted hop", "10.1.1.1", []string{"198.51.100.2, not-an-ip, 10.2.2.2"}, "10.2.2.2"},
		{"empty entries are skipped", "10.1.1.1", []string{" , 198.51.100.2 ,, "}, "198.51.100.2"},
	}
	for _, c := range cases {
		var xff [][]byte
		for _, v := range c.xff {
			xff = append(xff, []byte(v))
		}
		got := trusted.clientIP(netip.MustParseAddr(c.peer), xff)
		if got.String() != c.want {
			t.Errorf("%s: clientIP = %s, want %s", c.name, got, c.want)
		}
	}
	if got := (trustedProxies(nil)).clientIP(netip.MustParseAddr("10.1.1.1"), [][]byte{[]byte("1.2.3.4")}); got.String() != "10.1.1.1" {
		t.Errorf("with no trusted proxies the peer is the client, got %s", got)
	}
}

func TestClientIPInTheAccessLogHonoursTrustedProxies(t *testing.T) {
	t.Parallel()
	up := startEcho(t, "up")
	for _, c := range []struct {
		name, trusted, want string
	}{
		{"spoofed X-Forwarded-For from an untrusted peer", "[]", "127.0.0.1"},
		{"X-Forwarded-For from a trusted peer", "[127.0.0.1/32, 10.0.0.0/8]", "198.51.100.2"},
	} {
		g := startGateway(t, yamlf(`
server: {trusted_proxies: %s}
logging: {access_log: true}
tenants:
  - {name: api, path_prefix: /, upstreams: [{url: %q}]}
`, c.trusted, up.url()))
		g.get("/x", "X-Forwarded-For", "6.6.6.6, 198.51.100.2, 10.0.0.3", "X-Request-ID", "ip-test")
		eventually(t, 2*time.Second, "the access line", func() bool { return len(g.accessLines()) > 0 })
		if got := g.accessLines()[0]["client_ip"]; got != c.want {
			t.Errorf("%s: client_ip = %v, want %s", c.name, got, c.want)
		}
	}
}
