package server

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error codes of the JSON error bodies the gateway answers with on its own.
// They are part of the API: clients and dashboards match on them.
const (
	codeBadRequest       = "bad_request"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeTimeout          = "request_timeout"
	codeTooLarge         = "request_too_large"
	codeURITooLong       = "uri_too_long"
	codeHeaderTooLarge   = "header_too_large"
	codeInternal         = "internal_error"
	codeUpstreamConnect  = "upstream_connect_failed"
	codeUpstreamError    = "upstream_error"
	codeUpstreamTimeout  = "upstream_timeout"
	codeUnavailable      = "no_upstream_available"
	codeCircuitOpen      = "circuit_open"
	codeUnauthorized     = "unauthorized"
	codeBusy             = "busy" // every Lua VM of the script is busy
	codeVersion          = "http_version_not_supported"
)

// writeError replaces the response with the gateway's JSON error body:
//
//	{"status":502,"error":"upstream_connect_failed","message":"...","request_id":"..."}
//
// code and msg are constants of this package or messages written for clients;
// internal error text never reaches a client. The request id comes from the
// request header the pipeline set; it was validated to need no JSON escaping.
// writeError does not allocate.
func writeError(ctx *fasthttp.RequestCtx, reqID []byte, status int, code, msg string) {
	resp := &ctx.Response
	// Keep the connection decision (a framing error must still close) but
	// drop whatever a failed upstream attempt or script left behind.
	closeConn := resp.ConnectionClose()
	resp.Reset()
	if closeConn {
		resp.SetConnectionClose()
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentType("application/json")
	resp.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	var buf [512]byte // long script messages spill to the heap; ours fit
	b := append(buf[:0], `{"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"error":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"request_id":"`...)
	b = append(b, reqID...)
	b = append(b, "\"}\n"...)
	resp.SetBody(b)
}

// appendJSONString appends s as a JSON string. Messages are plain ASCII
// written by us, but a Lua script can pass its own text through
// Host.WriteError, so escape properly.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
