package server

import (
	"bufio"
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestOwnedHeadersLeaveAsOneFieldWhateverTheClientSent checks the proxy
// stage's one-pass edits (scanRequest, setOwned) against what the client
// can send: no field, one, several, in any case, named by Connection, or in
// a chunked body's trailer section, which hop-by-hop removal moves into the
// header. Each header the gateway owns must leave as one field with the
// gateway's value, and the X-Forwarded-For chain must keep every value the
// client sent, in order, then the peer.
func TestOwnedHeadersLeaveAsOneFieldWhateverTheClientSent(t *testing.T) {
	t.Parallel()
	const body = "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
	cases := []struct {
		name, head, tail string
		chain            string // the X-Forwarded-For the upstream gets
	}{
		{"no owned field", "", "", "192.0.2.7"},
		{"one of each",
			"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Request-Id: client\r\n", "",
			"1.1.1.1, 192.0.2.7"},
		{"two of each",
			"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Request-Id: a\r\n" +
				"X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: ftp\r\nX-Forwarded-Host: evil2\r\nX-Request-Id: b\r\n", "",
			"1.1.1.1, 2.2.2.2, 192.0.2.7"},
		{"lower case names",
			"x-forwarded-for: 1.1.1.1\r\nx-forwarded-proto: https\r\nx-request-id: a\r\nX-REQUEST-ID: b\r\n", "",
			"1.1.1.1, 192.0.2.7"},
		{"named by Connection",
			"Connection: X-Forwarded-For, X-Request-Id\r\nX-Forwarded-For: 1.1.1.1\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n", "",
			"1.1.1.1, 192.0.2.7"},
		// fasthttp refuses X-Forwarded-* in a trailer section; the
		// request id may come there.
		{"an announced trailer field",
			"X-Forwarded-For: 1.1.1.1\r\nTrailer: X-Request-Id\r\n" + body,
			"X-Request-Id: t\r\n",
			"1.1.1.1, 192.0.2.7"},
		{"a trailer field beside the header's",
			"X-Request-Id: a\r\n" + body,
			"X-Request-Id: t\r\n",
			"192.0.2.7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := "POST /x HTTP/1.1\r\nHost: api.example.com\r\n" + c.head
			if c.tail != "" || strings.Contains(c.head, "chunked") {
				raw += c.tail + "\r\n"
			} else {
				raw += "\r\n"
			}
			var req fasthttp.Request
			if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
				t.Fatalf("reading %q: %v", raw, err)
			}
			ctx := &fasthttp.RequestCtx{}
			ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}, nil)
			rs := acquireState()
			defer releaseState(rs)
			rs.peer = peerAddr(ctx.RemoteIP())
			rs.reqID = append(rs.id[:0], "gateway-id"...)
			p := &pool{reqIDHeader: []byte("X-Request-Id")}
			p.prepare(ctx, rs)

			h := &ctx.Request.Header
			for _, w := range []struct{ key, want string }{
				{"X-Forwarded-For", c.chain},
				{"X-Forwarded-Proto", "http"},
				{"X-Forwarded-Host", "api.example.com"},
				{"X-Request-Id", "gateway-id"},
			} {
				all := h.PeekAll(w.key)
				if len(all) != 1 || string(all[0]) != w.want {
					var got []string
					for _, v := range all {
						got = append(got, string(v))
					}
					t.Errorf("%s leaves as %q, want one field %q", w.key, got, w.want)
				}
			}
		})
	}
}

// TestFramingFieldsAreKeptWhateverConnectionNamesThem pins the tokens a
// Connection header may not remove, in any case, and nothing that merely
// shares a length or a prefix with them.
func TestFramingFieldsAreKeptWhateverConnectionNamesThem(t *testing.T) {
	t.Parallel()
	for tok, want := range map[string]bool{
		"close": true, "CLOSE": true, "keep-alive": true, "Keep-Alive": true, "content-length": true,
		"Transfer-Encoding": true, "host": true, "HOST": true,
		"": false, "clos": false, "closed": false, "keep-alivf": false, "upgrade": false, "hosts": false,
		"X-Request-Id": false, "content-lengtx": false, "transfer-encodinx": false,
	} {
		if got := framingField([]byte(tok)); got != want {
			t.Errorf("framingField(%q) = %v, want %v", tok, got, want)
		}
	}
}

// TestHopBitsNameTheirHeaders pins the hopHeaders positions the bit
// constants stand for.
func TestHopBitsNameTheirHeaders(t *testing.T) {
	t.Parallel()
	for bit, want := range map[uint16]string{connectionBit: "Connection", keepAliveBit: "Keep-Alive", trailerBit: "Trailer"} {
		if got := hopMask(func(yield func([]byte, []byte) bool) { yield([]byte(want), nil) }); got != bit {
			t.Errorf("hopMask of %s = %b, want %b", want, got, bit)
		}
	}
}
