# otelcol-analytics: single entry point for build, run, test, bench, lint and code generation.
#
# Tools are pinned with `tool` directives and run through `go tool -modfile=...`; nothing is
# installed globally. Everything works with GOTOOLCHAIN=local (go 1.26.x).
#   internal/tools/go.mod          golangci-lint v2.15.0, ocb (builder) v0.165.0, govulncheck
#   internal/tools/mdatagen/go.mod mdatagen v0.159.0 (own module so its pinned deps stay untouched;
#                                  the newest mdatagen this module proxy serves)
#   internal/tools/telemetrygen/go.mod telemetrygen v0.161.0 (load generator of `make bench`; own module
#                                  for the same reason)

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-builtin-rules

GO ?= go
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS_MODFILE := $(ROOT)/internal/tools/go.mod
MDATAGEN_MODFILE := $(ROOT)/internal/tools/mdatagen/go.mod
GOTOOL := $(GO) tool -modfile=$(TOOLS_MODFILE)

# Distribution built by ocb (see builder-config.yaml).
DIST_NAME := otelcol-analytics
BUILDER_CONFIG := builder-config.yaml
BUILD_DIR := _build
BIN := bin/$(DIST_NAME)
# Extra ocb flags, e.g. BUILDER_FLAGS=--verbose.
BUILDER_FLAGS ?=

# `make run` config; written by the component owners. It needs no flags: its healthcheckv2
# extension reports component status (Redis/PostgreSQL outages) without a feature gate.
RUN_CONFIG ?= testdata/config.yaml
# Extra collector flags for `make run`, e.g. RUN_FLAGS=--feature-gates=+pdata.useProtoPooling.
RUN_FLAGS ?=

# Test knobs. PKGS narrows the packages, TEST_FLAGS adds flags (e.g. TEST_FLAGS='-run TestX -v').
PKGS ?= ./...
TEST_TIMEOUT ?= 15m
TEST_FLAGS ?=
# `make bench` driver flags (go run ./tools/benchrun -help), e.g. BENCH_FLAGS='-duration 30s -keep-tmp'.
BENCH_FLAGS ?=
# `make bench-go` only: benchmark regexp and extra `go test` flags.
BENCH ?= .
GO_BENCH_FLAGS ?=

# Wrapper dir put on PATH by `make generate` so `//go:generate mdatagen metadata.yaml` works.
TOOLS_BIN := $(ROOT)/.tools/bin

# Inputs of the distro: non-test Go sources of the root module, go.mod/go.sum, the ocb manifest
# and the tools module (ocb version). Test files, _build/, bin/, internal/tools/ and the bench driver
# and load drivers (tools/, cmd/sdkload, internal/sdkload: not part of the distro) are excluded.
DIST_SOURCES := $(shell find . -type f -name '*.go' ! -name '*_test.go' \
	! -path './_build/*' ! -path './bin/*' ! -path './.tools/*' ! -path './internal/tools/*' \
	! -path './tools/*' ! -path './cmd/sdkload/*' ! -path './internal/sdkload/*' ! -path './.git/*' 2>/dev/null)
# Files compiled in with go:embed: the Lua scripts and the dashboard's page and assets.
DIST_EMBEDS := $(shell find . -type f \( -name '*.lua' -o -path './analyticsqueryextension/internal/dashboard/static/*' \) \
	! -path './_build/*' ! -path './.git/*' 2>/dev/null)
DIST_INPUTS := $(BUILDER_CONFIG) go.mod go.sum internal/tools/go.mod $(DIST_SOURCES) $(DIST_EMBEDS)

.PHONY: all
all: build

## build: build bin/otelcol-analytics with ocb (rebuilds only when sources or the manifest changed)
.PHONY: build
build: $(BIN)

# Serialised with flock (when available) because integration tests may run `make build`
# from several packages at once and ocb rewrites $(BUILD_DIR) in place.
$(BIN): $(DIST_INPUTS)
	@mkdir -p $(@D)
	@# ocb leaves an empty otelcol-distribution* dir in $$TMPDIR on every run: use a private one.
	@echo "$(GOTOOL) builder --config=$(BUILDER_CONFIG) --skip-strict-versioning=false $(BUILDER_FLAGS)"
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	TMPDIR=$$tmp $(if $(shell command -v flock 2>/dev/null),flock $(@D)/.build.lock) \
		$(GOTOOL) builder --config=$(BUILDER_CONFIG) --skip-strict-versioning=false $(BUILDER_FLAGS); \
	cp -f $(BUILD_DIR)/$(DIST_NAME) $@.tmp; mv -f $@.tmp $@
	@echo "built $@"

## run: build, make sure the local Redis/PostgreSQL the config uses are up, then run the distro in the foreground
# Redis/PostgreSQL given through REDIS_SENTINEL_MASTER, REDIS_USERNAME/REDIS_PASSWORD, REDIS_CLUSTER
# or POSTGRES_DSN are left to the user (see scripts/ensure-services.sh --run).
.PHONY: run
run: build
	@./scripts/ensure-services.sh --run
	exec ./$(BIN) --config $(RUN_CONFIG) $(RUN_FLAGS)

## services: start Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) if they are not reachable
.PHONY: services
services:
	@./scripts/ensure-services.sh

## chromium: install Debian's chromium if missing (the dashboard's browser test runs it headless)
.PHONY: chromium
chromium:
	@./scripts/ensure-chromium.sh

## test: build the distro (end-to-end tests run it), then all tests with -race against real Redis/PostgreSQL
.PHONY: test
test: services chromium build
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS)

## screenshot: regenerate docs/dashboard.png (the README's picture of the dashboard) with the
##             browser test's demo week
.PHONY: screenshot
screenshot: services chromium build
	DASHBOARD_SCREENSHOT=$(ROOT)/docs/dashboard.png $(GO) test -count=1 -run '^TestDashboardInBrowser$$' ./internal/e2e/

## bench: the performance targets (README, Performance): the distro under telemetrygen load next to a
##        do-nothing baseline (both durability modes), then the Go benchmarks; one summary (also in
##        bench-results.txt), ~6 min
# The driver (tools/benchrun) starts a private Redis, a fresh PostgreSQL database per run, the distro
# and telemetrygen (pinned in internal/tools/telemetrygen/go.mod, compiled once into a temp dir), pins
# them to CPUs with taskset when there are >= 2, and stops everything it started.
.PHONY: bench
bench: services build
	$(GO) run ./tools/benchrun -root $(ROOT) $(BENCH_FLAGS)

## bench-go: only the Go benchmarks, plain `go test -bench` (BENCH regexp, GO_BENCH_FLAGS)
.PHONY: bench-go
bench-go: services
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(GO_BENCH_FLAGS) $(PKGS)

## lint: golangci-lint v2 with .golangci.yml
.PHONY: lint
lint:
	$(GOTOOL) golangci-lint run $(PKGS)

## fmt: rewrite files with the configured formatters (gofumpt extra-rules, goimports local prefix)
.PHONY: fmt
fmt:
	$(GOTOOL) golangci-lint fmt $(PKGS)

## generate: run `go generate ./...` (mdatagen metadata.yaml in each component dir)
# Directives may be `//go:generate mdatagen metadata.yaml` (wrapper below on PATH) or
# `//go:generate go tool -modfile=../internal/tools/mdatagen/go.mod mdatagen metadata.yaml`.
.PHONY: generate
generate: $(TOOLS_BIN)/mdatagen
	PATH="$(TOOLS_BIN):$$PATH" $(GO) generate $(PKGS)

$(TOOLS_BIN)/mdatagen: $(MDATAGEN_MODFILE)
	@mkdir -p $(@D)
	@printf '#!/bin/sh\n# generated by the Makefile: mdatagen pinned in internal/tools/mdatagen/go.mod\nexec %s tool -modfile=%s mdatagen "$$@"\n' \
		'$(GO)' '$(MDATAGEN_MODFILE)' > $@
	@chmod +x $@

## tidy: go mod tidy for the root module and the tools modules
.PHONY: tidy
tidy:
	$(GO) mod tidy
	cd internal/tools && $(GO) mod tidy
	cd internal/tools/mdatagen && $(GO) mod tidy
	cd internal/tools/telemetrygen && $(GO) mod tidy

## vulncheck: govulncheck (needs network access to vuln.go.dev)
.PHONY: vulncheck
vulncheck:
	$(GOTOOL) govulncheck ./...

## tools: compile all pinned tools once (warms the build cache)
.PHONY: tools
tools:
	cd internal/tools && $(GO) build -o /dev/null tool
	cd internal/tools/mdatagen && $(GO) build -o /dev/null tool
	cd internal/tools/telemetrygen && $(GO) build -o /dev/null tool

## clean: remove build outputs and coverage files
.PHONY: clean
clean:
	rm -rf bin $(BUILD_DIR) .tools coverage.out coverage.html *.coverprofile

## help: list targets
.PHONY: help
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)
