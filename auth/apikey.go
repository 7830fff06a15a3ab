package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/textproto"

	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// APIKeys accepts static keys from a header or a query parameter. Only
// SHA-256 hashes of the keys are kept: a presented key is hashed and
// compared against every entry in constant time, so neither the key's
// length nor which entry matched (nor how many bytes of it) shows in the
// response time.
type APIKeys struct {
	header []byte // canonical; nil when the key is in the query
	query  []byte
	keys   []apiKey
}

type apiKey struct {
	hash [32]byte
	id   *Identity
}

// NewAPIKeys builds the key set from validated config.
func NewAPIKeys(c config.APIKeys) *APIKeys {
	k := &APIKeys{}
	if c.Header != "" {
		k.header = []byte(textproto.CanonicalMIMEHeaderKey(c.Header))
	} else {
		k.query = []byte(c.Query)
	}
	for _, e := range c.Keys {
		k.keys = append(k.keys, apiKey{hash: e.Hash, id: &Identity{Method: MethodAPIKey, Consumer: e.Consumer}})
	}
	return k
}

// credential returns the key the request presents, or nil.
func (k *APIKeys) credential(ctx *fasthttp.RequestCtx) []byte {
	if k.header != nil {
		return ctx.Request.Header.PeekBytes(k.header)
	}
	return ctx.QueryArgs().PeekBytes(k.query)
}

// Verify returns the identity of key, or nil.
func (k *APIKeys) Verify(key []byte) *Identity {
	sum := sha256.Sum256(key)
	var found *Identity
	for i := range k.keys {
		// No early exit: every entry is compared.
		if subtle.ConstantTimeCompare(sum[:], k.keys[i].hash[:]) == 1 {
			found = k.keys[i].id
		}
	}
	return found
}

// strip removes the key from the request.
func (k *APIKeys) strip(ctx *fasthttp.RequestCtx) {
	if k.header != nil {
		ctx.Request.Header.DelBytes(k.header)
		return
	}
	ctx.QueryArgs().DelBytes(k.query)
}
