package server

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// FuzzRequestHeaders feeds arbitrary request heads through fasthttp's parser
// and then through the gateway's own header handling: framing checks,
// hop-by-hop removal, client IP resolution, request id validation, the
// authority and version checks and the field count. None
// may panic, and after removal no hop-by-hop header may remain.
func FuzzRequestHeaders(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-a, X-B,,close , keep-alive\r\nX-A: 1\r\nx-b: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Content-Length, Host, Transfer-Encoding\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4, [::1]:80, garbage,, \r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\nTransfer-Encoding : chunked\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + strings.Repeat("a", 200) + "\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: admin:hunter2@s.example\r\n\r\n",
		"GET http://a.example:80@b.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n",
		"GET https://u@b.example?q=@ HTTP/1.1\r\n\r\n",
		"GET ftp://b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\ncookie: c=3\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n\r\n",
	} {
		f.Add(s)
	}
	trusted := trustedProxies{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, head string) {
		var req fasthttp.Request
		if err := req.Header.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
			return
		}
		h := &req.Header
		_ = framingError(h)
		_ = badAuthority(h)
		_ = supportedVersion(h)
		if n := fieldLines(h); n < 0 {
			t.Fatalf("fieldLines = %d", n)
		}
		_ = trusted.clientIP(netip.MustParseAddr("127.0.0.1"), h.PeekAll(fasthttp.HeaderXForwardedFor))
		var rs reqState
		rs.setRequestID(h.Peek("X-Request-ID"))
		if !validRequestID(rs.reqID) {
			t.Fatalf("request id %q is not valid", rs.reqID)
		}
		named := h.Peek(fasthttp.HeaderConnection)
		var tokens []string
		for _, tok := range strings.Split(string(named), ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !framingField([]byte(tok)) {
				tokens = append(tokens, tok)
			}
		}
		removeRequestHopHeaders(h)
		for _, k := range hopHeaders {
			if k == "Transfer-Encoding" {
				continue // framing, kept by fasthttp as state, not a header
			}
			if v := h.Peek(k); len(v) > 0 {
				t.Fatalf("hop-by-hop %s: %q survived", k, v)
			}
		}
		for _, tok := range tokens {
			if v := h.Peek(tok); len(v) > 0 && httpguts.ValidHeaderFieldName(tok) {
				t.Fatalf("header %q named by Connection survived: %q", tok, v)
			}
		}
	})
}
