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
go test -run '^$' -bench . -benchmem -count 1 -timeout 30m ${BENCHFLAGS:-} ./... | tee "$out"

# ratio NAME MEASURED BASELINE GOAL: ns/op of two benchmarks, measured/baseline.
ratio() {
	awk -v name="$1" -v a="$2" -v b="$3" -v goal="$4" '
		$1 ~ "^"a"(-[0-9]+)?$" { x = $3 }
		$1 ~ "^"b"(-[0-9]+)?$" { y = $3 }
		END {
			if (x == "" || y == "") { printf "%-44s missing (%s or %s)\n", name, a, b; exit }
			printf "%-44s %8.3f   (%s %.0f ns/op vs %s %.0f ns/op; goal %s)\n", name, x / y, a, x, b, y, goal
		}' "$out"
}
# rate NAME MEASURED BASELINE GOAL: ops/s ratio, measured/baseline.
rate() {
	awk -v name="$1" -v a="$2" -v b="$3" -v goal="$4" '
		$1 ~ "^"a"(-[0-9]+)?$" { x = $3 }
		$1 ~ "^"b"(-[0-9]+)?$" { y = $3 }
		END {
			if (x == "" || y == "") { printf "%-44s missing (%s or %s)\n", name, a, b; exit }
			printf "%-44s %8.3f   (%s %.0f ns/op vs %s %.0f ns/op; goal %s)\n", name, y / x, a, x, b, y, goal
		}' "$out"
}

echo
echo "== ratios (from $out)"
ratio "offer sign+verify vs raw ed25519 sign+verify" BenchmarkOpenOffer BenchmarkRawEd25519 "informational"
rate "channel updates/s vs raw btcec sign+verify" BenchmarkChannelUpdate BenchmarkRawSignVerify ">= 0.5"
ratio "sandbox trivial job vs ctr run" BenchmarkSandboxTrivialJob BenchmarkCtrRunTrivialJob "<= 1.1"
grep -E '^Benchmark(Sample|VBytes|SandboxConcurrent|Proposals|SubmitToResult)' "$out" || true
