package server

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// otlpSpan is a span as an OTLP/HTTP JSON receiver decodes it.
type otlpSpan struct {
	TraceID      string `json:"traceId"`
	SpanID       string `json:"spanId"`
	ParentSpanID string `json:"parentSpanId"`
	Name         string `json:"name"`
	Kind         int    `json:"kind"`
	Start        string `json:"startTimeUnixNano"`
	End          string `json:"endTimeUnixNano"`
	Attributes   []struct {
		Key   string `json:"key"`
		Value struct {
			StringValue *string `json:"stringValue"`
			IntValue    *string `json:"intValue"`
		} `json:"value"`
	} `json:"attributes"`
	Status struct {
		Code int `json:"code"`
	} `json:"status"`
}

func (s otlpSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			switch {
			case a.Value.StringValue != nil:
				return *a.Value.StringValue
			case a.Value.IntValue != nil:
				return *a.Value.IntValue
			}
		}
	}
	return ""
}

// collector is a real OTLP/HTTP receiver on loopback: it accepts POST
// /v1/traces with a JSON ExportTraceServiceRequest and keeps the spans.
type collector struct {
	url      string
	mu       sync.Mutex
	spans    []otlpSpan
	services []string
	bad      []string
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{url: "http://" + ln.Addr().String() + "/v1/traces"}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			ResourceSpans []struct {
				Resource struct {
					Attributes []struct {
						Key   string `json:"key"`
						Value struct {
							StringValue string `json:"stringValue"`
						} `json:"value"`
					} `json:"attributes"`
				} `json:"resource"`
				ScopeSpans []struct {
					Spans []otlpSpan `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/json" {
			c.bad = append(c.bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := json.Unmarshal(body, &req); err != nil {
			c.bad = append(c.bad, "bad JSON: "+err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					c.services = append(c.services, a.Value.StringValue)
				}
			}
			for _, ss := range rs.ScopeSpans {
				c.spans = append(c.spans, ss.Spans...)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
	})}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	return c
}

func (c *collector) trace(id string) []otlpSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []otlpSpan
	for _, s := range c.spans {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	return out
}

// TestSampledSpansAreExportedOverOTLP sends requests through a gateway
// exporting to a real OTLP/HTTP JSON receiver and checks the spans it
// receives: a SERVER span per request under the caller's span, a CLIENT
// span for the upstream whose id is the parent the upstream was sent, the
// attributes, and nothing for an unsampled trace.
func TestSampledSpansAreExportedOverOTLP(t *testing.T) {
	t.Parallel()
	col := startCollector(t)
	up := startEcho(t, "up")
	g := startGateway(t, luaBlock+yamlf(`
tracing: {otlp_endpoint: %q, export_interval: 20ms}
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}]
  - name: lua
    path_prefix: /lua
    script: app.lua
`, col.url, up.url()), "scripts/app.lua", obsScript)

	const sampled = "4bf92f3577b34da6a3ce929d0e0e4736"
	const unsampled = "5bf92f3577b34da6a3ce929d0e0e4737"
	before := time.Now()
	resp := g.get("/api/x", "traceparent", "00-"+sampled+"-00f067aa0ba902b7-01")
	sentParent := decodeEcho(t, resp).Headers["Traceparent"][0][36:52]
	g.get("/api/x", "traceparent", "00-"+unsampled+"-00f067aa0ba902b7-00")
	lua := g.get("/lua/boom") // a new trace, sampled: tracing.sample_ratio is 1
	luaLine := findAccess(t, g, string(lua.Header.Peek("X-Request-ID")))
	luaTrace, _ := luaLine["trace_id"].(string)

	eventually(t, 5*time.Second, "the spans at the collector", func() bool {
		return len(col.trace(sampled)) == 2 && len(col.trace(luaTrace)) == 1
	})
	spans := col.trace(sampled)
	server, client := spans[0], spans[1]
	if server.Kind != 2 || client.Kind != 3 {
		server, client = client, server
	}
	if server.Kind != 2 || client.Kind != 3 {
		t.Fatalf("want a SERVER (2) and a CLIENT (3) span, got kinds %d and %d", server.Kind, client.Kind)
	}
	if server.ParentSpanID != "00f067aa0ba902b7" {
		t.Errorf("server span's parent %q, want the caller's span", server.ParentSpanID)
	}
	if client.ParentSpanID != server.SpanID || client.SpanID != sentParent {
		t.Errorf("client span %s (parent %s): want the id sent upstream %s under the server span %s",
			client.SpanID, client.ParentSpanID, sentParent, server.SpanID)
	}
	if server.Name != "GET /api" || server.attr("keystone.tenant") != "api" || server.attr("http.route") != "/api" ||
		server.attr("http.response.status_code") != "200" || server.attr("http.request.method") != "GET" {
		t.Errorf("server span %+v", server)
	}
	if client.attr("url.full") != up.url() || client.attr("keystone.attempts") != "1" {
		t.Errorf("client span %+v", client)
	}
	start, _ := time.Parse(time.RFC3339, "2000-01-01T00:00:00Z")
	for _, s := range spans {
		var b, e int64
		if err := json.Unmarshal([]byte(s.Start), &b); err != nil || json.Unmarshal([]byte(s.End), &e) != nil ||
			b < before.Add(-time.Second).UnixNano() || e < b || b < start.UnixNano() {
			t.Errorf("span %s times %s..%s, want a request's start and end", s.Name, s.Start, s.End)
		}
	}
	if cs := client.Start; cs < server.Start || client.End > server.End {
		t.Errorf("client span %s..%s not inside the server span %s..%s", cs, client.End, server.Start, server.End)
	}

	// The scripted request: one SERVER span, an error, with the span id
	// the access log shows.
	ls := col.trace(luaTrace)[0]
	if ls.Kind != 2 || ls.ParentSpanID != "" || ls.SpanID != luaLine["span_id"] || ls.Status.Code != 2 ||
		ls.attr("http.response.status_code") != "500" {
		t.Errorf("script span %+v, access line %v", ls, luaLine)
	}

	// Give the exporter more rounds: the unsampled trace never shows up.
	time.Sleep(100 * time.Millisecond)
	m := scrape(t, g)
	if m["keystone_trace_spans_exported_total"] < 3 || m["keystone_trace_records_dropped_total"] != 0 ||
		m["keystone_trace_exports_failed_total"] != 0 {
		t.Errorf("export counters: exported %v, dropped %v, failed %v", m["keystone_trace_spans_exported_total"],
			m["keystone_trace_records_dropped_total"], m["keystone_trace_exports_failed_total"])
	}
	if n := len(col.trace(unsampled)); n != 0 {
		t.Errorf("an unsampled trace was exported (%d spans)", n)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.bad) > 0 {
		t.Errorf("the collector refused exports: %v", col.bad)
	}
	if len(col.services) == 0 || col.services[0] != "keystone" {
		t.Errorf("service.name = %v", col.services)
	}
}
