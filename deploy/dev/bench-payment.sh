#!/usr/bin/env bash
# bench-payment.sh [BUILD_DIR] — payment benchmarks, for `make bench`.
# Prints the raw `go test -bench` lines, then a summary:
#   channel updates/s (sign + verify with the script engine + persist), next to
#   raw btcec sign+verify/s measured in the same run, and their ratio (goal >= 0.5),
#   once with an in-memory store, once with the node's bbolt store on one channel
#   (one fdatasync'd payment-log append per update on each side; the seller's signature check
#   runs while its append is synced), and once on bbolt with 32 channels paying
#   at once (group commit: concurrent updates share one log write; its raw baseline
#   runs on as many goroutines); then as two nodes make an update (the
#   store and backup, plus what a node records beside the channel: the
#   contract's Paid, the buyer's job, the seller's earnings, now committed
#   after the update; the buyer sends the update while its own write of it
#   runs, Payer.PayAsync: BenchmarkPaymentUpdateNode*, the goals' figures,
#   with the daemon's GOMAXPROCS: store.RaiseProcs, a scheduler slot per
#   DB writer blocked in fdatasync),
#   next to the same with those records committed on the update's way and
#   the buyer's write before the send, as before (…Sync); and on-chain
#   vbytes per contract for 1, 10, 100
#   contracts per channel.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
export GOTOOLCHAIN=local
benchtime=${BENCHTIME:-2s}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench 'ChannelUpdate|RawSignVerify|VBytesPerContract' -benchtime "$benchtime" ./pkg/payment | tee -a "$out"
go test -run '^$' -bench 'PaymentUpdateBolt|PaymentUpdateNode|PaymentUpdateFloor|PaymentUpdateCheckOverlap' -benchtime "$benchtime" ./internal/store | tee -a "$out"
echo
echo "== payment summary =="
awk '
  function metric(name,   i) { for (i = 1; i < NF; i++) if ($(i+1) == name) return $i; return "" }
  /^BenchmarkChannelUpdateBackedUp/ { printf "updates/s (memory store, backup file rewritten per update): %.0f\n", metric("updates/s") }
  /^BenchmarkChannelUpdate(-[0-9]+)?[ \t]/ { printf "updates/s (memory store):  %8.0f   raw sign+verify/s %8.0f   ratio %.2f\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateBolt(-[0-9]+)?[ \t]/ { printf "updates/s (store, 1 ch):   %8.0f   raw sign+verify/s %8.0f   ratio %.2f\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateBoltBackedUp(-[0-9]+)?[ \t]/ { printf "updates/s (+backup, 1 ch): %8.0f   raw sign+verify/s %8.0f   ratio %.2f   (store and backup only)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateNode(-[0-9]+)?[ \t]/ { printf "updates/s (node, 1 ch):    %8.0f   raw sign+verify/s %8.0f   ratio %.2f   (as two nodes make it; goal >= 0.4)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateNodeSync(-[0-9]+)?[ \t]/ { printf "updates/s (node, 1 ch, records on the way): %8.0f   raw %8.0f   ratio %.2f   (before)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateNodeParallel(-[0-9]+)?[ \t]/ { printf "updates/s (node, 32 ch):   %8.0f   raw sign+verify/s %8.0f   ratio %.2f   (as two nodes make it; goal >= 0.5)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateNodeParallelSync/ { printf "updates/s (node, 32 ch, records on the way): %7.0f   raw %8.0f   ratio %.2f   (before)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateBoltParallel(-[0-9]+)?[ \t]/ { printf "updates/s (store, 32 ch):  %8.0f   raw sign+verify/s %8.0f   ratio %.2f   (parallel, both sides)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateBoltParallelBackedUp/ { printf "updates/s (+backup, 32 ch): %7.0f   raw sign+verify/s %8.0f   ratio %.2f   (store and backup only)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateFloor/ { printf "floor, 1 ch:               %8.0f   raw sign+verify/s %8.0f   ratio %.2f   (sign, verify and two fdatasyncs one after the other; the store overlaps verify with the second)\n", metric("updates/s"), metric("raw_signverify/s"), metric("ratio") }
  /^BenchmarkPaymentUpdateCheckOverlap/ { printf "check overlapping write, 1 ch: %6.0f   checked then written %8.0f   ratio %.2f   (same process, interleaved)\n", metric("overlap_updates/s"), metric("sequential_updates/s"), metric("overlap/sequential") }
  /^BenchmarkVBytesPerContract/ { split($1, p, "/"); sub(/-[0-9]+$/, "", p[2]); printf "vbytes/contract %-14s %8.2f\n", p[2], metric("vB/contract") }
' "$out"
