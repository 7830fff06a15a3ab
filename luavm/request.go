package luavm

import (
	"bytes"
	"io"
	"strings"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/http/httpguts"
)

// req is one userdata per VM, bound to the current request's ctx: no
// userdata is allocated per request. The members that are fields of Go's
// http.Request are fields here too (req.Method, req.Host, req.URL.Path,
// req.Header, req.ContentLength, ...), plus the shortcuts req.Path and
// req.RawQuery; everything else is a method (req:Body()). req.Header is
// also callable, so both Go's r.Header.Get and the older req:Header():Get
// work.

// requestExports are req's methods.
var requestExports = map[string]lua.LGFunction{
	"Query":       reqQuery,
	"Body":        reqBody,
	"SetBody":     reqSetBody,
	"URLParam":    reqURLParam,
	"Cookie":      reqCookie,
	"SetPath":     reqSetPath,
	"SetRawQuery": reqSetRawQuery,
	"SetQuery":    reqSetRawQuery,
}

// headerExports are the methods of req:Header() and w:Header().
var headerExports = map[string]lua.LGFunction{
	"Get":    headerGet,
	"Set":    headerSet,
	"Add":    headerAdd,
	"Del":    headerDel,
	"Values": headerValues,
}

// headerObj binds a header userdata to its VM and side.
type headerObj struct {
	v        *vm
	response bool
}

// Preboxed method names: req.Method allocates nothing for these.
var methodValues = map[string]lua.LValue{}

func init() {
	for _, m := range allMethods {
		methodValues[m] = lua.LString(m)
	}
}

func (v *vm) openRequest() {
	L := v.L
	hmt := L.NewTypeMetatable("keystone.Header")
	hmt.RawSetString("__index", L.SetFuncs(L.NewTable(), headerExports))
	// req:Header() calls the header object with req: it returns itself.
	hmt.RawSetString("__call", L.NewFunction(headerCall))
	hmt.RawSetString("__metatable", lua.LString("keystone.Header"))
	v.reqHeader = L.NewUserData()
	v.reqHeader.Value = &headerObj{v: v}
	v.reqHeader.Metatable = hmt
	v.respHeader = L.NewUserData()
	v.respHeader.Value = &headerObj{v: v, response: true}
	v.respHeader.Metatable = hmt

	// req's __index is its method table, so req:Body() and req.Header are
	// plain table hits; only a miss (a field: req.Method) reaches the
	// method table's own __index function. gopher-lua boxes the key for
	// an __index function, one allocation that method calls thus avoid.
	v.reqMethods = L.SetFuncs(L.NewTable(), requestExports)
	v.reqMethods.RawSetString("Header", v.reqHeader)
	fields := L.NewTable()
	fields.RawSetString("__index", L.NewFunction(v.reqField))
	v.reqMethods.Metatable = fields
	mt := L.NewTypeMetatable("keystone.Request")
	mt.RawSetString("__index", v.reqMethods)
	mt.RawSetString("__metatable", lua.LString("keystone.Request"))
	v.req = L.NewUserData()
	v.req.Value = v
	v.req.Metatable = mt

	umt := L.NewTable()
	umt.RawSetString("__index", L.NewFunction(v.urlField))
	umt.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LString(v.requestCtx(L).URI().RequestURI()))
		return 1
	}))
	umt.RawSetString("__metatable", lua.LString("keystone.URL"))
	v.reqURL = L.NewUserData()
	v.reqURL.Metatable = umt
}

// headerCall is the header object's __call: h(...) returns h.
func headerCall(L *lua.LState) int {
	L.Push(L.Get(1))
	return 1
}

// checkRequest returns the VM of the req argument n, or raises.
func checkRequest(L *lua.LState, n int) *vm {
	if ud, ok := L.Get(n).(*lua.LUserData); ok {
		if v, ok := ud.Value.(*vm); ok && ud == v.req {
			return v
		}
	}
	L.ArgError(n, "req expected, got "+L.Get(n).Type().String())
	return nil
}

// reqField serves req's fields. Argument 1 is the method table.
func (v *vm) reqField(L *lua.LState) int {
	key := L.CheckString(2)
	var val lua.LValue
	switch key {
	case "URL":
		v.requestCtx(L)
		val = v.reqURL
	case "RequestURI":
		val = lua.LString(v.requestCtx(L).RequestURI())
	case "ContentLength":
		// fasthttp reports -1 for chunked and -2 for "read until close";
		// Go's -1 means unknown for both.
		val = lua.LNumber(max(v.requestCtx(L).Request.Header.ContentLength(), -1))
	case "Proto":
		val = lua.LString(v.requestCtx(L).Request.Header.Protocol())
	case "ProtoMajor", "ProtoMinor":
		// Only HTTP/1.0 and 1.1 reach a script.
		val = lua.LNumber(1)
		if key == "ProtoMinor" && !v.requestCtx(L).Request.Header.IsHTTP11() {
			val = lua.LNumber(0)
		}
	case "Method":
		m := v.requestCtx(L).Method()
		if boxed, ok := methodValues[b2s(m)]; ok {
			val = boxed
		} else {
			val = lua.LString(m)
		}
	case "Host":
		val = lua.LString(v.requestCtx(L).Host())
	case "Path":
		val = lua.LString(v.requestCtx(L).Path())
	case "RawQuery":
		val = lua.LString(v.requestCtx(L).URI().QueryString())
	case "RemoteAddr":
		val = lua.LString(v.s.host.ClientIP(v.requestCtx(L)))
	case "Auth":
		val = v.reqAuth(L)
	case "Context":
		v.requestCtx(L)
		if v.reqCtx == nil {
			v.reqCtx = L.NewTable()
		}
		val = v.reqCtx
	default:
		val = lua.LNil
	}
	L.Push(val)
	return 1
}

// urlField serves req.URL.Path, req.URL.RawQuery and req.URL.Host (the
// host of an absolute-form request target, "" otherwise, as in Go).
func (v *vm) urlField(L *lua.LState) int {
	ctx := v.requestCtx(L)
	var val lua.LValue = lua.LNil
	switch L.CheckString(2) {
	case "Path":
		val = lua.LString(ctx.Path())
	case "RawQuery":
		val = lua.LString(ctx.URI().QueryString())
	case "Host":
		val = lua.LString("")
		if uri := ctx.Request.Header.RequestURI(); !bytes.HasPrefix(uri, []byte("/")) {
			val = lua.LString(ctx.URI().Host())
		}
	}
	L.Push(val)
	return 1
}

func reqQuery(L *lua.LState) int {
	v := checkRequest(L, 1)
	L.Push(lua.LString(v.requestCtx(L).QueryArgs().Peek(L.CheckString(2))))
	return 1
}

// reqBody returns the request body, refusing one over MaxStringSize. A
// streamed body is read here, with the Lua clock paused: it waits on the
// client.
func reqBody(L *lua.LState) int {
	v := checkRequest(L, 1)
	ctx := v.requestCtx(L)
	limit := v.s.cfg.MaxStringSize
	if n := ctx.Request.Header.ContentLength(); n > limit {
		L.RaiseError("req:Body(): body of %d bytes exceeds the %d-byte string limit", n, limit)
	}
	var body []byte
	if ctx.Request.IsBodyStream() {
		if !v.dl.pause() {
			L.RaiseError("%s", errTimeoutText)
		}
		// Not Request.Body: on a stream it logs a warning through the
		// server's logger on every call, one WARN line per request that
		// any client can trigger. Read whole, as Body would (the server
		// bounds it by max_request_body), and buffered from now on for a
		// later req:Body() and for keystone.Proxy.
		b, err := io.ReadAll(ctx.RequestBodyStream())
		v.dl.resume()
		ctx.Request.SetBodyRaw(b)
		if err != nil {
			L.RaiseError("req:Body(): reading the body: %s", err.Error())
		}
		body = b
	} else {
		body = ctx.Request.Body()
	}
	if len(body) > limit {
		L.RaiseError("req:Body(): body of %d bytes exceeds the %d-byte string limit", len(body), limit)
	}
	L.Push(lua.LString(body))
	return 1
}

func reqSetBody(L *lua.LState) int {
	v := checkRequest(L, 1)
	v.requestCtx(L).Request.SetBodyString(L.CheckString(2))
	return 0
}

func reqURLParam(L *lua.LState) int {
	v := checkRequest(L, 1)
	L.Push(v.urlParam(L, L.CheckString(2)))
	return 1
}

// urlParam returns a route parameter, "" when absent, as chi.URLParam.
// Only parameter names are looked up, so a script cannot read the
// server's own ctx user values through it.
func (v *vm) urlParam(L *lua.LState, name string) lua.LValue {
	ctx := v.requestCtx(L)
	if name != "*" && !validParamName(name) {
		return lua.LString("")
	}
	s, _ := ctx.UserValue(name).(string)
	return lua.LString(s)
}

func reqCookie(L *lua.LState) int {
	v := checkRequest(L, 1)
	L.Push(lua.LString(v.requestCtx(L).Request.Header.Cookie(L.CheckString(2))))
	return 1
}

// reqSetPath changes the path the upstream receives through
// keystone.Proxy. Routing already happened.
func reqSetPath(L *lua.LState) int {
	v := checkRequest(L, 1)
	p := L.CheckString(2)
	if p == "" || p[0] != '/' || !httpguts.ValidHeaderFieldValue(p) {
		L.ArgError(2, "path must start with \"/\" and contain no control characters")
	}
	v.requestCtx(L).URI().SetPath(p)
	return 0
}

// reqSetRawQuery replaces the query, percent-encoding every byte RFC 3986
// does not allow there: a space would otherwise end the request target on
// the wire ("GET /q?q=a HTTP/1.0 x HTTP/1.1").
func reqSetRawQuery(L *lua.LState) int {
	v := checkRequest(L, 1)
	v.requestCtx(L).URI().SetQueryString(escapeQuery(L.CheckString(2)))
	return 0
}

// escapeQuery percent-encodes the bytes of q that RFC 3986 section 3.4
// does not allow in a query (query = *( pchar / "/" / "?" )), and a '%'
// that does not start a %XX escape. A valid query is returned as is.
func escapeQuery(q string) string {
	i := 0
	for i < len(q) && queryByteOK(q, i) {
		i++
	}
	if i == len(q) {
		return q
	}
	b := make([]byte, 0, len(q)+16)
	b = append(b, q[:i]...)
	for ; i < len(q); i++ {
		if queryByteOK(q, i) {
			b = append(b, q[i])
		} else {
			b = append(b, '%', upperHex[q[i]>>4], upperHex[q[i]&15])
		}
	}
	return string(b)
}

const upperHex = "0123456789ABCDEF"

func queryByteOK(q string, i int) bool {
	c := q[i]
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '%':
		return i+2 < len(q) && isHex(q[i+1]) && isHex(q[i+2])
	}
	// unreserved, sub-delims, ':', '@', '/', '?'
	return strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f'
}

// validHost reports whether h is a host[:port] fit for a Host header:
// no userinfo ('@' is not a host byte), nothing that ends the authority.
func validHost(h string) bool {
	return h != "" && httpguts.ValidHostHeader(h)
}

// checkHeader returns the header binding of argument 1 and its request.
func checkHeader(L *lua.LState) (*headerObj, *fasthttp.RequestCtx) {
	if ud, ok := L.Get(1).(*lua.LUserData); ok {
		if h, ok := ud.Value.(*headerObj); ok {
			return h, h.v.requestCtx(L)
		}
	}
	L.ArgError(1, "header expected, got "+L.Get(1).Type().String())
	return nil, nil
}

// checkHeaderKV checks a header name, and a value unless n == 2, against
// response splitting: a name must be a token, a value free of CR, LF, NUL.
// write is set for Set, Add and Del, which may not touch the framing
// headers: the gateway sets Content-Length from the body and owns
// Transfer-Encoding, and a value disagreeing with the body would
// desynchronise the connection (RFC 9112 section 6.3).
func checkHeaderKV(L *lua.LState, withValue, write bool) (string, string) {
	name := L.CheckString(2)
	if !httpguts.ValidHeaderFieldName(name) {
		L.ArgError(2, "invalid header name "+quote(name))
	}
	if write && (strings.EqualFold(name, fasthttp.HeaderContentLength) || strings.EqualFold(name, fasthttp.HeaderTransferEncoding)) {
		L.ArgError(2, name+" is set by the gateway from the body: change the body instead")
	}
	if !withValue {
		return name, ""
	}
	value := L.CheckString(3)
	if !httpguts.ValidHeaderFieldValue(value) {
		L.ArgError(3, "header value must not contain CR, LF or NUL")
	}
	return name, value
}

func headerGet(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, _ := checkHeaderKV(L, false, false)
	if h.response {
		L.Push(lua.LString(ctx.Response.Header.Peek(name)))
	} else {
		L.Push(lua.LString(ctx.Request.Header.Peek(name)))
	}
	return 1
}

// checkRequestHost refuses a request Host a script sets that is not a
// host[:port]: "user:pw@host" would put credentials into the upstream
// request, which the gateway never creates.
func checkRequestHost(L *lua.LState, h *headerObj, name, value string) {
	if !h.response && strings.EqualFold(name, fasthttp.HeaderHost) && !validHost(value) {
		L.ArgError(3, "invalid Host "+quote(value)+": expected host[:port], without userinfo")
	}
}

func headerSet(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, value := checkHeaderKV(L, true, true)
	checkRequestHost(L, h, name, value)
	if h.response {
		ctx.Response.Header.Set(name, value)
	} else {
		ctx.Request.Header.Set(name, value)
	}
	return 0
}

func headerAdd(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, value := checkHeaderKV(L, true, true)
	checkRequestHost(L, h, name, value)
	if h.response {
		ctx.Response.Header.Add(name, value)
	} else {
		ctx.Request.Header.Add(name, value)
	}
	return 0
}

func headerDel(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, _ := checkHeaderKV(L, false, true)
	if h.response {
		ctx.Response.Header.Del(name)
	} else {
		ctx.Request.Header.Del(name)
	}
	return 0
}

func headerValues(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, _ := checkHeaderKV(L, false, false)
	var vals [][]byte
	if h.response {
		vals = ctx.Response.Header.PeekAll(name)
	} else {
		vals = ctx.Request.Header.PeekAll(name)
	}
	t := L.CreateTable(len(vals), 0)
	for _, b := range vals {
		t.Append(lua.LString(b))
	}
	L.Push(t)
	return 1
}
