package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"
)

// testClock is an injected clock tests advance instead of sleeping.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Unix(1_800_000_000, 0)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Keys generated once per test binary; no key material is committed.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

// sign signs claims with method and key, setting kid when not empty.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwkJSON renders public keys as a JWKS document.
func jwkJSON(keys map[string]any) []byte {
	var out struct {
		Keys []map[string]string `json:"keys"`
	}
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			out.Keys = append(out.Keys, map[string]string{"kty": "RSA", "kid": kid, "use": "sig",
				"n": b64u(k.N.Bytes()), "e": b64u(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PublicKey:
			b, _ := k.Bytes()
			size := (k.Curve.Params().BitSize + 7) / 8
			out.Keys = append(out.Keys, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
				"x": b64u(b[1 : 1+size]), "y": b64u(b[1+size:])})
		}
	}
	b, _ := json.Marshal(out)
	return b
}

// jwksServer is a real JWKS endpoint on loopback whose keys tests change.
type jwksServer struct {
	url      string
	mu       sync.Mutex
	doc      []byte
	fail     bool
	requests atomic.Int64
	srv      *http.Server
}

func startJWKS(t testing.TB, keys map[string]any) *jwksServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &jwksServer{url: "http://" + ln.Addr().String() + "/jwks.json", doc: jwkJSON(keys)}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		doc, fail := s.doc, s.fail
		s.mu.Unlock()
		if fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})}
	go s.srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *jwksServer) setKeys(keys map[string]any) {
	s.mu.Lock()
	s.doc = jwkJSON(keys)
	s.mu.Unlock()
}

func (s *jwksServer) setFailing(fail bool) {
	s.mu.Lock()
	s.fail = fail
	s.mu.Unlock()
}

// newCtx returns a request ctx for method and uri with header pairs.
func newCtx(method, uri string, headers ...string) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.SetHost("api.example.com")
	for i := 0; i+1 < len(headers); i += 2 {
		ctx.Request.Header.Add(headers[i], headers[i+1])
	}
	return ctx
}
