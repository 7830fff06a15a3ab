package server

import (
	"bytes"
	"fmt"
	"strings"
)

// maxHostLen is the longest host name the index compares: RFC 1035 caps a
// name at 253 characters; longer Host headers cannot name any tenant.
const maxHostLen = 253

// index maps a request's host and path to its tenant. It is built once per
// snapshot and read concurrently without locks; it is immutable after
// newIndex returns.
//
// Precedence (the tenant-matching contract):
//  1. host+path tenants: exact host first, then the wildcard one label up;
//  2. host-only tenants: exact, then wildcard;
//  3. path-only tenants.
//
// Among path prefixes the longest one that ends on a segment boundary wins.
// Lookups walk the request path's segment boundaries from the longest
// candidate down and probe a map at each, so the cost depends on the depth of
// the request path, not on the number of tenants (10,000 tenants cost what
// 10 do: see BenchmarkMatch).
type index[T any] struct {
	exact    map[string]*hostRoutes[T] // lowercased host → routes
	wildcard map[string]*hostRoutes[T] // "*.example.com" stored as "example.com"
	paths    prefixSet[T]              // path-only tenants
}

// hostRoutes are the tenants of one host name.
type hostRoutes[T any] struct {
	hostOnly T
	hasHost  bool
	paths    prefixSet[T] // host+path tenants of this host
}

// prefixSet finds the longest registered prefix of a path that ends on a
// segment boundary.
type prefixSet[T any] struct {
	byPrefix map[string]T
	// root is the tenant of prefix "/", which every path matches.
	root    T
	hasRoot bool
	// maxLen is the longest registered prefix, so longer candidates are
	// skipped without a map probe.
	maxLen int
}

func (s *prefixSet[T]) add(prefix string, v T) bool {
	if prefix == "/" {
		if s.hasRoot {
			return false
		}
		s.root, s.hasRoot = v, true
		return true
	}
	if s.byPrefix == nil {
		s.byPrefix = make(map[string]T)
	}
	if _, dup := s.byPrefix[prefix]; dup {
		return false
	}
	s.byPrefix[prefix] = v
	s.maxLen = max(s.maxLen, len(prefix))
	return true
}

func (s *prefixSet[T]) empty() bool { return len(s.byPrefix) == 0 && !s.hasRoot }

// match returns the tenant of the longest prefix of path on a segment
// boundary: "/api" matches "/api" and "/api/x", never "/apix".
func (s *prefixSet[T]) match(path []byte) (T, bool) {
	if len(s.byPrefix) > 0 {
		n := len(path)
		if n > s.maxLen {
			// Start at the last boundary within reach of the longest prefix.
			n = s.maxLen
			for n > 0 && path[n] != '/' {
				n--
			}
		}
		for n > 1 {
			if n == len(path) || path[n] == '/' {
				// The compiler turns m[string(b)] into a lookup without
				// allocating the string.
				if v, ok := s.byPrefix[string(path[:n])]; ok {
					return v, true
				}
			}
			n--
		}
	}
	return s.root, s.hasRoot
}

// route is one tenant's claim for the index: hosts (possibly none) and a
// path prefix ("" for none).
type route[T any] struct {
	hosts  []string
	prefix string
	value  T
}

// newIndex builds the index. Conflicting claims are rejected by config
// validation; newIndex reports them too rather than silently keeping one.
func newIndex[T any](routes []route[T]) (*index[T], error) {
	ix := &index[T]{
		exact:    make(map[string]*hostRoutes[T]),
		wildcard: make(map[string]*hostRoutes[T]),
	}
	for _, r := range routes {
		prefix := r.prefix
		if len(r.hosts) == 0 {
			if prefix == "" {
				return nil, fmt.Errorf("route without host or path prefix")
			}
			if !ix.paths.add(prefix, r.value) {
				return nil, fmt.Errorf("two tenants claim path prefix %q", prefix)
			}
			continue
		}
		for _, h := range r.hosts {
			h = strings.ToLower(h)
			m := ix.exact
			if rest, ok := strings.CutPrefix(h, "*."); ok {
				m, h = ix.wildcard, rest
			}
			hr := m[h]
			if hr == nil {
				hr = &hostRoutes[T]{}
				m[h] = hr
			}
			if prefix == "" {
				if hr.hasHost {
					return nil, fmt.Errorf("two tenants claim host %q", h)
				}
				hr.hostOnly, hr.hasHost = r.value, true
				continue
			}
			if !hr.paths.add(prefix, r.value) {
				return nil, fmt.Errorf("two tenants claim host %q and path prefix %q", h, prefix)
			}
		}
	}
	return ix, nil
}

// Match returns the tenant for a request's host and normalized path. host may
// carry a port and any letter case; it is compared case-insensitively without
// the port. Match does not allocate.
func (ix *index[T]) Match(host, path []byte) (T, bool) {
	var buf [maxHostLen]byte
	h, ok := canonicalHost(buf[:0], host)
	if ok {
		exact := ix.exact[string(h)]
		var wild *hostRoutes[T]
		if i := bytes.IndexByte(h, '.'); i >= 0 {
			// One leading wildcard label: "*.api.example.com" matches
			// "v1.api.example.com", not "api.example.com" nor
			// "a.b.api.example.com".
			wild = ix.wildcard[string(h[i+1:])]
		}
		for _, hr := range [2]*hostRoutes[T]{exact, wild} {
			if hr != nil && !hr.paths.empty() {
				if v, ok := hr.paths.match(path); ok {
					return v, true
				}
			}
		}
		for _, hr := range [2]*hostRoutes[T]{exact, wild} {
			if hr != nil && hr.hasHost {
				return hr.hostOnly, true
			}
		}
	}
	return ix.paths.match(path)
}

// canonicalHost appends host to dst lowercased, without port and without one
// trailing dot. It reports false for hosts that cannot name a tenant.
func canonicalHost(dst, host []byte) ([]byte, bool) {
	if len(host) > 0 && host[0] == '[' {
		// IPv6 literal: "[::1]:8080" → "::1".
		end := bytes.IndexByte(host, ']')
		if end < 0 {
			return nil, false
		}
		host = host[1:end]
	} else if i := bytes.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if len(host) == 0 || len(host) > cap(dst) {
		return nil, false
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}
