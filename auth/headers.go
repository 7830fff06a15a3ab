package auth

import (
	"net/textproto"
	"sort"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// HeaderRules change request headers on the way up (remove, then set, then
// add) and response headers on the way down (remove, then set). Names are
// kept canonical so fasthttp does not normalize them per request.
type HeaderRules struct {
	reqRemove  [][]byte
	reqSet     []headerKV
	reqAdd     []headerKV
	respRemove [][]byte
	respSet    []headerKV
}

// NewHeaderRules builds header rules from validated config.
func NewHeaderRules(c config.HeaderRules) *HeaderRules {
	return &HeaderRules{
		reqRemove:  canonicalNames(c.Request.Remove),
		reqSet:     canonicalKVs(c.Request.Set),
		reqAdd:     canonicalKVs(c.Request.Add),
		respRemove: canonicalNames(c.Response.Remove),
		respSet:    canonicalKVs(c.Response.Set),
	}
}

func canonicalNames(names []string) [][]byte {
	out := make([][]byte, len(names))
	for i, n := range names {
		out[i] = []byte(textproto.CanonicalMIMEHeaderKey(n))
	}
	return out
}

// canonicalKVs turns a map into a list sorted by name, so rules apply in
// the same order on every request.
func canonicalKVs(m map[string]string) []headerKV {
	out := make([]headerKV, 0, len(m))
	for k, v := range m {
		out = append(out, headerKV{key: []byte(textproto.CanonicalMIMEHeaderKey(k)), value: []byte(v)})
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].key) < string(out[j].key) })
	return out
}

// Request applies the request rules.
func (r *HeaderRules) Request(h *fasthttp.RequestHeader) {
	for _, k := range r.reqRemove {
		h.DelBytes(k)
	}
	for _, kv := range r.reqSet {
		h.SetCanonical(kv.key, kv.value)
	}
	for _, kv := range r.reqAdd {
		h.AddBytesKV(kv.key, kv.value)
	}
}

// Response applies the response rules.
func (r *HeaderRules) Response(h *fasthttp.ResponseHeader) {
	for _, k := range r.respRemove {
		h.DelBytes(k)
	}
	for _, kv := range r.respSet {
		h.SetCanonical(kv.key, kv.value)
	}
}
