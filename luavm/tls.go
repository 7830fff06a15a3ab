package luavm

import (
	"github.com/valyala/fasthttp"
	lua "github.com/yuin/gopher-lua"
)

// TLSInfo is what req.TLS shows of the TLS connection a request came on.
type TLSInfo struct {
	// Version is "1.2" or "1.3".
	Version string
	// ServerName is the SNI name the client sent; empty if none.
	ServerName string
	// Client is the client certificate, verified against
	// server.tls.client_ca_file; nil when the client sent none.
	Client *ClientCert
}

// ClientCert describes a verified client certificate.
type ClientCert struct {
	// Subject is the subject's distinguished name ("CN=alice,O=Example").
	Subject string
	// SANs are its DNS names, email addresses, IP addresses and URIs.
	SANs []string
	// Fingerprint is the SHA-256 of the DER certificate, lowercase hex.
	Fingerprint string
}

// TLSHost is implemented by a Host whose requests may arrive over TLS;
// req.TLS asks it. A Host without it makes req.TLS nil.
type TLSHost interface {
	// TLS describes ctx's TLS connection; ok is false for plain HTTP.
	TLS(ctx *fasthttp.RequestCtx) (info TLSInfo, ok bool)
}

// reqTLS builds req.TLS: nil over plain HTTP, else
// {Version, ServerName, Client = nil | {Subject, SANs, Fingerprint}}.
func (v *vm) reqTLS(L *lua.LState) lua.LValue {
	th, ok := v.s.host.(TLSHost)
	if !ok {
		return lua.LNil
	}
	info, ok := th.TLS(v.requestCtx(L))
	if !ok {
		return lua.LNil
	}
	t := L.CreateTable(0, 3)
	t.RawSetString("Version", lua.LString(info.Version))
	t.RawSetString("ServerName", lua.LString(info.ServerName))
	if c := info.Client; c != nil {
		ct := L.CreateTable(0, 3)
		ct.RawSetString("Subject", lua.LString(c.Subject))
		sans := L.CreateTable(len(c.SANs), 0)
		for _, s := range c.SANs {
			sans.Append(lua.LString(s))
		}
		ct.RawSetString("SANs", sans)
		ct.RawSetString("Fingerprint", lua.LString(c.Fingerprint))
		t.RawSetString("Client", ct)
	}
	return t
}
