# Bench targets. The harness is documented in bench/main.go; reports go to
# $(BENCH_OUT)/<suite>/report.{json,md} and latency.svg.

GO        ?= go
BENCH_OUT ?= bench/out
# Extra harness flags, e.g. BENCH_FLAGS='-targets keystone,nginx -run get-'.
BENCH_FLAGS ?=
# Where make microbench writes; compare two with bench/compare.sh OLD NEW.
MICRO ?= $(BENCH_OUT)/micro-$(shell git rev-parse --short HEAD 2>/dev/null || echo wip).txt

.PHONY: bench bench-smoke microbench docs-screenshot

## bench: full suite vs nginx and HAProxy (~25 min), with Keystone profiles.
bench:
	$(GO) run ./bench -scenarios bench/scenarios/full.yaml -out $(BENCH_OUT)/full -pprof $(BENCH_OUT)/full/pprof $(BENCH_FLAGS)

## bench-smoke: every scenario type briefly (< 1 min).
bench-smoke:
	$(GO) run ./bench -scenarios bench/scenarios/smoke.yaml -out $(BENCH_OUT)/smoke $(BENCH_FLAGS)

## microbench: every Go benchmark, 6 counts, into $(MICRO) for benchstat.
microbench:
	@mkdir -p $(dir $(MICRO))
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./... > $(MICRO); status=$$?; cat $(MICRO); echo "wrote $(MICRO)"; exit $$status

## docs-screenshot: redraw docs/dashboard.png in headless Chromium (the dashboard test's gateway).
docs-screenshot:
	KEYSTONE_DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(GO) test -count=1 -run TestDashboardRendersInHeadlessChromium ./server/
