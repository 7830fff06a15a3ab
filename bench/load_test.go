package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestCOStart(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	tests := []struct {
		name                   string
		idleSince, sent        time.Time
		want                   time.Time
		intendedIsChargedStart bool
	}{
		{"a connection idle before the intended time charges from the send (generator lag is not the target's)", t0.Add(-5 * ms), t0.Add(80 * time.Microsecond), t0.Add(80 * time.Microsecond), false},
		{"a connection idle exactly at the intended time charges from the send", t0, t0.Add(ms), t0.Add(ms), false},
		{"every connection busy past the intended time charges from the intended time", t0.Add(30 * ms), t0.Add(30 * ms), t0, true},
	}
	for _, tc := range tests {
		if got := coStart(t0, tc.idleSince, tc.sent); !got.Equal(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got.Sub(t0), tc.want.Sub(t0))
		}
	}
}

// TestOpenLoopCorrectsCoordinatedOmission is the textbook case: one
// connection, 1,000 req/s, and the target stalls for 200ms on one request.
// An uncorrected generator records one slow request; a corrected one also
// records the ~200 requests that were due during the stall, with latencies
// falling from 200ms to 0 — so the corrected p90 is ~150ms while the
// service-time p90 stays near zero.
func TestOpenLoopCorrectsCoordinatedOmission(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	o := &openLoop{
		rate: 1000, workers: 1, warmup: 0, duration: 500 * time.Millisecond, drain: 2 * time.Second,
		do: func(w int, k int64) (string, string) {
			calls.Add(1)
			if k == 50 {
				time.Sleep(200 * time.Millisecond)
			}
			return "", ""
		},
		emit: func(loadEvent) {},
	}
	rec := newRecorder()
	res := o.run(context.Background(), rec)
	if res.Errors != 0 || res.Dropped != 0 {
		t.Fatalf("errors %d dropped %d", res.Errors, res.Dropped)
	}
	if res.Requests != 500 {
		t.Errorf("requests = %d, want 500 (the rate times the duration)", res.Requests)
	}
	lat, _ := decodeHist(res.Latency)
	svc, _ := decodeHist(res.Service)
	if p := time.Duration(lat.ValueAtQuantile(90)); p < 100*time.Millisecond {
		t.Errorf("corrected p90 = %v, want >= 100ms: the requests due during the stall were not charged", p)
	}
	if m := time.Duration(lat.Max()); m < 190*time.Millisecond {
		t.Errorf("corrected max = %v, want ~200ms", m)
	}
	if p := time.Duration(svc.ValueAtQuantile(90)); p > 50*time.Millisecond {
		t.Errorf("service p90 = %v, want near zero: only one request was slow to serve", p)
	}
}

// TestOpenLoopDropsWhatItCannotSend checks that sends still queued at the
// drain deadline count as dropped, so "0 drops" in a report means every
// intended request was sent.
func TestOpenLoopDropsWhatItCannotSend(t *testing.T) {
	t.Parallel()
	o := &openLoop{
		rate: 1000, workers: 1, duration: 200 * time.Millisecond, drain: 50 * time.Millisecond,
		do: func(int, int64) (string, string) {
			time.Sleep(5 * time.Millisecond) // serves 200/s of 1,000/s
			return "", ""
		},
		emit: func(loadEvent) {},
	}
	res := o.run(context.Background(), newRecorder())
	if res.Dropped < 100 {
		t.Errorf("dropped = %d, want most of the ~200 intended sends", res.Dropped)
	}
	if res.Requests+res.Dropped != 200 {
		t.Errorf("requests %d + dropped %d, want the 200 intended", res.Requests, res.Dropped)
	}
}

func TestPercentilesFromResult(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	// 1..1000µs once each: p50 = 500µs, p99 = 990µs, max = 1000µs.
	for i := 1; i <= 1000; i++ {
		rec.ok(time.Duration(i)*time.Microsecond, time.Duration(i)*time.Microsecond)
	}
	rec.fail("status_503", `{"error":"no free connections"}`)
	res := rec.result("closed", time.Second)
	var r RunResult
	if err := r.fill(res, &Scenario{}, LoadJob{Connections: 4}); err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want float64) {
		if got < want*0.999 || got > want*1.001+0.001 {
			t.Errorf("%s = %v, want %v ±0.1%%", name, got, want)
		}
	}
	near("p50", r.P50, 500)
	near("p90", r.P90, 900)
	near("p99", r.P99, 990)
	near("p99.9", r.P999, 999)
	near("max", r.Max, 1000)
	if r.Requests != 1001 || r.Errors != 1 || r.ErrorKinds["status_503"] != 1 || r.Throughput != 1000 {
		t.Errorf("counts: %+v", r)
	}
	if !strings.Contains(r.ErrorSamples["status_503"], "no free connections") {
		t.Errorf("error sample lost: %q", r.ErrorSamples)
	}
}

func TestRecordDurClamps(t *testing.T) {
	t.Parallel()
	h := newHist()
	recordDur(h, 0)
	recordDur(h, time.Hour)
	if h.TotalCount() != 2 || h.Min() != histMin || !h.ValuesAreEquivalent(h.Max(), histMax) {
		t.Errorf("count %d min %d max %d", h.TotalCount(), h.Min(), h.Max())
	}
}

func TestBuildRequests(t *testing.T) {
	t.Parallel()
	reqs, err := buildRequests(RequestSpec{Method: "POST", Path: "/api/echo", Hosts: []string{"a.test", "b.test"}, Body: 70000, Headers: []string{"Accept-Encoding: gzip"}}, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 2 {
		t.Fatalf("%d variants, want one per host", len(reqs))
	}
	for i, host := range []string{"a.test", "b.test"} {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(bytes.NewReader(reqs[i]))); err != nil {
			t.Fatal(err)
		}
		if string(req.Host()) != host || string(req.Header.Method()) != "POST" || len(req.Body()) != 70000 ||
			string(req.Header.Peek("Accept-Encoding")) != "gzip" || string(req.URI().Path()) != "/api/echo" {
			t.Errorf("variant %d: %s", i, req.Header.String())
		}
	}
}

// startUpstream serves the bench upstream in-process on loopback.
func startTestUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &upstreamHandler{}
	srv := &fasthttp.Server{Handler: h.ServeHTTP, MaxRequestBodySize: 1 << 20}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

func TestClientChecksResponses(t *testing.T) {
	t.Parallel()
	addr := startTestUpstream(t)
	tests := []struct {
		name     string
		spec     RequestSpec
		expect   Expect
		wantKind string
	}{
		{"a plain body of the right length passes", RequestSpec{Method: "GET", Path: "/api/bytes/100"}, Expect{Status: 200, BodyLen: 100}, ""},
		{"a gzip body is passed through compressed", RequestSpec{Method: "GET", Path: "/bytes/16384", Headers: []string{"Accept-Encoding: gzip"}}, Expect{Status: 200, BodyLen: -1, Encoding: "gzip"}, ""},
		{"a missing gzip encoding is caught", RequestSpec{Method: "GET", Path: "/bytes/16384"}, Expect{Status: 200, BodyLen: -1, Encoding: "gzip"}, "bad_encoding"},
		{"the echo answers the body size", RequestSpec{Method: "POST", Path: "/mw/echo", Body: 65536}, Expect{Status: 200, BodyLen: -1, Body: "65536"}, ""},
		{"a short body is caught", RequestSpec{Method: "GET", Path: "/bytes/99"}, Expect{Status: 200, BodyLen: 100}, "bad_body_len"},
		{"a wrong status is named by its code", RequestSpec{Method: "GET", Path: "/nowhere"}, Expect{Status: 200, BodyLen: -1}, "status_404"},
		{"the middleware's header echo is required", RequestSpec{Method: "GET", Path: "/bytes/1"}, Expect{Status: 200, BodyLen: 1, Headers: []string{"X-Bench-Seen"}}, "missing_header"},
		{"the middleware's header echo is found", RequestSpec{Method: "GET", Path: "/bytes/1", Headers: []string{"X-Bench: 1"}}, Expect{Status: 200, BodyLen: 1, Headers: []string{"X-Bench-Seen"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reqs, err := buildRequests(tc.spec, addr)
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(addr, 2*time.Second, &tc.expect, newRecorder())
			defer c.close()
			for i := 0; i < 3; i++ { // and the connection is reused
				if kind, sample := c.do(reqs[0]); kind != tc.wantKind {
					t.Fatalf("request %d: kind %q (%s), want %q", i, kind, sample, tc.wantKind)
				}
			}
		})
	}
}

func TestClientNamesTransportErrors(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(addr, time.Second, &Expect{Status: 200, BodyLen: -1}, newRecorder())
	if kind, _ := c.do([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); kind != "dial_refused" {
		t.Errorf("closed port: kind %q, want dial_refused", kind)
	}
	// A server that never answers: timeout.
	ln, _ = net.Listen("tcp4", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c = newClient(ln.Addr().String(), 100*time.Millisecond, &Expect{Status: 200, BodyLen: -1}, newRecorder())
	if kind, _ := c.do([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); kind != "timeout" {
		t.Errorf("silent server: kind %q, want timeout", kind)
	}
}

func TestLoadModesAgainstUpstream(t *testing.T) {
	t.Parallel()
	addr := startTestUpstream(t)
	spec, exp := requestFor(&Scenario{Route: "proxy", Method: "GET", ResponseSize: Size{N: 100}})
	spec.Path = "/bytes/100"
	reqs, err := buildRequests(spec, addr)
	if err != nil {
		t.Fatal(err)
	}
	base := LoadJob{Addr: addr, Request: spec, Expect: exp, Connections: 4, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, Timeout: 2 * time.Second, Hold: time.Second}
	var mu sync.Mutex
	var events []string
	emit := func(e loadEvent) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e.Event)
	}

	// Counts are not asserted where they depend on timing: a shared VM can
	// stall a process for longer than these windows.
	closed := base
	res := runClosed(context.Background(), &closed, reqs, emit)
	if res.Errors != 0 {
		t.Errorf("closed: %d requests, %d errors %v", res.Requests, res.Errors, res.ErrorKinds)
	}

	open := base
	open.Rate = 500
	res = runOpen(context.Background(), &open, reqs, emit)
	if res.Requests+res.Dropped != 150 || res.Errors != 0 {
		t.Errorf("open: %d requests + %d dropped, want the 150 intended in 300ms at 500/s; %d errors %v", res.Requests, res.Dropped, res.Errors, res.ErrorKinds)
	}

	idle := base
	idle.Connections = 50
	release := make(chan struct{})
	close(release)
	res = runIdle(context.Background(), &idle, reqs, emit, release)
	if res.Conns != 50 || res.Requests != 100 || res.Errors != 0 {
		t.Errorf("idle: %d conns, %d requests (want 50 and 100: one before and one after the hold), %d errors %v", res.Conns, res.Requests, res.Errors, res.ErrorKinds)
	}
	want := "measure_start measure_end measure_start measure_end measure_start idle_ready measure_end"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
}
