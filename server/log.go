package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

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
	tenantName, upstreamURL := "", ""
	switch {
	case rs.tenant != nil:
		tenantName = rs.tenant.cfg.Name
	case rs.admin:
		tenantName = "(admin)"
	}
	if rs.upstream != nil {
		upstreamURL = rs.upstream.URL
	}
	consumer, method := "", ""
	if rs.ident != nil {
		consumer, method = rs.ident.Consumer, rs.ident.Method
	}
	attrs := [...]slog.Attr{
		slog.String("component", "access"),
		slog.String("request_id", string(rs.reqID)),
		slog.String("client_ip", rs.clientIP.String()),
		slog.String("method", string(ctx.Method())),
		slog.String("host", string(ctx.Host())),
		slog.String("path", string(ctx.Path())),
		slog.Int("status", resp.StatusCode()),
		slog.Int64("bytes", size),
		slog.Float64("duration_ms", float64(time.Since(rs.start).Microseconds())/1000),
		slog.String("tenant", tenantName),
		slog.String("upstream", upstreamURL),
		slog.Int("attempts", rs.attempts),
		slog.String("error", rs.errKind),
		slog.String("consumer", consumer),
		slog.String("auth_method", method),
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs[:]...)
}
