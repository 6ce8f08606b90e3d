#!/usr/bin/env bash
# bench.sh BUILD_DIR — every benchmark, against real daemons, then the ratios
# the issues set goals for: each pair is a measured path and its baseline,
# run side by side in the same `go test -bench` invocation on this machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(mkdir -p "${1:-$here/../../build}" && cd "${1:-$here/../../build}" && pwd)
ulimit -n 65536 2>/dev/null || true

"$here/containerd.sh" start "$build/containerd"
trap '"$here/containerd.sh" stop "$build/containerd"' EXIT
export BLACKBOX_TEST_CONTAINERD="$build/containerd/containerd.sock"
export BLACKBOX_TEST_BTCD="$build/bin/btcd"
export BLACKBOX_TEST_BIN="$build/bin/blackbox"
export PATH="$build/bin:$PATH"

cd "$here/../.."
out="$build/bench.txt"
# The benchmarks against real daemons live in files tagged integration.
go test -tags "${TEST_TAGS:-integration}" -run '^$' -bench . -benchmem -count 1 -timeout 30m ${BENCHFLAGS:-} ./... | tee "$out"

# The summary: every benchmark that reports its own metrics (ratios against
# a baseline measured side by side in the same benchmark, rates, sizes), one
# line each. Goals: sandbox trivial job vs ctr run ratio <= 1.1; channel
# updates vs raw btcec sign+verify ratio >= 0.5; submit-to-result vs direct
# sandbox run ratio <= 2 (BenchmarkSubmitToResult/market: x-direct, against
# BenchmarkSubmitToResult/direct, with discover, negotiate, fund, transfer,
# run and results ms/op); BenchmarkProposalsPerSecond: proposals/s a real
# seller answers (accept or reject for capacity), informational.
echo
echo "== summary (from $out)"
awk '/^Benchmark/ {
	line = sprintf("%-40s", $1); extra = ""
	for (i = 3; i < NF; i += 2) {
		unit = $(i+1)
		if (unit == "ns/op" || unit == "B/op" || unit == "allocs/op") continue
		extra = extra sprintf("  %s %s", $i, unit)
	}
	if (extra != "") print line extra
}' "$out"
