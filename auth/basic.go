package auth

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"time"

	"github.com/keystone-gateway/keystone/config"
	"golang.org/x/crypto/bcrypt"
)

// Basic accepts HTTP basic credentials (RFC 7617) checked against htpasswd
// entries: bcrypt or {SHA}.
//
// bcrypt is slow by design (about 50ms at the default cost 10, see
// BenchmarkBasicBcrypt*), which a gateway cannot pay on every request of
// a keep-alive client. Accepted credentials are therefore remembered for
// basicCacheTTL as a SHA-256 of "user\x00password" (never the password
// itself); a failed attempt is never cached and always pays the full
// bcrypt cost, so guessing stays slow. An unknown user is checked against
// a dummy bcrypt hash so that its timing does not reveal which users
// exist.
type Basic struct {
	users     map[string]*basicUser
	challenge []byte // Basic realm="...", charset="UTF-8"
	dummy     []byte
	cache     *cache[[32]byte]
	clock     func() time.Time
}

type basicUser struct {
	bcrypt []byte   // nil for a {SHA} entry
	sha1   [20]byte // the {SHA} digest
	id     *Identity
}

// basicCacheTTL bounds how long an accepted basic credential skips bcrypt.
const basicCacheTTL = 5 * time.Minute

// maxCredential bounds a decoded basic credential (user:password).
const maxCredential = 512

// NewBasic builds the user table from validated config.
func NewBasic(c config.Basic, clock func() time.Time) *Basic {
	b := &Basic{
		users:     make(map[string]*basicUser, len(c.Users)),
		challenge: []byte(`Basic realm="` + c.Realm + `", charset="UTF-8"`),
		cache:     newCache[[32]byte](maxCachedCredentials),
		clock:     clock,
	}
	for _, u := range c.Users {
		bu := &basicUser{id: &Identity{Method: MethodBasic, Consumer: u.Name}}
		if rest, ok := strings.CutPrefix(u.Hash, "{SHA}"); ok {
			d, _ := base64.StdEncoding.DecodeString(rest)
			copy(bu.sha1[:], d)
		} else {
			bu.bcrypt = []byte(u.Hash)
		}
		b.users[u.Name] = bu
	}
	// The dummy hash has the cost of the file's first bcrypt entry, so an
	// unknown user takes as long as a known one.
	cost := bcrypt.DefaultCost
	for _, u := range c.Users {
		if c, err := bcrypt.Cost([]byte(u.Hash)); err == nil {
			cost = c
			break
		}
	}
	b.dummy, _ = bcrypt.GenerateFromPassword([]byte("keystone: no such user"), cost)
	return b
}

// parseBasic extracts user and password from an Authorization value
// "Basic base64(user:password)", decoding into buf. ok is false for any
// other scheme or a malformed value.
func parseBasic(v []byte, buf *[maxCredential]byte) (user, pass []byte, ok bool) {
	const scheme = "basic "
	if len(v) < len(scheme) || !asciiEqualFold(v[:len(scheme)], scheme) {
		return nil, nil, false
	}
	enc := bytes.TrimSpace(v[len(scheme):])
	if base64.StdEncoding.DecodedLen(len(enc)) > len(buf) {
		return nil, nil, false
	}
	n, err := base64.StdEncoding.Decode(buf[:], enc)
	if err != nil {
		return nil, nil, false
	}
	user, pass, ok = bytes.Cut(buf[:n], []byte{':'})
	return user, pass, ok && len(user) > 0
}

// Verify returns the identity of a basic Authorization value, or nil.
func (b *Basic) Verify(v []byte) *Identity {
	var buf [maxCredential]byte
	user, pass, ok := parseBasic(v, &buf)
	if !ok {
		return nil
	}
	return b.verify(user, pass)
}

func (b *Basic) verify(user, pass []byte) *Identity {
	key := credKey(user, pass)
	now := b.clock()
	if id := b.cache.get(key, "", now, 0); id != nil {
		return id
	}
	u := b.users[string(user)]
	switch {
	case u == nil:
		_ = bcrypt.CompareHashAndPassword(b.dummy, pass)
		return nil
	case u.bcrypt != nil:
		if bcrypt.CompareHashAndPassword(u.bcrypt, pass) != nil {
			return nil
		}
	default:
		sum := sha1.Sum(pass)
		if subtle.ConstantTimeCompare(sum[:], u.sha1[:]) != 1 {
			return nil
		}
	}
	b.cache.put(key, "", u.id, now.Add(basicCacheTTL), now, 0)
	return u.id
}

// credKey hashes user and password for the cache.
func credKey(user, pass []byte) [32]byte {
	h := sha256.New()
	h.Write(user)
	h.Write([]byte{0})
	h.Write(pass)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// asciiEqualFold reports whether b equals the lowercase ASCII s, ignoring
// case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
