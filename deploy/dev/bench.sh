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
rows="$build/bench-rows.txt"
: >"$rows"

# The baseline binary of BenchmarkIdle (start peak and time, idle CPU and
# RSS): the code before issue 14's wallet change, built once per ref.
baseline_ref=${BASELINE_REF:-c22136b13d05a831fbf280908a7e942342d34285}
if commit=$(git rev-parse --verify -q "$baseline_ref^{commit}"); then
	if [ "$(cat "$build/baseline/ref" 2>/dev/null)" != "$commit" ]; then
		src=$(mktemp -d)
		mkdir -p "$build/baseline"
		git archive "$commit" | tar -x -C "$src"
		(cd "$src" && go build -o "$build/baseline/blackbox" ./cmd/blackbox)
		rm -rf "$src"
		echo "$commit" >"$build/baseline/ref"
	fi
	export BLACKBOX_BENCH_BASELINE_BIN="$build/baseline/blackbox"
else
	echo "bench: baseline $baseline_ref not in this repository: no baseline for BenchmarkIdle"
fi

# The release binary (make release) against the default build: its size
# here, its start (a configured seller's) in BenchmarkIdle.
if [ -x "$build/release/blackbox" ]; then
	export BLACKBOX_BENCH_RELEASE_BIN="$build/release/blackbox"
	awk -v d="$(stat -c %s "$build/bin/blackbox")" -v r="$(stat -c %s "$build/release/blackbox")" 'BEGIN {
		printf "BENCHROW release binary size = %.1f MB|%.1f MB (make build)|%.2f|< 45 MB|%s\n", r/1e6, d/1e6, r/d, (r < 45e6 ? "yes" : "no")
	}' | tee -a "$rows"
fi

# The benchmarks against real daemons live in files tagged integration.
go test -tags "${TEST_TAGS:-integration}" -run '^$' -bench . -benchmem -count 1 -timeout 30m ${BENCHFLAGS:-} ./... | tee "$out"

# The summary: every benchmark that reports its own metrics (ratios against
# a baseline measured side by side in the same benchmark, rates, sizes), one
# line each. Goals: sandbox trivial job vs ctr run ratio <= 1.1; channel
# updates vs raw btcec sign+verify ratio >= 0.5; BenchmarkSubmitToResult: a
# warm trivial job through the market vs a direct sandbox run, interleaved,
# ratio <= 1.2 (x-direct, with the buyer's discover, negotiate, fund,
# transfer, run and results ms/op; its log line adds the CLI's and the
# seller's phases), and the cold first job < 2 s (BENCHROW lines;
# BLACKBOX_BENCH_CLI_BASELINE_BIN adds an older submit side by side);
# BenchmarkProposalsPerSecond: proposals/s a real
# seller answers (accept or reject for capacity), informational;
# BenchmarkNAT (issue 10, in internal/netlab's internet of network
# namespaces): hole-punch success of 20 fresh buyers for a seller behind
# the cone NAT (goal >= 90%) and the symmetric NAT (expected to fail),
# serve start to offer found from another home, a trivial job home to home
# vs loopback, idle CPU/RSS of a node behind NAT holding relay slots and of
# the relay serving 20 (goal < 1% of a core, < 80 MiB).
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

echo
echo "== goals (BENCHROW lines of $out and $rows)"
"$here/benchtable.sh" "$rows" "$out"
