package observe

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRouteStatsCountExactlyUnderConcurrency(t *testing.T) {
	t.Parallel()
	r := New(Config{})
	rs := r.Route("api", "/api")
	const workers, each = 16, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				status := 200
				if i%10 == 0 {
					status = 503
				}
				rs.Observe(Shard(w), []byte("GET"), status, time.Millisecond, 10, 100)
			}
		})
	}
	wg.Wait()
	var buf bytes.Buffer
	r.WritePrometheus(&buf)
	out := buf.String()
	for _, want := range []string{
		"# TYPE keystone_http_requests_total counter",
		"# TYPE keystone_http_request_duration_seconds histogram",
		`keystone_http_requests_total{tenant="api",route="/api",method="GET",code="200"} 14400`,
		`keystone_http_requests_total{tenant="api",route="/api",method="GET",code="503"} 1600`,
		`keystone_http_request_duration_seconds_count{tenant="api",route="/api"} 16000`,
		`keystone_http_request_duration_seconds_bucket{tenant="api",route="/api",le="0.0005"} 0`,
		`keystone_http_request_duration_seconds_bucket{tenant="api",route="/api",le="0.001"} 16000`,
		`keystone_http_request_duration_seconds_sum{tenant="api",route="/api"} 16`,
		`keystone_http_request_bytes_total{tenant="api",route="/api"} 160000`,
		`keystone_http_response_bytes_total{tenant="api",route="/api"} 1600000`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "# TYPE keystone_http_requests_total "); n != 1 {
		t.Errorf("TYPE line of a family written %d times", n)
	}
	s := r.Summaries()
	if len(s) != 1 || s[0].Requests != 16000 || s[0].ServerErrors != 1600 || s[0].ClientErrors != 0 {
		t.Errorf("Summaries = %+v", s)
	}
}

func TestStatusAndMethodLabelsAreBounded(t *testing.T) {
	t.Parallel()
	r := New(Config{})
	rs := r.Route("t", "/")
	for _, c := range []struct {
		method string
		status int
	}{{"GET", 200}, {"get", 299}, {"BREW", 418}, {"DELETE", 99}, {"PUT", 1000}, {"POST", -1}} {
		rs.Observe(0, []byte(c.method), c.status, 0, 0, 0)
	}
	us := r.Upstream("t", "http://u")
	us.ObserveStatus(0, 502, time.Second)
	us.ObserveFailure(0, FailTimeout, time.Second)
	us.ObserveFailure(0, 99, time.Second) // out of range: closed
	var buf bytes.Buffer
	r.WritePrometheus(&buf)
	out := buf.String()
	for _, want := range []string{
		`method="GET",code="200"} 1`,
		`method="OTHER",code="2xx"} 1`, // lower-case "get" is another method
		`method="OTHER",code="4xx"} 1`,
		`method="DELETE",code="other"} 1`,
		`method="PUT",code="other"} 1`,
		`method="POST",code="other"} 1`,
		`upstream="http://u",code="502"} 1`,
		`upstream="http://u",code="timeout"} 1`,
		`upstream="http://u",code="closed"} 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
}

func TestLabelValuesAreEscaped(t *testing.T) {
	t.Parallel()
	r := New(Config{})
	r.Route("a\"b\\c\nd", "/").Observe(0, []byte("GET"), 200, 0, 0, 0)
	var buf bytes.Buffer
	r.WritePrometheus(&buf)
	if want := `tenant="a\"b\\c\nd"`; !strings.Contains(buf.String(), want) {
		t.Errorf("want %s in\n%s", want, buf.String())
	}
}

func TestNilStatsCountNothing(t *testing.T) {
	t.Parallel()
	var r *Registry
	r.Route("a", "/").Observe(0, []byte("GET"), 200, 0, 0, 0)
	r.Upstream("a", "u").ObserveStatus(0, 200, 0)
	r.Upstream("a", "u").ObserveFailure(0, FailConnect, 0)
	r.Tenant("a", "").Retry()
	r.Tenant("a", "").Script().Observe(0, 0)
	r.Tenant("a", "").Script().Error(LuaError)
}

func TestQuantileInterpolatesInsideTheBucket(t *testing.T) {
	t.Parallel()
	var h HistSnapshot
	for _, c := range []struct {
		name string
		q    float64
		want float64
	}{
		{"empty is zero", 0.5, 0},
	} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// 100 observations in (0.01, 0.025]: the median is half way.
	h.Buckets[5] = 100
	h.Count = 100
	if got := h.Quantile(0.5); got < 0.0174 || got > 0.0176 {
		t.Errorf("median = %v, want 0.0175", got)
	}
	h.Buckets[len(Bounds)] = 100 // as many beyond the last bound
	h.Count = 200
	if got := h.Quantile(0.99); got != 30 {
		t.Errorf("p99 in +Inf = %v, want the last bound 30", got)
	}
}
