# blackbox — see README.md. Every target installs what it needs itself.
SHELL := /bin/bash
export GOTOOLCHAIN := local
BUILD := $(CURDIR)/build
BIN := $(BUILD)/bin
export PATH := $(BIN):/usr/local/go/bin:$(PATH)
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/blackbox-market/blackbox/internal/cli.Version=$(VERSION)

.PHONY: all build release deps test test-unit demo bench lint sim fuzz clean

all: build

# build: the binary the tests and the demo run, build/bin/blackbox: the
# release's code (its RELEASE_TAGS, below), with the symbol table and DWARF
# kept for debugging. Without the tags the linker keeps every symbol, and
# an idle node's RSS was 61 MiB instead of 42 (the binary's pages in
# memory: 51 MiB of it), so the tests ran other code and the benchmarks
# measured other memory than what ships.
build:
	@mkdir -p $(BIN)
	$(GO) build -tags $(RELEASE_TAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/blackbox ./cmd/blackbox

# release: the binary to ship, build/release/blackbox. no_dynamic_plugins
# leaves out the containerd client's plugin loader (package plugin's import
# makes the linker keep and export every symbol); grpcnotrace leaves out
# grpc's request tracing (off unless grpc.EnableTracing is set, which
# nothing here does): its golang.org/x/net/trace registers /debug pages
# rendered with html/template, whose reflect MethodByName turns off the
# linker's removal of unused methods in the whole program (7 MB; with
# protobuf >= 1.36.12, which dropped a MethodByName("Methods") that did the
# same under Go 1.26; TestReleaseKeepsDeadCodeElimination guards it);
# -trimpath the build's paths, -s -w the symbol table and DWARF: under half
# the size of `build`'s, same start-up time (`make bench` compares both).
RELEASE_TAGS := no_dynamic_plugins,grpcnotrace
release:
	@mkdir -p $(BUILD)/release
	$(GO) build -tags $(RELEASE_TAGS) -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(BUILD)/release/blackbox ./cmd/blackbox

# deps installs the system packages (containerd, runc, busybox-static) and the
# btcd regtest node into build/bin. Idempotent.
deps:
	deploy/dev/deps.sh $(BUILD)

# Test tiers (README "Testing"). The rule for every new test:
#   - it needs root, a daemon (containerd, btcd), the blackbox binary or any
#     other real process: its file starts with `//go:build integration`
#     (every cmd/blackbox/*_test.go does; `make lint` checks that);
#   - it runs in-process but takes more than about a second (big in-process
#     networks, the full simulation): it skips when testing.Short().
# test-unit builds without the tag and runs with -short: no root, no
# daemons, no processes, well under 30 s. test builds with the tag and
# without -short: everything; CI (.ci/run) runs it as root, where nothing
# that needs root or a daemon may skip.
TEST_TAGS := integration

# test: everything, against real containerd, real btcd and real blackbox
# processes. Starts and stops its own private daemons under build/.
test: deps build
	TEST_TAGS=$(TEST_TAGS) deploy/dev/test.sh $(BUILD)

# test-unit: the fast tier only (no root, no daemons, no processes).
test-unit:
	$(GO) test -short -count=1 ./...

demo: deps build
	deploy/demo.sh $(BUILD)

bench: deps build release
	TEST_TAGS=$(TEST_TAGS) deploy/dev/bench.sh $(BUILD)

# sim: the market simulation of the shipped selection and spot-check policy,
# each goal against its target, per seed (SEEDS=1-7 for the full table).
SEEDS ?= 1
sim:
	$(GO) run ./cmd/blackbox-sim -seeds $(SEEDS)

fuzz:
	deploy/dev/fuzz.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags $(TEST_TAGS) ./...
	@for f in cmd/blackbox/*_test.go; do head -1 "$$f" | grep -qx '//go:build $(TEST_TAGS)' || { echo "$$f: end-to-end tests start with //go:build $(TEST_TAGS)"; exit 1; }; done

clean:
	rm -rf $(BUILD)
