package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/keystone-gateway/keystone/auth"
	"github.com/keystone-gateway/keystone/config"
	"github.com/valyala/fasthttp"
)

// NewLogger builds the gateway's logger from the logging block: JSON or text
// lines on w at the configured level.
func NewLogger(c config.Logging, w io.Writer) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// fasthttpLogger routes fasthttp's own messages (accept errors and the like)
// into the structured log.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// accessLog writes the request's access line. Every value is copied out of
// ctx here: fasthttp reuses its buffers once the handler returns.
func (s *Server) accessLog(ctx *fasthttp.RequestCtx, rs *reqState) {
	resp := &ctx.Response
	var size int64
	if resp.IsBodyStream() {
		size = int64(resp.Header.ContentLength())
	} else {
		size = int64(len(resp.Body()))
	}
	upstreamURL, upstreamPath := "", []byte(nil)
	if rs.upstream != nil {
		upstreamURL = rs.upstream.URL
		// The path as written on the wire to the last upstream tried:
		// after strip_prefix, a script's SetPath and the base path.
		upstreamPath = ctx.Request.URI().RequestURI()
		if i := bytes.IndexByte(upstreamPath, '?'); i >= 0 {
			upstreamPath = upstreamPath[:i]
		}
	}
	s.writeAccess(rs, rs.ident, resp.StatusCode(), size, upstreamURL, upstreamPath, rs.attempts, rs.errKind, rs.timingAttrs()...)
}

// errShutdown is the error kind of a request cut off at the end of the
// shutdown grace period.
const errShutdown = "shutdown"

// cutOffLog writes the access line of a request still in flight when the
// shutdown grace period ended: status 0 (no answer was sent, and none will
// be: the process exits), error "shutdown". It reads only what the request
// set before it was tracked (inflight's doc): which upstream it was trying
// and who it authenticated as are not known.
func (s *Server) cutOffLog(rs *reqState) {
	s.writeAccess(rs, nil, 0, 0, "", nil, 0, errShutdown)
}

// writeAccess writes one access line. The request's own bytes (what the
// client sent, the upstream path, the request id) become one string, which
// the attributes share: one allocation rather than one per field.
func (s *Server) writeAccess(rs *reqState, id *auth.Identity, status int, size int64, upstreamURL string, upstreamPath []byte, attempts int, errKind string, extra ...slog.Attr) {
	tenantName := ""
	switch {
	case rs.tenant != nil:
		tenantName = rs.tenant.cfg.Name
	case rs.admin:
		tenantName = "(admin)"
	}
	// Appended past rs.sent's length, into its spare capacity: only the
	// one writer of the line (rs.logged) gets here.
	b := append(rs.sent, upstreamPath...)
	b = append(b, rs.reqID...)
	all := string(b)
	sent := len(rs.sent)
	upEnd := sent + len(upstreamPath)
	consumer, method := "", ""
	if id != nil {
		consumer, method = id.Consumer, id.Method
	}
	attrs := [...]slog.Attr{
		slog.String("component", "access"),
		slog.String("request_id", all[upEnd:]),
		slog.String("client_ip", rs.clientIP.String()),
		slog.String("method", all[:rs.sentMethod]),
		slog.String("host", all[rs.sentMethod:rs.sentHost]),
		slog.String("path", all[rs.sentHost:rs.sentPath]),
		slog.String("query", all[rs.sentPath:sent]),
		slog.Int("status", status),
		slog.Int64("bytes", size),
		slog.Float64("duration_ms", float64(time.Since(rs.start).Microseconds())/1000),
		slog.String("tenant", tenantName),
		slog.String("upstream", upstreamURL),
		slog.String("upstream_path", all[sent:upEnd]),
		slog.Int("attempts", attempts),
		slog.String("error", errKind),
		slog.String("consumer", consumer),
		slog.String("auth_method", method),
	}
	s.access.LogAttrs(context.Background(), slog.LevelInfo, "request", append(append(attrs[:], rs.traceAttrs()...), extra...)...)
}
