package luavm

import (
	"io"

	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/http/httpguts"
)

// req is one userdata per VM, bound to the current request's ctx: no
// userdata is allocated per request. Fields (req.Method, req.Host,
// req.Path, req.RawQuery, req.RemoteAddr, req.Context) read like Go's
// http.Request; everything else is a method (req:Header()). A field and a
// method cannot share a name in Lua (req.Method is a string, so
// req:Method() would call a string), so fields are the only form.

// requestExports are req's methods.
var requestExports = map[string]lua.LGFunction{
	"Header":      reqHeader,
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
	// req's __index is its method table, so req:Header() is a plain table
	// hit; only a miss (a field: req.Method) reaches the method table's own
	// __index function. gopher-lua boxes the key for an __index function,
	// one allocation that method calls thus avoid.
	v.reqMethods = L.SetFuncs(L.NewTable(), requestExports)
	fields := L.NewTable()
	fields.RawSetString("__index", L.NewFunction(v.reqField))
	v.reqMethods.Metatable = fields
	mt := L.NewTypeMetatable("keystone.Request")
	mt.RawSetString("__index", v.reqMethods)
	mt.RawSetString("__metatable", lua.LString("keystone.Request"))
	v.req = L.NewUserData()
	v.req.Value = v
	v.req.Metatable = mt

	hmt := L.NewTypeMetatable("keystone.Header")
	hmt.RawSetString("__index", L.SetFuncs(L.NewTable(), headerExports))
	hmt.RawSetString("__metatable", lua.LString("keystone.Header"))
	v.reqHeader = L.NewUserData()
	v.reqHeader.Value = &headerObj{v: v}
	v.reqHeader.Metatable = hmt
	v.respHeader = L.NewUserData()
	v.respHeader.Value = &headerObj{v: v, response: true}
	v.respHeader.Metatable = hmt
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

// reqField serves req.Method, req.Host, req.Path, req.RawQuery,
// req.RemoteAddr and req.Context. Argument 1 is the method table.
func (v *vm) reqField(L *lua.LState) int {
	key := L.CheckString(2)
	var val lua.LValue
	switch key {
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
	case "TLS":
		val = v.reqTLS(L)
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

func reqHeader(L *lua.LState) int {
	v := checkRequest(L, 1)
	v.requestCtx(L)
	L.Push(v.reqHeader)
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

func reqSetRawQuery(L *lua.LState) int {
	v := checkRequest(L, 1)
	q := L.CheckString(2)
	if !httpguts.ValidHeaderFieldValue(q) {
		L.ArgError(2, "query must contain no control characters")
	}
	v.requestCtx(L).URI().SetQueryString(q)
	return 0
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
func checkHeaderKV(L *lua.LState, withValue bool) (string, string) {
	name := L.CheckString(2)
	if !httpguts.ValidHeaderFieldName(name) {
		L.ArgError(2, "invalid header name "+quote(name))
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
	name, _ := checkHeaderKV(L, false)
	if h.response {
		L.Push(lua.LString(ctx.Response.Header.Peek(name)))
	} else {
		L.Push(lua.LString(ctx.Request.Header.Peek(name)))
	}
	return 1
}

func headerSet(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, value := checkHeaderKV(L, true)
	if h.response {
		ctx.Response.Header.Set(name, value)
	} else {
		ctx.Request.Header.Set(name, value)
	}
	return 0
}

func headerAdd(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, value := checkHeaderKV(L, true)
	if h.response {
		ctx.Response.Header.Add(name, value)
	} else {
		ctx.Request.Header.Add(name, value)
	}
	return 0
}

func headerDel(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, _ := checkHeaderKV(L, false)
	if h.response {
		ctx.Response.Header.Del(name)
	} else {
		ctx.Request.Header.Del(name)
	}
	return 0
}

func headerValues(L *lua.LState) int {
	h, ctx := checkHeader(L)
	name, _ := checkHeaderKV(L, false)
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
