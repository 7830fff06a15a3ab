package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keystone-gateway/keystone/config"
)

// SpanRecord is one sampled request as the request path hands it to an
// Exporter: the gateway's spans and what they describe. Strings must be
// immutable (config values), so recording copies no bytes.
type SpanRecord struct {
	// Trace holds the trace id, the caller's span id (ParentID) and the
	// span id sent upstream (SpanID).
	Trace Trace
	// Start is when the request arrived; Duration how long it took.
	Start    time.Time
	Duration time.Duration
	// UpstreamStart and UpstreamEnd bound the upstream attempts, as
	// offsets from Start; Attempts counts them (0: no upstream span).
	UpstreamStart, UpstreamEnd time.Duration
	Attempts                   int
	// Method is the request method's label (GET ... OTHER); Status the
	// answer's status code.
	Method string
	Status int
	// Tenant, Route and Upstream (the last upstream tried) label the spans.
	Tenant, Route, Upstream string
}

// MethodLabel returns the bounded label of a request method (GET, HEAD,
// POST, PUT, PATCH, DELETE, OPTIONS or OTHER) without allocating.
func MethodLabel(m []byte) string { return methodNames[methodIndex(m)] }

// ExporterConfig configures an Exporter.
type ExporterConfig struct {
	// Endpoint is the collector's OTLP/HTTP traces URL
	// ("http://collector:4318/v1/traces"). Required.
	Endpoint string
	// Interval is how often buffered spans are sent. If zero,
	// tracing.export_interval's default (config.DefaultTracing).
	Interval time.Duration
	// Timeout bounds one export request. If zero, 5s.
	Timeout time.Duration
	// Buffer is how many requests' spans wait between exports; more are
	// dropped (and counted). If zero, 4096. Rounded up to a power of two.
	Buffer int
	// Logger receives failed exports. If nil, they are not logged.
	Logger *slog.Logger
}

// Exporter sends sampled requests' spans to an OTLP/HTTP collector in the
// protobuf-JSON encoding. Record is called by the request path: lock-free
// and allocation-free, it copies the record into a bounded ring (Dmitry
// Vyukov's bounded MPMC queue, one consumer) and drops it when the ring is
// full. One goroutine, started by Start and ended by Stop, drains the ring
// every Interval and posts a batch. An Exporter must not be copied.
type Exporter struct {
	cfg    ExporterConfig
	client *http.Client
	cells  []spanCell
	mask   uint64

	// tail is the next slot to write: advanced (CAS) by Record, read by
	// Record. head is the next slot to read, owned by the export
	// goroutine. Invariant: head <= tail.
	tail atomic.Uint64
	_    pad
	head uint64

	// dropped counts records lost to a full ring; sent the spans
	// delivered; failed the export requests that failed.
	dropped, sent, failed atomic.Uint64

	startOnce, stopOnce sync.Once
	stop, done          chan struct{}
}

type spanCell struct {
	// seq is the cell's turn: pos when free for the writer of slot pos,
	// pos+1 once written, pos+len(cells) once read.
	seq atomic.Uint64
	rec SpanRecord
}

// NewExporter returns a stopped Exporter.
func NewExporter(cfg ExporterConfig) *Exporter {
	if cfg.Interval <= 0 {
		cfg.Interval = config.DefaultTracing().ExportInterval.D()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	n := 1
	for n < cfg.Buffer || (cfg.Buffer <= 0 && n < 4096) {
		n <<= 1
	}
	e := &Exporter{
		cfg:    cfg,
		client: &http.Client{Timeout: cfg.Timeout},
		cells:  make([]spanCell, n),
		mask:   uint64(n - 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range e.cells {
		e.cells[i].seq.Store(uint64(i))
	}
	return e
}

// Record queues r for export and reports false when the buffer was full
// and r was dropped.
func (e *Exporter) Record(r *SpanRecord) bool {
	pos := e.tail.Load()
	for {
		c := &e.cells[pos&e.mask]
		seq := c.seq.Load()
		switch {
		case seq == pos:
			if e.tail.CompareAndSwap(pos, pos+1) {
				c.rec = *r
				c.seq.Store(pos + 1)
				return true
			}
			pos = e.tail.Load()
		case seq < pos:
			// The slot still holds a record a full lap behind.
			e.dropped.Add(1)
			return false
		default:
			pos = e.tail.Load()
		}
	}
}

// Stats returns the spans sent, records dropped and exports failed so far.
func (e *Exporter) Stats() (sent, dropped, failed uint64) {
	return e.sent.Load(), e.dropped.Load(), e.failed.Load()
}

// Start starts the export goroutine.
func (e *Exporter) Start() {
	e.startOnce.Do(func() { go e.run() })
}

// Stop sends what is buffered, waiting for it at most until ctx is done,
// and ends the export goroutine. An Exporter that was never started is not
// started by it (nor later).
func (e *Exporter) Stop(ctx context.Context) {
	never := false
	e.startOnce.Do(func() { never = true; close(e.done) })
	e.stopOnce.Do(func() { close(e.stop) })
	if !never {
		select {
		case <-e.done:
		case <-ctx.Done():
		}
	}
	e.client.CloseIdleConnections()
}

func (e *Exporter) run() {
	defer close(e.done)
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			e.flush()
		case <-e.stop:
			e.flush()
			return
		}
	}
}

// flush drains the ring and posts it, in batches of at most 512 requests.
func (e *Exporter) flush() {
	defer func() {
		if r := recover(); r != nil && e.cfg.Logger != nil {
			e.cfg.Logger.Error("span export panicked", "component", "tracing", "panic", fmt.Sprint(r))
		}
	}()
	batch := make([]SpanRecord, 0, 64)
	for {
		batch = batch[:0]
		for len(batch) < 512 {
			c := &e.cells[e.head&e.mask]
			if c.seq.Load() != e.head+1 {
				break
			}
			batch = append(batch, c.rec)
			c.rec = SpanRecord{}
			c.seq.Store(e.head + e.mask + 1)
			e.head++
		}
		if len(batch) == 0 {
			return
		}
		e.post(batch)
	}
}

func (e *Exporter) post(batch []SpanRecord) {
	body, err := json.Marshal(otlpRequest(batch))
	if err == nil {
		var resp *http.Response
		resp, err = e.client.Post(e.cfg.Endpoint, "application/json", bytes.NewReader(body))
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				err = fmt.Errorf("collector answered %s", resp.Status)
			}
		}
	}
	if err != nil {
		e.failed.Add(1)
		if e.cfg.Logger != nil {
			e.cfg.Logger.Warn("span export failed", "component", "tracing",
				"endpoint", e.cfg.Endpoint, "requests", len(batch), "error", err.Error())
		}
		return
	}
	n := 0
	for i := range batch {
		n++
		if batch[i].Attempts > 0 {
			n++
		}
	}
	e.sent.Add(uint64(n))
}

// OTLP protobuf-JSON shapes (opentelemetry-proto, trace/v1): ids are hex,
// 64-bit integers are strings, enums are numbers.
type (
	otlpExport struct {
		ResourceSpans []otlpResourceSpans `json:"resourceSpans"`
	}
	otlpResourceSpans struct {
		Resource   otlpResource     `json:"resource"`
		ScopeSpans []otlpScopeSpans `json:"scopeSpans"`
	}
	otlpResource struct {
		Attributes []otlpKV `json:"attributes"`
	}
	otlpScopeSpans struct {
		Scope otlpScope  `json:"scope"`
		Spans []otlpSpan `json:"spans"`
	}
	otlpScope struct {
		Name string `json:"name"`
	}
	otlpSpan struct {
		TraceID           string     `json:"traceId"`
		SpanID            string     `json:"spanId"`
		ParentSpanID      string     `json:"parentSpanId,omitempty"`
		Name              string     `json:"name"`
		Kind              int        `json:"kind"`
		StartTimeUnixNano string     `json:"startTimeUnixNano"`
		EndTimeUnixNano   string     `json:"endTimeUnixNano"`
		Attributes        []otlpKV   `json:"attributes"`
		Status            otlpStatus `json:"status"`
	}
	otlpKV struct {
		Key   string    `json:"key"`
		Value otlpValue `json:"value"`
	}
	otlpValue struct {
		StringValue *string `json:"stringValue,omitempty"`
		IntValue    *string `json:"intValue,omitempty"`
	}
	otlpStatus struct {
		Code int `json:"code"`
	}
)

// Span kinds and status codes of the OTLP trace model.
const (
	spanKindServer = 2
	spanKindClient = 3
	statusUnset    = 0
	statusError    = 2
)

func str(k, v string) otlpKV { return otlpKV{Key: k, Value: otlpValue{StringValue: &v}} }
func num(k string, v int) otlpKV {
	s := strconv.Itoa(v)
	return otlpKV{Key: k, Value: otlpValue{IntValue: &s}}
}

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

// otlpRequest turns records into one export request. Each request is a
// SERVER span named "METHOD route"; one that reached an upstream also has
// a CLIENT span under it for the upstream attempts. The CLIENT span's id is
// the one the upstream was sent as its parent (and the access log's
// span_id), so the upstream's own spans hang under it; without an upstream
// the SERVER span carries that id.
func otlpRequest(batch []SpanRecord) otlpExport {
	spans := make([]otlpSpan, 0, 2*len(batch))
	for i := range batch {
		r := &batch[i]
		status := statusUnset
		if r.Status >= 500 {
			status = statusError // a 4xx is the client's, not the server span's (OTel HTTP conventions)
		}
		server := otlpSpan{
			TraceID:           string(r.Trace.TraceID[:]),
			SpanID:            string(r.Trace.SpanID[:]),
			Name:              r.Method + " " + r.Route,
			Kind:              spanKindServer,
			StartTimeUnixNano: nanos(r.Start),
			EndTimeUnixNano:   nanos(r.Start.Add(r.Duration)),
			Attributes: []otlpKV{
				str("keystone.tenant", r.Tenant),
				str("http.route", r.Route),
				str("http.request.method", r.Method),
				num("http.response.status_code", r.Status),
			},
			Status: otlpStatus{Code: status},
		}
		if r.Trace.ParentID != ([16]byte{}) {
			server.ParentSpanID = string(r.Trace.ParentID[:])
		}
		if r.Attempts > 0 {
			var id [16]byte
			putHex(id[:], randomNonZero())
			server.SpanID = string(id[:])
			client := otlpSpan{
				TraceID:           server.TraceID,
				SpanID:            string(r.Trace.SpanID[:]),
				ParentSpanID:      server.SpanID,
				Name:              r.Method,
				Kind:              spanKindClient,
				StartTimeUnixNano: nanos(r.Start.Add(r.UpstreamStart)),
				EndTimeUnixNano:   nanos(r.Start.Add(r.UpstreamEnd)),
				Attributes: []otlpKV{
					str("keystone.tenant", r.Tenant),
					str("url.full", r.Upstream),
					str("http.request.method", r.Method),
					num("keystone.attempts", r.Attempts),
				},
				Status: otlpStatus{Code: status},
			}
			spans = append(spans, server, client)
			continue
		}
		spans = append(spans, server)
	}
	return otlpExport{ResourceSpans: []otlpResourceSpans{{
		Resource:   otlpResource{Attributes: []otlpKV{str("service.name", "keystone")}},
		ScopeSpans: []otlpScopeSpans{{Scope: otlpScope{Name: "github.com/keystone-gateway/keystone"}, Spans: spans}},
	}}}
}
