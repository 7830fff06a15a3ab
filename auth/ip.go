package auth

import "net/netip"

// IPFilter allows or denies client addresses. Deny wins over allow; with no
// allow prefixes every address not denied is allowed. IPv4-mapped IPv6
// addresses (::ffff:10.0.0.1) are compared as IPv4, so a dual-stack
// listener cannot be used to slip past an IPv4 rule.
type IPFilter struct {
	allow, deny []netip.Prefix
}

// NewIPFilter returns a filter over masked prefixes.
func NewIPFilter(allow, deny []netip.Prefix) *IPFilter {
	return &IPFilter{allow: unmapPrefixes(allow), deny: unmapPrefixes(deny)}
}

func unmapPrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		a := p.Addr()
		if a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Allowed reports whether addr may reach the tenant. An invalid address
// (no client IP known) is allowed only when no allow list is set and no
// deny rule exists. The lists are scanned linearly: they hold a handful
// of prefixes, and a scan of ten costs less than a trie lookup would.
func (f *IPFilter) Allowed(addr netip.Addr) bool {
	if !addr.IsValid() {
		return len(f.allow) == 0 && len(f.deny) == 0
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range f.deny {
		if p.Contains(addr) {
			return false
		}
	}
	if len(f.allow) == 0 {
		return true
	}
	for _, p := range f.allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
