package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// JWKS is a JSON Web Key Set (RFC 7517) fetched in the background and
// cached. Why our own small cache on the standard library's crypto types
// rather than github.com/MicahParks/keyfunc/v3: keyfunc brings two more
// modules (jwkset) and its own goroutine and HTTP policy, while the
// gateway needs a specific one — fetch off the request path, refresh
// every interval, an unknown kid causing at most one refetch per
// minRefetch that the requests holding that kid wait for (so a key
// rotation fails no request), the last good keys kept when the endpoint
// is down, an injected clock, and a stop tied to the config snapshot. The
// parsing is 60 lines of encoding/json, math/big and crypto/ecdsa.
type JWKS struct {
	url     string
	refresh time.Duration
	client  *http.Client
	owned   bool // client was made for this key set: Stop closes its connections
	log     *slog.Logger
	clock   func() time.Time

	// keys is the current key set, never nil. Written only by the fetch
	// goroutine, read by every request verifying a token; a stored set
	// is never modified.
	keys atomic.Pointer[keySet]
	// gen counts key-set changes. Incremented by the fetch goroutine
	// right after it stores a different set; read by JWT.Verify, which
	// verifies again a cached token of an older generation. It may lag
	// keys by an instant: a token then re-verified once more, no harm.
	gen atomic.Uint64
	// fetches counts fetch attempts. Incremented by the fetch goroutine,
	// read by tests.
	fetches atomic.Int64

	// mu guards pending and lastKick: the unknown-kid refetch rate limit.
	mu       sync.Mutex
	pending  chan struct{} // closed when the next fetch completes
	lastKick time.Time
	kick     chan struct{}

	// ready is closed when the first fetch has completed (or failed):
	// requests arriving before it wait for it rather than spend the
	// unknown-kid refetch on a key set that is merely not loaded yet.
	ready     chan struct{}
	readyOnce sync.Once

	startOnce, stopOnce sync.Once
	stop, done          chan struct{}
	// ctx is cancelled by Stop, ending a fetch in flight: shutdown does
	// not wait for a slow identity provider.
	ctx    context.Context
	cancel context.CancelFunc
}

// minRefetch is the least time between two fetches caused by an unknown
// kid: a client sending random kids cannot make the gateway hammer the
// identity provider.
const minRefetch = 30 * time.Second

// fetchTimeout bounds one JWKS fetch, and how long a request holding an
// unknown kid waits for the refetch.
const fetchTimeout = 10 * time.Second

// maxJWKSSize bounds a JWKS document.
const maxJWKSSize = 1 << 20

// keySet maps kid to keys.
type keySet struct {
	byKid map[string]jwk
	all   []jwk
}

type jwk struct {
	kid string
	alg string // "" when the JWK does not restrict it
	key crypto.PublicKey
}

// errUnknownKey reports a token whose key is not in the set.
var errUnknownKey = errors.New("auth: unknown key id")

// NewJWKS returns a key set for url refreshed every refresh. Start begins
// fetching.
func NewJWKS(url string, refresh time.Duration, opts Options) *JWKS {
	opts = opts.withDefaults()
	client, owned := opts.HTTPClient, false
	if client == nil {
		client, owned = &http.Client{
			Timeout:   fetchTimeout,
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				// Keys fetched over https must not be downgraded to a
				// plain-text hop an attacker on the path could answer.
				if len(via) >= 5 || via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
					return errors.New("redirect refused")
				}
				return nil
			},
		}, true
	}
	s := &JWKS{
		url:     url,
		refresh: refresh,
		client:  client,
		owned:   owned,
		log:     opts.Logger.With("component", "auth", "jwks_url", url),
		clock:   opts.Clock,
		kick:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.keys.Store(&keySet{byKid: map[string]jwk{}})
	return s
}

// Start fetches the key set now and then every refresh interval, in a
// goroutine that Stop ends.
func (s *JWKS) Start() {
	s.startOnce.Do(func() { go s.run() })
}

// Stop ends the refresh goroutine and waits for it.
func (s *JWKS) Stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		close(s.stop)
		s.startOnce.Do(func() { close(s.done) }) // never started
		<-s.done
		if s.owned {
			s.client.CloseIdleConnections()
		}
	})
}

func (s *JWKS) run() {
	defer close(s.done)
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	s.fetchAndSignal()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.fetchAndSignal()
		case <-s.kick:
			s.fetchAndSignal()
		}
	}
}

// fetchAndSignal fetches once and wakes the requests waiting for it. The
// pending channel stays in place until the fetch is done, so a request
// with the same unknown kid arriving meanwhile waits for this fetch too
// instead of being refused by the rate limit.
func (s *JWKS) fetchAndSignal() {
	s.mu.Lock()
	waiting := s.pending
	s.mu.Unlock()
	s.fetchOnce()
	s.readyOnce.Do(func() { close(s.ready) })
	if waiting != nil {
		s.mu.Lock()
		if s.pending == waiting {
			s.pending = nil
		}
		s.mu.Unlock()
		close(waiting)
	}
}

// fetchOnce fetches and stores the key set; on any failure it logs and
// keeps the last good keys. A panic (a hostile document tripping a bug)
// is logged, not fatal.
func (s *JWKS) fetchOnce() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("jwks fetch panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	s.fetches.Add(1)
	ctx, cancel := context.WithTimeout(s.ctx, fetchTimeout)
	defer cancel()
	set, err := s.fetch(ctx)
	if err != nil {
		s.log.Warn("jwks fetch failed; keeping the last good keys", "error", err.Error())
		return
	}
	if !set.sameAs(s.keys.Load()) {
		s.keys.Store(set)
		s.gen.Add(1)
		s.log.Info("jwks keys loaded", "keys", len(set.all))
	}
}

func (s *JWKS) fetch(ctx context.Context) (*keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("document larger than %d bytes", maxJWKSSize)
	}
	return parseJWKS(body)
}

// Key returns the key for a token's kid and alg. An unknown kid asks the
// fetch goroutine for a refetch, at most once per minRefetch, and waits
// for it (a key rotation publishes the new key before signing with it);
// when the rate limit forbids a refetch the token is refused at once.
func (s *JWKS) Key(kid, alg string) (any, error) {
	if k, ok := s.keys.Load().find(kid, alg); ok {
		return k, nil
	} else if _, known := s.keys.Load().byKid[kid]; known {
		// A known key asked for with the wrong algorithm: refetching
		// would not help.
		return nil, errUnknownKey
	}
	// A key set nobody started (a server that builds snapshots without
	// serving them, a benchmark) starts on first use; its owner's Stop
	// ends it all the same.
	s.Start()
	t := time.NewTimer(fetchTimeout)
	defer t.Stop()
	select {
	case <-s.ready:
	default:
		select {
		case <-s.ready:
		case <-t.C:
			return nil, errUnknownKey
		}
		if k, ok := s.keys.Load().find(kid, alg); ok {
			return k, nil
		}
	}
	wait := s.requestRefetch()
	if wait == nil {
		return nil, errUnknownKey
	}
	select {
	case <-wait:
	case <-t.C:
		return nil, errUnknownKey
	}
	if k, ok := s.keys.Load().find(kid, alg); ok {
		return k, nil
	}
	return nil, errUnknownKey
}

// requestRefetch returns a channel closed when a refetch completes, or nil
// when the rate limit allows none now. Requests arriving while one is
// pending share it.
func (s *JWKS) requestRefetch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending != nil {
		return s.pending
	}
	now := s.clock()
	if !s.lastKick.IsZero() && now.Sub(s.lastKick) < minRefetch {
		return nil
	}
	s.lastKick = now
	s.pending = make(chan struct{})
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return s.pending
}

// find returns the key for kid usable with alg.
func (ks *keySet) find(kid, alg string) (crypto.PublicKey, bool) {
	if kid == "" {
		// A token without a kid is accepted only when the set holds
		// exactly one key that fits.
		var found crypto.PublicKey
		n := 0
		for _, k := range ks.all {
			if k.fits(alg) {
				found = k.key
				n++
			}
		}
		return found, n == 1
	}
	k, ok := ks.byKid[kid]
	if !ok || !k.fits(alg) {
		return nil, false
	}
	return k.key, true
}

// fits reports whether the key may verify alg.
func (k jwk) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func (ks *keySet) sameAs(other *keySet) bool {
	if other == nil || len(ks.all) != len(other.all) {
		return false
	}
	for i, k := range ks.all {
		o := other.all[i]
		eq, ok := k.key.(interface{ Equal(crypto.PublicKey) bool })
		if k.kid != o.kid || k.alg != o.alg || !ok || !eq.Equal(o.key) {
			return false
		}
	}
	return true
}

// rawJWK is the JSON shape of one key.
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS parses a JWKS document. Keys that are not for signatures, of
// an unsupported type or malformed are skipped (an identity provider may
// publish encryption keys beside signing keys); a document with no usable
// key is an error, so a broken endpoint never replaces good keys with
// none.
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid JWKS document: %w", err)
	}
	ks := &keySet{byKid: map[string]jwk{}}
	for _, r := range doc.Keys {
		if r.Use != "" && r.Use != "sig" {
			continue
		}
		key, err := r.publicKey()
		if err != nil {
			continue
		}
		k := jwk{kid: r.Kid, alg: r.Alg, key: key}
		if k.alg != "" && !k.fits(k.alg) {
			continue // an "alg" its key cannot do
		}
		if r.Kid != "" {
			if _, dup := ks.byKid[r.Kid]; dup {
				continue
			}
			ks.byKid[r.Kid] = k
		}
		ks.all = append(ks.all, k)
	}
	if len(ks.all) == 0 {
		return nil, errors.New("JWKS document holds no usable signing key")
	}
	return ks, nil
}

func (r rawJWK) publicKey() (crypto.PublicKey, error) {
	switch r.Kty {
	case "RSA":
		n, err1 := b64(r.N)
		e, err2 := b64(r.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA key")
		}
		key := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if key.N.BitLen() < 2048 || key.E < 3 || key.E%2 == 0 {
			return nil, errors.New("weak RSA key")
		}
		return key, nil
	case "EC":
		curve := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}[r.Crv]
		if curve == nil {
			return nil, errors.New("unsupported curve")
		}
		x, err1 := b64(r.X)
		y, err2 := b64(r.Y)
		size := (curve.Params().BitSize + 7) / 8
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad EC key")
		}
		// ParseUncompressedPublicKey checks that the point is on the
		// curve (an invalid-curve attack needs one that is not).
		return ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	case "OKP":
		x, err := b64(r.X)
		if r.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad OKP key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errors.New("unsupported key type")
}

// b64 decodes base64url with or without padding (RFC 7515 section 2 says
// without; some providers pad).
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
