#!/usr/bin/env bash
# bench-sandbox.sh BUILD_DIR — pkg/sandbox benchmarks against a private containerd:
#   BenchmarkTrivialJob          `true` through pkg/sandbox vs `ctr run --rm` of the same
#                                image on the same daemon, interleaved; reports both and
#                                their ratio (goal <= 1.1)
#   BenchmarkTrivialJobNoUserNS  the same with sandbox.userns off
#   BenchmarkConcurrent20        20 trivial jobs at once; reports jobs/s
#   BenchmarkRuntimes            a trivial job under runc, crun and runsc, interleaved with
#                                `ctr run --rm` (runc); prints the runs side by side with each
#                                ratio to ctr's, a runtime the probe refuses as "unavailable:
#                                <reason>", and BENCHROW lines (sandbox runc ÷ ctr run <= 1.1,
#                                sandbox crun ÷ ctr run runc <= 0.7) for benchtable.sh
# Uses BLACKBOX_TEST_CONTAINERD if set, otherwise starts BUILD_DIR/containerd (and stops it
# again if it was not running). Needs root. Results also go to BUILD_DIR/bench/sandbox.txt.
# BENCHTIME (default 30x) and BENCHCOUNT (default 3) tune the run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(mkdir -p "${1:-$here/../../build}" && cd "${1:-$here/../../build}" && pwd)
export GOTOOLCHAIN=local
if [ -z "${BLACKBOX_TEST_CONTAINERD:-}" ]; then
	dir="$build/containerd"
	if ! ctr --address "$dir/containerd.sock" --timeout 1s version >/dev/null 2>&1; then
		"$here/containerd.sh" start "$dir"
		trap '"$here/containerd.sh" stop "$dir"' EXIT
	fi
	export BLACKBOX_TEST_CONTAINERD="$dir/containerd.sock"
fi
mkdir -p "$build/bench"
cd "$here/../.."
go test -tags integration -run '^$' -bench 'TrivialJob|Concurrent20|Runtimes' -benchtime "${BENCHTIME:-30x}" \
	-count "${BENCHCOUNT:-3}" -timeout 30m ./pkg/sandbox 2>&1 |
	grep -v 'level=' | tee "$build/bench/sandbox.txt"
