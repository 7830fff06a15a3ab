package server

import (
	"bytes"
	"net"
	"net/netip"
)

// trustedProxies decides whose X-Forwarded-For is believed. The zero value
// trusts nobody: the client IP is always the TCP peer.
type trustedProxies []netip.Prefix

func (t trustedProxies) trusts(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr converts the TCP peer of a request to a netip.Addr without
// allocating; IPv4-mapped IPv6 addresses are unmapped so "::ffff:10.0.0.1"
// matches a 10.0.0.0/8 rule.
func peerAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// clientIP returns the address the gateway treats as the client: the
// rightmost address of the forwarding chain that is not a trusted proxy. The
// chain is the X-Forwarded-For values in order (each a comma-separated list,
// leftmost oldest) followed by the peer itself. Addresses to the left of the
// first untrusted one are client-supplied and can be spoofed, so they are
// never believed.
//
// An entry that does not parse stops the walk: the last trusted hop is the
// best answer we can defend.
func (t trustedProxies) clientIP(peer netip.Addr, xff [][]byte) netip.Addr {
	if len(t) == 0 || !t.trusts(peer) {
		return peer
	}
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for len(v) > 0 {
			var tok []byte
			if j := bytes.LastIndexByte(v, ','); j >= 0 {
				tok, v = v[j+1:], v[:j]
			} else {
				tok, v = v, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 {
				continue
			}
			a, ok := parseForwardedAddr(tok)
			if !ok {
				return client
			}
			client = a
			if !t.trusts(a) {
				return a
			}
		}
	}
	return client
}

// parseForwardedAddr parses one X-Forwarded-For entry: an IP, optionally with
// a port ("1.2.3.4:80", "[::1]:80") as some proxies write it.
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	if len(b) > 64 {
		return netip.Addr{}, false
	}
	// The conversions below do not escape, so the compiler backs them with
	// a stack buffer instead of allocating.
	if a, err := netip.ParseAddr(string(b)); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(string(b)); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
