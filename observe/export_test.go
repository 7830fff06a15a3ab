package observe

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// receiver is an OTLP/HTTP JSON endpoint on loopback counting the spans it
// is sent.
func receiver(t *testing.T, status int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req otlpExport
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &req); err != nil {
			t.Errorf("bad export body: %v", err)
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				n.Add(int64(len(ss.Spans)))
			}
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func record(i int) *SpanRecord {
	r := &SpanRecord{Start: time.Now(), Duration: time.Millisecond, Method: "GET", Status: 200, Tenant: "t", Route: "/"}
	r.Trace.Start(1)
	if i%2 == 1 {
		r.Attempts, r.Upstream, r.UpstreamEnd = 1, "http://u", time.Millisecond
	}
	return r
}

func TestExporterDeliversEveryRecordFromManyWriters(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, http.StatusOK)
	e := NewExporter(ExporterConfig{Endpoint: srv.URL, Interval: 5 * time.Millisecond, Buffer: 8192})
	e.Start()
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := range each {
				if !e.Record(record(i)) {
					t.Error("dropped with room in the buffer")
					return
				}
			}
		})
	}
	wg.Wait()
	e.Stop(context.Background())
	// Half the records reached an upstream: two spans each.
	want := int64(writers * each * 3 / 2)
	if got.Load() != want {
		t.Errorf("collector got %d spans, want %d", got.Load(), want)
	}
	if sent, dropped, failed := e.Stats(); sent != uint64(want) || dropped != 0 || failed != 0 {
		t.Errorf("stats sent %d dropped %d failed %d", sent, dropped, failed)
	}
}

func TestExporterDropsWhenFullAndSendsTheRestOnStop(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, http.StatusOK)
	e := NewExporter(ExporterConfig{Endpoint: srv.URL, Interval: time.Hour, Buffer: 4})
	kept := 0
	for i := range 10 {
		if e.Record(record(0)) {
			kept++
		} else if i < 4 {
			t.Fatalf("record %d dropped with room left", i)
		}
	}
	if _, dropped, _ := e.Stats(); kept != 4 || dropped != 6 {
		t.Fatalf("kept %d, dropped %d; want 4 and 6", kept, dropped)
	}
	e.Start()
	e.Stop(context.Background()) // flushes although the interval never came
	if got.Load() != 4 {
		t.Errorf("collector got %d spans, want 4", got.Load())
	}
	// The ring is usable again after a lap.
	if !e.Record(record(0)) {
		t.Error("ring still full after the flush")
	}
}

func TestExporterCountsRefusedExports(t *testing.T) {
	t.Parallel()
	srv, _ := receiver(t, http.StatusServiceUnavailable)
	e := NewExporter(ExporterConfig{Endpoint: srv.URL, Interval: time.Hour})
	e.Record(record(0))
	e.Start()
	e.Stop(context.Background())
	if sent, _, failed := e.Stats(); sent != 0 || failed != 1 {
		t.Errorf("sent %d failed %d, want 0 and 1", sent, failed)
	}
}

func TestStopWithoutStartReturns(t *testing.T) {
	t.Parallel()
	e := NewExporter(ExporterConfig{Endpoint: "http://127.0.0.1:1/v1/traces"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Stop(ctx)
	if ctx.Err() != nil {
		t.Error("Stop of a never-started exporter waited for its deadline")
	}
}
