package luavm

import (
	"fmt"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/http/httpguts"
)

// w is one userdata per VM, bound like req. It maps straight onto
// ctx.Response: what a middleware sets before next(w, req) is what the
// handler (or the upstream, through keystone.Proxy) starts from, and what
// they produced is what the middleware sees after next returns.

// responseExports are w's methods.
var responseExports = map[string]lua.LGFunction{
	"Header":      respHeader,
	"WriteHeader": respWriteHeader,
	"Write":       respWrite,
	"JSON":        respJSON,
	"Redirect":    respRedirect,
	"Status":      respStatus,
	"Body":        respBody,
	"SetBody":     respSetBody,
}

func (v *vm) openResponse() {
	L := v.L
	mt := L.NewTypeMetatable("keystone.ResponseWriter")
	mt.RawSetString("__index", L.SetFuncs(L.NewTable(), responseExports))
	mt.RawSetString("__metatable", lua.LString("keystone.ResponseWriter"))
	v.w = L.NewUserData()
	v.w.Value = &respObj{v: v}
	v.w.Metatable = mt
}

// respObj distinguishes w's userdata value from req's.
type respObj struct{ v *vm }

// checkResponse returns the request bound to the w argument, or raises.
func checkResponse(L *lua.LState) (*vm, *fasthttp.RequestCtx) {
	if ud, ok := L.Get(1).(*lua.LUserData); ok {
		if r, ok := ud.Value.(*respObj); ok {
			return r.v, r.v.requestCtx(L)
		}
	}
	L.ArgError(1, "w expected, got "+L.Get(1).Type().String())
	return nil, nil
}

func respHeader(L *lua.LState) int {
	v, _ := checkResponse(L)
	L.Push(v.respHeader)
	return 1
}

// checkStatus accepts the final statuses 200-599 only. A 1xx is an
// interim response in HTTP/1.1 (RFC 9110 section 15.2): sent as the
// answer, the client would read "100 Continue" and then wait for the real
// response, and pipelined responses would pair with the wrong requests.
func checkStatus(L *lua.LState, n int) int {
	code := L.CheckInt(n)
	if code < 200 || code > 599 {
		L.ArgError(n, fmt.Sprintf("status code must be a final status, 200-599, got %d", code))
	}
	return code
}

func respWriteHeader(L *lua.LState) int {
	_, ctx := checkResponse(L)
	ctx.SetStatusCode(checkStatus(L, 2))
	return 0
}

// noStream raises if the response body is a stream (a streamed upstream
// response): reading or appending to it would buffer it whole.
func noStream(L *lua.LState, ctx *fasthttp.RequestCtx, method string) {
	if ctx.Response.IsBodyStream() {
		L.RaiseError("w:%s(): the response body is streamed from the upstream", method)
	}
}

func respWrite(L *lua.LState) int {
	v, ctx := checkResponse(L)
	s := L.CheckString(2)
	noStream(L, ctx, "Write")
	if n := len(ctx.Response.Body()) + len(s); n > v.s.cfg.MaxStringSize {
		L.RaiseError("w:Write(): body of %d bytes exceeds the %d-byte string limit", n, v.s.cfg.MaxStringSize)
	}
	ctx.Response.AppendBodyString(s)
	v.cur.wrote = true
	return 0
}

// respJSON replaces the body with the JSON encoding of a value: appending
// JSON to an earlier Write never makes a valid document.
func respJSON(L *lua.LState) int {
	v, ctx := checkResponse(L)
	code := checkStatus(L, 2)
	b := v.encodeJSON(L, L.CheckAny(3), nil)
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.Response.SetBodyRaw(b)
	return 0
}

func respRedirect(L *lua.LState) int {
	_, ctx := checkResponse(L)
	url := L.CheckString(2)
	code := L.OptInt(3, fasthttp.StatusFound)
	if !httpguts.ValidHeaderFieldValue(url) {
		L.ArgError(2, "redirect URL must not contain CR, LF or NUL")
	}
	if code < 300 || code > 399 {
		L.ArgError(3, "redirect status must be 3xx")
	}
	ctx.Redirect(url, code)
	return 0
}

func respStatus(L *lua.LState) int {
	_, ctx := checkResponse(L)
	L.Push(lua.LNumber(ctx.Response.StatusCode()))
	return 1
}

func respBody(L *lua.LState) int {
	v, ctx := checkResponse(L)
	noStream(L, ctx, "Body")
	body := ctx.Response.Body()
	if len(body) > v.s.cfg.MaxStringSize {
		L.RaiseError("w:Body(): body of %d bytes exceeds the %d-byte string limit", len(body), v.s.cfg.MaxStringSize)
	}
	L.Push(lua.LString(body))
	return 1
}

func respSetBody(L *lua.LState) int {
	v, ctx := checkResponse(L)
	ctx.Response.SetBodyString(L.CheckString(2))
	v.cur.wrote = true
	return 0
}
