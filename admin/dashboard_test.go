package admin_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keystone-gateway/keystone/admin"
)

// statsSource is a Source that counts requests.
type statsSource struct {
	source
	st admin.Stats
	on bool
}

func (s statsSource) Stats() (admin.Stats, bool) { return s.st, s.on }

func TestDashboardIsServedWithoutTokenAndLoadsNothingElse(t *testing.T) {
	t.Parallel()
	h := admin.New(admin.Config{Token: "s3cret", WriteError: writeError}, source{{Name: "a"}})
	for _, path := range []string{"/", ""} {
		resp := serve(h, "GET", path, "")
		if resp.StatusCode() != 200 || !strings.HasPrefix(string(resp.Header.ContentType()), "text/html") {
			t.Fatalf("GET %q: %d %s", path, resp.StatusCode(), resp.Header.ContentType())
		}
		// The SVG namespace name is a URI, not something fetched.
		body := strings.ReplaceAll(string(resp.Body()), `"http://www.w3.org/2000/svg"`, "")
		// Self-contained: no external script, style, font or image.
		for _, bad := range []string{"<script src", "<link", "http://", "https://", "@import", "url("} {
			if strings.Contains(body, bad) {
				t.Errorf("the page references %q", bad)
			}
		}
		if csp := string(resp.Header.Peek("Content-Security-Policy")); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
	}
	// Its data is guarded.
	if resp := serve(h, "GET", "/stats", ""); resp.StatusCode() != 401 {
		t.Errorf("/stats without token: %d, want 401", resp.StatusCode())
	}
	if resp := serve(h, "POST", "/", ""); resp.StatusCode() != 401 {
		t.Errorf("POST / without token: %d, want 401 like any other admin request", resp.StatusCode())
	}
}

func TestStatsReportsTheSourceCounters(t *testing.T) {
	t.Parallel()
	src := statsSource{source: source{{Name: "a"}}, on: true, st: admin.Stats{
		BoundsSeconds: []float64{0.1, 1},
		Tenants:       []admin.TenantStats{{Name: "a", Requests: 7, ServerErrors: 2, ClientErrors: 1, DurationBuckets: []uint64{5, 1, 1}, DurationSumSeconds: 3.5}},
	}}
	resp := serve(admin.New(admin.Config{WriteError: writeError}, src), "GET", "/stats", "")
	var got admin.Stats
	if err := json.Unmarshal(resp.Body(), &got); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("%d %s: %v", resp.StatusCode(), resp.Body(), err)
	}
	if len(got.Tenants) != 1 || got.Tenants[0].Requests != 7 || got.Tenants[0].ServerErrors != 2 ||
		len(got.Tenants[0].DurationBuckets) != 3 || len(got.BoundsSeconds) != 2 {
		t.Errorf("stats = %+v", got)
	}

	src.on = false
	if resp := serve(admin.New(admin.Config{WriteError: writeError}, src), "GET", "/stats", ""); resp.StatusCode() != 404 {
		t.Errorf("metrics off: %d, want 404", resp.StatusCode())
	}
	if resp := serve(admin.New(admin.Config{WriteError: writeError}, source{}), "GET", "/stats", ""); resp.StatusCode() != 404 {
		t.Errorf("a Source that does not count: %d, want 404", resp.StatusCode())
	}
}
