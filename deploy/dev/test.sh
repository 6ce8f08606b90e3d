#!/usr/bin/env bash
# test.sh BUILD_DIR — the whole test suite against real daemons.
# Starts a private containerd under BUILD_DIR/containerd, runs
# `go test -tags integration ./...` (every tier: files tagged
# `//go:build integration` need root, daemons or real processes; see the
# Makefile's test rule) with the environment those tests read, and stops
# the daemon. Not -short: the slow in-process tests run too.
#   TEST_TAGS                 build tags (default integration)
#   BLACKBOX_TEST_CONTAINERD  containerd socket for sandbox tests
#   BLACKBOX_TEST_BTCD        btcd binary; payment tests start their own regtest nodes
#   BLACKBOX_TEST_BIN         the blackbox binary for multi-process tests
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(mkdir -p "${1:-$here/../../build}" && cd "${1:-$here/../../build}" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$here/containerd.sh" start "$build/containerd"
trap '"$here/containerd.sh" stop "$build/containerd"' EXIT

export BLACKBOX_TEST_CONTAINERD="$build/containerd/containerd.sock"
export BLACKBOX_TEST_BTCD="$build/bin/btcd"
export BLACKBOX_TEST_BIN="$build/bin/blackbox"
cd "$here/../.."
go test -tags "${TEST_TAGS:-integration}" -count=1 -timeout 80m -parallel 4 ${GOTESTFLAGS:-} ./...
