package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// The load generator runs in its own process (the harness re-executed with
// roleEnv=loadgen, pinned to the client CPUs), reads one LoadJob as a JSON
// line on stdin and writes loadEvent JSON lines on stdout: measure_start
// and measure_end bracket the measured window (the harness samples the
// target's /proc CPU ticks at both), idle_ready says an idle scenario's
// connections are all open, and result carries the histograms.
//
// It speaks HTTP/1.1 over raw keep-alive connections — one connection per
// worker, requests serialized once up front, responses parsed by
// fasthttp.Response — so that a worker is exactly one connection (the
// 1,000-connection and 10k-idle scenarios need that) and the generator
// spends as little CPU per request as possible on a core it shares with
// the upstream.

// LoadJob is what one load generator run does.
type LoadJob struct {
	// Addr is the target's loopback address.
	Addr string `json:"addr"`
	// Mode is open, closed or idle (see Scenario.Mode).
	Mode    string      `json:"mode"`
	Request RequestSpec `json:"request"`
	Expect  Expect      `json:"expect"`
	// Connections is the number of client connections (workers).
	Connections int `json:"connections"`
	// Rate is the open-loop rate in requests per second.
	Rate float64 `json:"rate"`
	// Warmup, Duration, Timeout and Hold are as in Scenario.
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
	Timeout  time.Duration `json:"timeout"`
	Hold     time.Duration `json:"hold"`
}

// RequestSpec describes the requests sent; every combination is serialized
// once before the run.
type RequestSpec struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	// Hosts, when not empty, are sent round-robin as the Host header
	// (the 1,000-tenant scenario); otherwise Host is the target address.
	Hosts []string `json:"hosts,omitempty"`
	// Body is the request body size in bytes.
	Body int `json:"body,omitempty"`
	// Headers are extra request headers, "Name: value".
	Headers []string `json:"headers,omitempty"`
}

// Expect is what a correct response looks like; anything else counts as an
// error of a named kind.
type Expect struct {
	// Status is the expected status code.
	Status int `json:"status"`
	// BodyLen, when >= 0, is the exact expected body length.
	BodyLen int `json:"body_len"`
	// Body, when not empty, is the exact expected body.
	Body string `json:"body,omitempty"`
	// Encoding, when not empty, is the expected Content-Encoding.
	Encoding string `json:"encoding,omitempty"`
	// Headers must all be present in the response.
	Headers []string `json:"headers,omitempty"`
}

// LoadResult is what one run measured. Counts cover the measured window
// only (warmup excluded).
type LoadResult struct {
	Mode string `json:"mode"`
	// Requests is the number of measured requests that completed, well or
	// not (Errors of them not well).
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// Dropped counts open-loop sends that were due in the window but never
	// sent before the drain deadline: the target fell that far behind.
	Dropped int64 `json:"dropped"`
	// ErrorKinds counts errors by kind: dial, timeout, eof, reset,
	// status_503, bad_body_len, ...; ErrorSamples holds the start of the
	// first response body (or error text) seen for each kind.
	ErrorKinds   map[string]int64  `json:"error_kinds,omitempty"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// Elapsed is the measured window; Throughput is successful requests
	// per second over it.
	Elapsed    time.Duration `json:"elapsed"`
	Throughput float64       `json:"throughput"`
	// Latency is the encoded HDR histogram (nanoseconds) of successful
	// requests: for open loop corrected for coordinated omission (see
	// coStart), for closed loop from the send.
	Latency []byte `json:"latency"`
	// Service is the histogram from the actual send to the answer, with no
	// correction: the gap to Latency is queueing the target caused.
	Service []byte `json:"service"`
	// GenLag is the open-loop histogram of how late the generator sent a
	// request when a connection was idle and waiting: the generator's own
	// timer wake-up error, which is not charged to the target.
	GenLag []byte `json:"gen_lag,omitempty"`
	// Conns is the number of connections that were open at once (idle).
	Conns int `json:"conns,omitempty"`
	// ServerCloses counts responses that closed their connection
	// ("Connection: close"); the next request redials.
	ServerCloses int64 `json:"server_closes,omitempty"`
}

// loadEvent is one line the load generator writes on stdout.
type loadEvent struct {
	Event  string      `json:"event"` // measure_start, measure_end, idle_ready, result, error
	Conns  int         `json:"conns,omitempty"`
	Result *LoadResult `json:"result,omitempty"`
	Error  string      `json:"error,omitempty"`
}

// Histogram range: 1ns to 2 minutes in nanoseconds, 3 significant digits:
// 0.1% resolution at every magnitude. (A lowest value of 1µs would set the
// unit to 512ns, 0.5% at 100µs.)
const (
	histMin    = int64(1)
	histMax    = int64(2 * time.Minute)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// recordDur records d, clamped into the histogram's range.
func recordDur(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d)
	if v < histMin {
		v = histMin
	}
	if v > histMax {
		v = histMax
	}
	h.RecordValue(v)
}

// coStart is the coordinated-omission correction: the instant a request's
// latency is measured from.
//
// An open-loop generator means to send request k at intended time t_k. If
// every connection was still busy with earlier requests at t_k, the target
// delayed the send, and a client of a real open system would have waited
// from t_k: latency is charged from the intended time. If a connection was
// idle at t_k (idleSince <= intended), the send was late only because the
// generator's timer woke late — about 60-100µs on a VM, far above the
// latency being measured — so latency is charged from the actual send and
// the lateness is reported separately as generator lag. Charging it to the
// target, as a plain "from intended" would, inflates every target's
// percentiles by the same constant and squeezes the ratios toward 1.
func coStart(intended, idleSince, sent time.Time) time.Time {
	if idleSince.After(intended) {
		return intended
	}
	return sent
}

// recorder accumulates one run's measurements; safe for concurrent use.
type recorder struct {
	mu           sync.Mutex
	latency      *hdrhistogram.Histogram
	service      *hdrhistogram.Histogram
	lag          *hdrhistogram.Histogram
	requests     int64
	errors       int64
	kinds        map[string]int64
	samples      map[string]string
	serverCloses atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{latency: newHist(), service: newHist(), lag: newHist(), kinds: map[string]int64{}, samples: map[string]string{}}
}

// ok records a successful request.
func (r *recorder) ok(latency, service time.Duration) {
	r.mu.Lock()
	r.requests++
	recordDur(r.latency, latency)
	recordDur(r.service, service)
	r.mu.Unlock()
}

// fail records a failed request of the given kind.
func (r *recorder) fail(kind, sample string) {
	r.mu.Lock()
	r.requests++
	r.errors++
	r.kinds[kind]++
	if _, ok := r.samples[kind]; !ok {
		r.samples[kind] = sample
	}
	r.mu.Unlock()
}

// genLag records how late the generator itself was.
func (r *recorder) genLag(d time.Duration) {
	r.mu.Lock()
	recordDur(r.lag, d)
	r.mu.Unlock()
}

// result packs the recorder into a LoadResult.
func (r *recorder) result(mode string, elapsed time.Duration) *LoadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &LoadResult{Mode: mode, Requests: r.requests, Errors: r.errors, Elapsed: elapsed, ServerCloses: r.serverCloses.Load()}
	if len(r.kinds) > 0 {
		res.ErrorKinds, res.ErrorSamples = r.kinds, r.samples
	}
	if elapsed > 0 {
		res.Throughput = float64(r.requests-r.errors) / elapsed.Seconds()
	}
	res.Latency, _ = r.latency.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	res.Service, _ = r.service.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if r.lag.TotalCount() > 0 {
		res.GenLag, _ = r.lag.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	}
	return res
}

// buildRequests serializes every request variant of spec once.
func buildRequests(spec RequestSpec, addr string) ([][]byte, error) {
	hosts := spec.Hosts
	if len(hosts) == 0 {
		hosts = []string{addr}
	}
	body := bytes.Repeat([]byte("k"), spec.Body)
	out := make([][]byte, 0, len(hosts))
	for _, h := range hosts {
		var req fasthttp.Request
		req.Header.SetMethod(spec.Method)
		req.SetRequestURI(spec.Path)
		req.Header.SetHost(h)
		req.Header.SetUserAgent("keystone-bench")
		for _, kv := range spec.Headers {
			k, v, ok := strings.Cut(kv, ":")
			if !ok {
				return nil, fmt.Errorf("header %q: expected \"Name: value\"", kv)
			}
			req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if spec.Body > 0 {
			req.SetBodyRaw(body)
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := req.Write(w); err != nil {
			return nil, err
		}
		w.Flush()
		out = append(out, buf.Bytes())
	}
	return out, nil
}

// client is one keep-alive connection. Not safe for concurrent use: each
// worker owns one.
type client struct {
	addr    string
	timeout time.Duration
	expect  *Expect
	rec     *recorder
	c       net.Conn
	br      *bufio.Reader
	resp    fasthttp.Response
}

func newClient(addr string, timeout time.Duration, expect *Expect, rec *recorder) *client {
	return &client{addr: addr, timeout: timeout, expect: expect, rec: rec}
}

func (c *client) dial() error {
	conn, err := net.DialTimeout("tcp4", c.addr, c.timeout)
	if err != nil {
		return err
	}
	c.c = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 32<<10)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

// close drops the connection with an RST (SO_LINGER 0) rather than a FIN,
// so the client side keeps no TIME_WAIT socket: the 10k-connection
// scenario, repeated per target and repetition, would otherwise exhaust
// the ~28k ephemeral ports of the loopback address pair.
func (c *client) close() {
	if c.c == nil {
		return
	}
	if tc, ok := c.c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.c.Close()
	c.c = nil
}

// do sends one serialized request and checks the answer. It returns "" on
// success, or the error kind and a sample (the body's start or the error
// text) on failure; a broken connection is closed and redialed next time.
func (c *client) do(req []byte) (kind, sample string) {
	if c.c == nil {
		if err := c.dial(); err != nil {
			return "dial_" + errKind(err), err.Error()
		}
	}
	c.c.SetDeadline(time.Now().Add(c.timeout))
	if _, err := c.c.Write(req); err != nil {
		c.close()
		return errKind(err), err.Error()
	}
	c.resp.Reset()
	if err := c.resp.Read(c.br); err != nil {
		c.close()
		return errKind(err), err.Error()
	}
	kind, sample = c.check()
	if c.resp.ConnectionClose() {
		c.rec.serverCloses.Add(1)
		c.close()
	}
	return kind, sample
}

// check compares the response in c.resp with c.expect.
func (c *client) check() (kind, sample string) {
	e, r := c.expect, &c.resp
	body := r.Body()
	switch {
	case r.StatusCode() != e.Status:
		return fmt.Sprintf("status_%d", r.StatusCode()), clip(body)
	case e.Encoding != "" && string(r.Header.ContentEncoding()) != e.Encoding:
		return "bad_encoding", fmt.Sprintf("Content-Encoding %q", r.Header.ContentEncoding())
	case e.BodyLen >= 0 && len(body) != e.BodyLen:
		return "bad_body_len", fmt.Sprintf("got %d bytes, want %d", len(body), e.BodyLen)
	case e.Body != "" && string(body) != e.Body:
		return "bad_body", clip(body)
	}
	for _, h := range e.Headers {
		if len(r.Header.Peek(h)) == 0 {
			return "missing_header", h
		}
	}
	return "", ""
}

func clip(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// errKind names a transport error for the error-kind counts.
func errKind(err error) string {
	// fasthttp's ErrTimeout has Timeout() but not net.Error's Temporary().
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &te) && te.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_ephemeral_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_files"
	}
	if strings.Contains(err.Error(), "cannot parse") || strings.Contains(err.Error(), "error when reading") {
		return "bad_response"
	}
	return "io"
}

// dialAll opens n connections, at most par at a time, so a run starts with
// its connections established: connect time is not request latency.
func dialAll(clients []*client, par int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for _, c := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.dial(); err != nil {
				c.rec.fail("dial_"+errKind(err), err.Error())
			}
		}()
	}
	wg.Wait()
}

// runClosed is the closed loop: every connection sends its next request as
// soon as the previous one answered, for warmup+duration. Latency is from
// the send (a closed loop has no intended time; its figure is throughput).
func runClosed(ctx context.Context, job *LoadJob, reqs [][]byte, emit func(loadEvent)) *LoadResult {
	rec := newRecorder()
	clients := make([]*client, job.Connections)
	for i := range clients {
		clients[i] = newClient(job.Addr, job.Timeout, &job.Expect, rec)
	}
	// Failures to open the initial connections count in the result: a
	// target that refuses connections under load is failing.
	dialAll(clients, 64)
	defer closeAll(clients)

	start := time.Now()
	measureStart := start.Add(job.Warmup)
	end := measureStart.Add(job.Duration)
	var measuring atomic.Bool
	started := make(chan struct{})
	go func() {
		defer close(started)
		sleepUntil(ctx, measureStart)
		measuring.Store(true)
		emit(loadEvent{Event: "measure_start"})
	}()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; ; n += len(clients) {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				kind, sample := c.do(reqs[n%len(reqs)])
				t1 := time.Now()
				inWindow := measuring.Load() && !t0.Before(measureStart)
				switch {
				case kind != "" && inWindow:
					// A request sent in the window that fails counts even
					// when it fails after the window (a timeout).
					rec.fail(kind, sample)
				case kind == "" && inWindow && !t1.After(end):
					rec.ok(t1.Sub(t0), t1.Sub(t0))
				}
				if strings.HasPrefix(kind, "dial_") {
					time.Sleep(10 * time.Millisecond) // a dead target must not spin the loop
				}
			}
		}()
	}
	wg.Wait()
	<-started // measure_start always precedes measure_end
	emit(loadEvent{Event: "measure_end"})
	return rec.result("closed", job.Duration)
}

func closeAll(clients []*client) {
	for _, c := range clients {
		c.close()
	}
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// openLoop is the constant-rate engine, separated from the network so the
// coordinated-omission correction can be tested with a simulated target.
type openLoop struct {
	rate     float64       // requests per second
	workers  int           // connections; a request waits when all are busy
	warmup   time.Duration // sent at the same rate, not recorded
	duration time.Duration // measured window of intended send times
	drain    time.Duration // after the window, how long queued sends may still go out
	// do sends the request of slot k on worker w's connection and returns
	// "" or an error kind and sample.
	do   func(w int, k int64) (kind, sample string)
	emit func(loadEvent)
}

// run paces intended send times k/rate apart, hands them to idle workers,
// and records each answer per coStart. Slots due in the measured window but
// still queued at the drain deadline count as Dropped.
func (o *openLoop) run(ctx context.Context, rec *recorder) *LoadResult {
	interval := float64(time.Second) / o.rate
	total := int64(float64(o.warmup+o.duration) / interval)
	firstMeasured := int64(math.Ceil(float64(o.warmup) / interval))
	// A short lead lets every worker reach its receive before slot 0.
	start := time.Now().Add(5 * time.Millisecond)
	intended := func(k int64) time.Time { return start.Add(time.Duration(float64(k) * interval)) }
	windowEnd := start.Add(o.warmup + o.duration)
	drainDeadline := windowEnd.Add(o.drain)

	// The queue holds every slot the workers have not taken yet; while it
	// is non-empty, all connections are busy and the target is behind.
	// A full queue means it is hopelessly behind: those slots are dropped.
	slots := make(chan int64, min(total+1, 1<<20))
	var dropped atomic.Int64
	pacerDone := make(chan struct{})
	go func() {
		defer close(pacerDone)
		defer close(slots)
		tick, stop := newPacer(max(time.Duration(interval), 50*time.Microsecond))
		defer stop()
		measureStarted := false
		for next := int64(0); next < total; {
			if ctx.Err() != nil {
				return
			}
			tick()
			due := int64(float64(time.Since(start))/interval) + 1
			for ; next < total && next < due; next++ {
				if !measureStarted && next >= firstMeasured {
					measureStarted = true
					o.emit(loadEvent{Event: "measure_start"})
				}
				select {
				case slots <- next:
				default:
					if next >= firstMeasured {
						dropped.Add(1)
					}
				}
			}
		}
	}()

	var wg sync.WaitGroup
	for w := 0; w < o.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idleSince := time.Now()
			for k := range slots {
				measured := k >= firstMeasured
				sent := time.Now()
				if sent.After(drainDeadline) || ctx.Err() != nil {
					if measured {
						dropped.Add(1)
					}
					continue
				}
				t := intended(k)
				kind, sample := o.do(w, k)
				done := time.Now()
				if measured {
					if kind != "" {
						rec.fail(kind, sample)
					} else {
						from := coStart(t, idleSince, sent)
						rec.ok(done.Sub(from), done.Sub(sent))
						if !idleSince.After(t) {
							rec.genLag(sent.Sub(t))
						}
					}
				}
				if strings.HasPrefix(kind, "dial_") {
					time.Sleep(10 * time.Millisecond)
				}
				idleSince = time.Now()
			}
		}()
	}
	wg.Wait()
	<-pacerDone
	o.emit(loadEvent{Event: "measure_end"})
	res := rec.result("open", o.duration)
	res.Dropped = dropped.Load()
	return res
}

// newPacer returns a function that blocks until the next tick of a
// period-long periodic timer. On Linux it is a timerfd read through the Go
// netpoller: the wake-up comes from an hrtimer, with ~60µs error on this
// class of VM, where time.Sleep and time.Ticker round sub-millisecond
// waits up to the netpoller's 1ms epoll timeout (measured: 1.06ms median
// overshoot for a 50µs sleep), which would make a 5k req/s load arrive in
// bursts of five.
func newPacer(period time.Duration) (tick func(), stop func()) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err == nil {
		spec := unix.ItimerSpec{Interval: unix.NsecToTimespec(int64(period)), Value: unix.NsecToTimespec(int64(period))}
		if err = unix.TimerfdSettime(fd, 0, &spec, nil); err == nil {
			// A non-blocking fd makes os.NewFile register it with the
			// netpoller, so Read parks the goroutine instead of a thread.
			f := os.NewFile(uintptr(fd), "timerfd")
			var buf [8]byte
			return func() {
					if _, err := f.Read(buf[:]); err != nil {
						time.Sleep(period)
					}
					_ = binary.LittleEndian.Uint64(buf[:]) // expirations; the caller reads the clock
				}, func() {
					f.Close()
				}
		}
		unix.Close(fd)
	}
	t := time.NewTicker(period)
	return func() { <-t.C }, t.Stop
}

// runOpen drives the open loop over real connections.
func runOpen(ctx context.Context, job *LoadJob, reqs [][]byte, emit func(loadEvent)) *LoadResult {
	rec := newRecorder()
	clients := make([]*client, job.Connections)
	for i := range clients {
		clients[i] = newClient(job.Addr, job.Timeout, &job.Expect, rec)
	}
	dialAll(clients, 64)
	defer closeAll(clients)
	o := &openLoop{
		rate: job.Rate, workers: job.Connections, warmup: job.Warmup, duration: job.Duration,
		drain: max(job.Timeout, time.Second),
		do: func(w int, k int64) (string, string) {
			return clients[w].do(reqs[k%int64(len(reqs))])
		},
		emit: emit,
	}
	return o.run(ctx, rec)
}

// runIdle opens job.Connections keep-alive connections, sends one request
// on each, reports idle_ready and holds them until release is closed (the
// harness has sampled the target's memory) or Hold passes. It then sends one
// more request on every connection, so a connection the target dropped
// while idle shows up as an error, and closes them all.
func runIdle(ctx context.Context, job *LoadJob, reqs [][]byte, emit func(loadEvent), release <-chan struct{}) *LoadResult {
	rec := newRecorder()
	clients := make([]*client, job.Connections)
	for i := range clients {
		clients[i] = newClient(job.Addr, job.Timeout, &job.Expect, rec)
	}
	defer closeAll(clients)
	start := time.Now()
	emit(loadEvent{Event: "measure_start"})
	pass := func(label string) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i, c := range clients {
			if ctx.Err() != nil {
				break
			}
			if label != "" && c.c == nil {
				continue // never opened: already counted
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				t0 := time.Now()
				kind, sample := c.do(reqs[i%len(reqs)])
				if kind != "" {
					rec.fail(label+kind, sample)
					return
				}
				d := time.Since(t0)
				rec.ok(d, d)
			}()
		}
		wg.Wait()
	}
	pass("")
	open := 0
	for _, c := range clients {
		if c.c != nil {
			open++
		}
	}
	emit(loadEvent{Event: "idle_ready", Conns: open})
	hold := time.NewTimer(job.Hold + 30*time.Second)
	defer hold.Stop()
	select {
	case <-release:
	case <-hold.C:
	case <-ctx.Done():
	}
	pass("after_idle_")
	emit(loadEvent{Event: "measure_end"})
	res := rec.result("idle", time.Since(start))
	res.Conns = open
	return res
}

// runLoadgen is the load generator process: one LoadJob line on stdin,
// loadEvent lines on stdout. A "release" line on stdin ends an idle hold;
// stdin closing means the harness is gone, and the process exits.
func runLoadgen(in io.Reader, out io.Writer) error {
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("loadgen: reading job: %w", err)
	}
	var job LoadJob
	if err := json.Unmarshal(line, &job); err != nil {
		return fmt.Errorf("loadgen: bad job: %w", err)
	}
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	emit := func(e loadEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	go func() {
		released := false
		for {
			l, err := br.ReadString('\n')
			if strings.TrimSpace(l) == "release" && !released {
				released = true
				close(release)
			}
			if err != nil {
				// The harness died: nobody will read the result.
				os.Exit(3)
			}
		}
	}()
	// A watchdog bounds the run however the target behaves.
	limit := job.Warmup + job.Duration + job.Hold + 2*job.Timeout + 2*time.Minute
	time.AfterFunc(limit, func() {
		emit(loadEvent{Event: "error", Error: fmt.Sprintf("loadgen: watchdog: run exceeded %v", limit)})
		os.Exit(4)
	})
	reqs, err := buildRequests(job.Request, job.Addr)
	if err != nil {
		return err
	}
	var res *LoadResult
	switch job.Mode {
	case "closed":
		res = runClosed(ctx, &job, reqs, emit)
	case "open":
		res = runOpen(ctx, &job, reqs, emit)
	case "idle":
		res = runIdle(ctx, &job, reqs, emit, release)
	default:
		return fmt.Errorf("loadgen: unknown mode %q", job.Mode)
	}
	emit(loadEvent{Event: "result", Result: res})
	return nil
}
