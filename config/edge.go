package config

import (
	"fmt"
	"strings"
	"time"
)

// Compression configures compressing responses for clients that accept it
// (Accept-Encoding, RFC 9110 section 12.5.3). It is server.compression, and
// a tenant's compression block overrides it key by key: a key the tenant
// does not write keeps the server's value.
type Compression struct {
	// Enabled compresses responses. Default false.
	Enabled bool `yaml:"enabled"`

	// Algorithms are the content codings offered, in the gateway's order
	// of preference among those a client rates equally: br, zstd, gzip.
	// Default [br, zstd, gzip].
	Algorithms []string `yaml:"algorithms"`

	// Level is the compression level, valid for every listed algorithm:
	// br 0..11, zstd 1..22 (zstd's own scale, mapped onto the encoder's
	// four speeds), gzip 1..9. Default 5.
	Level int `yaml:"level"`

	// MinSize is the smallest body compressed; smaller ones are sent as
	// they are. Streamed bodies, whose size is unknown, are compressed.
	// Default 1KiB.
	MinSize Size `yaml:"min_size"`

	// Types are the media types (without parameters) compressed,
	// compared case-insensitively. Default text/html, text/css,
	// text/plain, application/json, application/javascript,
	// image/svg+xml.
	Types []string `yaml:"types"`
}

// compressionLevels are the levels each algorithm accepts.
var compressionLevels = map[string][2]int{"br": {0, 11}, "zstd": {1, 22}, "gzip": {1, 9}}

func defaultCompression() Compression {
	return Compression{
		Algorithms: []string{"br", "zstd", "gzip"},
		Level:      5,
		MinSize:    1 * KiB,
		Types: []string{"text/html", "text/css", "text/plain", "application/json",
			"application/javascript", "image/svg+xml"},
	}
}

// WebSocket configures the connections a tenant upgrades (RFC 9110 section
// 7.8): WebSocket (RFC 6455) and the protocols UpgradeProtocols lists.
type WebSocket struct {
	// Enabled proxies "Upgrade: websocket" requests to the upstream and
	// then relays bytes both ways. False forwards them as plain requests
	// without the upgrade. Default true.
	Enabled bool `yaml:"enabled"`

	// IdleTimeout closes an upgraded connection on which neither side
	// sent anything for this long. Default 5m.
	IdleTimeout Duration `yaml:"idle_timeout"`

	// MaxLifetime closes an upgraded connection this long after the
	// upgrade, whatever it is doing. 0: no limit. Default 24h.
	MaxLifetime Duration `yaml:"max_lifetime"`
}

func defaultWebSocket() WebSocket {
	return WebSocket{
		Enabled:     true,
		IdleTimeout: Duration(5 * time.Minute),
		MaxLifetime: Duration(24 * time.Hour),
	}
}

// inheritCompression fills the keys a tenant's compression block leaves out
// from server.compression.
func inheritCompression(c *Config, set func(path string) bool) {
	for i := range c.Tenants {
		tc := c.Tenants[i].Compression
		if tc == nil {
			continue
		}
		p := fmt.Sprintf("tenants[%d].compression.", i)
		s := c.Server.Compression
		if !set(p + "enabled") {
			tc.Enabled = s.Enabled
		}
		if !set(p + "algorithms") {
			tc.Algorithms = append([]string(nil), s.Algorithms...)
		}
		if !set(p + "level") {
			tc.Level = s.Level
		}
		if !set(p + "min_size") {
			tc.MinSize = s.MinSize
		}
		if !set(p + "types") {
			tc.Types = append([]string(nil), s.Types...)
		}
	}
}

// CompressionFor returns the compression settings of tenant t: its own
// block (completed from the server's by Load), or server.compression.
func (c *Config) CompressionFor(t *Tenant) Compression {
	if t.Compression != nil {
		return *t.Compression
	}
	return c.Server.Compression
}

func validateCompression(d *decoder, c *Compression, p string) {
	seen := make(map[string]int)
	for i, a := range c.Algorithms {
		ap := fmt.Sprintf("%s.algorithms[%d]", p, i)
		r, ok := compressionLevels[a]
		if !ok {
			d.errorAt(ap, "expected one of \"br\", \"zstd\", \"gzip\", got %q", clip(a))
			continue
		}
		if j, dup := seen[a]; dup {
			d.errorAt(ap, "duplicate algorithm %q (first at algorithms[%d])", a, j)
			continue
		}
		seen[a] = i
		if c.Level < r[0] || c.Level > r[1] {
			d.errorAt(p+".level", "expected a level between %d and %d for %s, got %d", r[0], r[1], a, c.Level)
		}
	}
	if c.Enabled && len(c.Algorithms) == 0 {
		d.errorAt(p+".algorithms", "expected at least one of \"br\", \"zstd\", \"gzip\"")
	}
	if c.MinSize < 0 {
		d.errorAt(p+".min_size", "expected a size of at least 0, got %s", c.MinSize)
	}
	// Types a tenant inherits from server.compression are reported
	// there, once.
	inherited := strings.HasPrefix(p, "tenants") && !d.isSet(p+".types")
	for i, t := range c.Types {
		if !validMediaType(t) {
			if inherited {
				continue
			}
			d.errorAt(fmt.Sprintf("%s.types[%d]", p, i), "expected a media type such as \"application/json\", without parameters, got %q", clip(t))
			continue
		}
		c.Types[i] = strings.ToLower(t)
	}
}

// validMediaType reports whether s is type "/" subtype, both RFC 9110
// tokens (section 8.3.1), without parameters.
func validMediaType(s string) bool {
	typ, sub, ok := strings.Cut(s, "/")
	return ok && isToken(typ) && isToken(sub)
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validateWebSocket(d *decoder, w *WebSocket, protocols []string, p string) {
	positive(d, p+".websocket.idle_timeout", w.IdleTimeout)
	if w.MaxLifetime < 0 {
		d.errorAt(p+".websocket.max_lifetime", "expected a duration of at least 0, got %s", w.MaxLifetime)
	}
	for i, proto := range protocols {
		pp := fmt.Sprintf("%s.upgrade_protocols[%d]", p, i)
		name, _, _ := strings.Cut(proto, "/")
		switch {
		case !isToken(name) || strings.Count(proto, "/") > 1 || strings.HasSuffix(proto, "/"):
			d.errorAt(pp, "expected a protocol name such as \"foo\" or \"foo/1\", got %q", clip(proto))
		case strings.EqualFold(name, "websocket"):
			d.errorAt(pp, "websocket is configured by websocket.enabled, not upgrade_protocols")
		case strings.EqualFold(name, "h2c"), strings.EqualFold(name, "http"), strings.EqualFold(name, "tls"):
			d.errorAt(pp, "expected a protocol the gateway can tunnel, got %q (the gateway speaks HTTP itself)", clip(proto))
		}
	}
}
