package server

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// chromium returns the headless browser's path. Without one the test is
// skipped on a developer's machine and fails in CI, which installs it
// (.ci/run), so CI cannot pass by not running it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; .ci/run installs it for this test")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium)")
	return ""
}

// runChromium loads url in headless Chromium, lets its scripts run for
// budget of virtual time, and returns what it printed (the DOM with
// --dump-dom).
func runChromium(t *testing.T, url string, budget time.Duration, extra ...string) string {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=" + strconv.Itoa(int(budget/time.Millisecond)),
	}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errOut.String())
	}
	return out.String()
}

// TestDashboardRendersInHeadlessChromium loads /admin/ in a real browser
// against a gateway serving traffic and checks that the page's script
// fetched the admin endpoints and rendered a row per tenant, with its
// upstreams, breaker state and request counts.
func TestDashboardRendersInHeadlessChromium(t *testing.T) {
	t.Parallel()
	chromium(t)
	api := startEcho(t, "api")
	billing := startEcho(t, "billing")
	dead := "http://" + hangingListener(t) // accepts, never answers
	g := startGateway(t, luaBlock+yamlf(`
admin: {token: s3cret}
tenants:
  - name: api
    path_prefix: /api
    upstreams: [{url: %q}]
    circuit_breaker: {}
  - name: billing
    path_prefix: /billing
    upstreams: [{url: %q}, {url: %q}]
    timeouts: {request: 50ms}
    retries: {attempts: 1, on: [timeout]}
    circuit_breaker: {failure_threshold: 2}
  - name: lua
    path_prefix: /lua
    script: app.lua
`, api.url(), billing.url(), dead), "scripts/app.lua", obsScript)
	for range 10 {
		g.get("/api/x")
	}
	// billing's second upstream times out until its breaker opens.
	for range 8 {
		g.get("/billing/x")
	}
	g.get("/lua/boom")

	// Keep traffic flowing while the page polls, so it has rates to show.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			g.get("/api/live")
			time.Sleep(10 * time.Millisecond)
		}
	})
	defer func() { stop(); wg.Wait() }()

	// The page is served without the token (it holds no data); its JSON
	// requests need it. Without it the page asks for the token.
	locked := runChromium(t, "http://"+g.addr+"/admin/", 3*time.Second, "--dump-dom")
	if !strings.Contains(locked, `<div id="problem" style="display: block;">Cannot poll the gateway: the admin token is required</div>`) ||
		!strings.Contains(locked, `<form id="auth" style="display: block;">`) {
		t.Errorf("without a token the page does not ask for it:\n%s", locked)
	}

	// With the token in the URL fragment, which the browser keeps to
	// itself.
	url := "http://" + g.addr + "/admin/?refresh=500#token=s3cret"
	var extra []string
	if shot := os.Getenv("KEYSTONE_DASHBOARD_SCREENSHOT"); shot != "" {
		// make docs-screenshot: the README's picture of this page.
		extra = append(extra, "--screenshot="+shot, "--window-size=1280,560", "--hide-scrollbars")
		runChromium(t, url, 6*time.Second, extra...)
	}
	dom := runChromium(t, url, 4*time.Second, "--dump-dom")
	if !strings.Contains(dom, `<div id="problem" style="display: none;"></div>`) {
		t.Fatalf("the page could not poll with the token:\n%s", dom)
	}
	for _, want := range []string{
		`<tr class="tenant" data-tenant="api">`,
		`<tr class="tenant" data-tenant="lua">`,
		`data-upstream="` + api.url() + `"`,
		`<span class="badge closed">closed</span>`, // api's breaker
		`<span class="muted">script only</span>`,   // lua has no upstreams
		`<span class="badge ok">ok</span>`,
		`<tr class="tenant" data-tenant="billing">`,
		`<span class="badge degraded">degraded</span>`, // billing: one upstream out
		`<span class="badge open">open</span>`,         // its breaker
		`<span class="muted">0 in flight</span>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %s", want)
		}
	}
	// Counts come from /admin/stats: lua answered one request, a 500.
	lua := rowOf(t, dom, "lua")
	if !strings.Contains(lua, `<td class="num total">1</td>`) {
		t.Errorf("lua row does not count its one request:\n%s", lua)
	}
	// api's rate and percentiles are numbers, computed by the page.
	row := rowOf(t, dom, "api")
	for _, cls := range []string{"rate", "p50", "p99"} {
		m := regexp.MustCompile(`<td class="num ` + cls + `"[^>]*>([^<]*)</td>`).FindStringSubmatch(row)
		if m == nil || !regexp.MustCompile(`^[0-9.]+( (µs|ms|s))?$`).MatchString(m[1]) {
			t.Errorf("api %s cell = %q, want a number", cls, m)
		}
	}
	if m := regexp.MustCompile(`<td class="num total">(\d+)</td>`).FindStringSubmatch(row); m == nil {
		t.Errorf("api total missing:\n%s", row)
	} else if n, _ := strconv.Atoi(m[1]); n < 10 {
		t.Errorf("api total %d, want at least the 10 requests sent first", n)
	}
}

// rowOf returns the dashboard's table row of a tenant.
func rowOf(t *testing.T, dom, tenant string) string {
	t.Helper()
	i := strings.Index(dom, `data-tenant="`+tenant+`"`)
	if i < 0 {
		t.Fatalf("no row for %s", tenant)
	}
	j := strings.Index(dom[i:], "</tr>")
	if j < 0 {
		t.Fatalf("row of %s does not end", tenant)
	}
	return dom[i : i+j]
}
