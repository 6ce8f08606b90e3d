#!/usr/bin/env bash
# demo.sh BUILD_DIR — a whole blackbox market on this one machine.
#
# Starts three seller nodes on loopback (the first is the others' bootstrap
# peer), shows what each measured and offers, then asks the market from a
# fourth node, the buyer, and prints the offers it found, cheapest first.
# Everything runs under BUILD_DIR/demo and is stopped and removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(mkdir -p "${1:-$here/../build}" && cd "${1:-$here/../build}" && pwd)
bin="$build/bin/blackbox"
demo="$build/demo"
[ -x "$bin" ] || { echo "demo: $bin missing: run make build" >&2; exit 1; }

rm -rf "$demo"; mkdir -p "$demo"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$demo"
}
trap cleanup EXIT

# Sell whole cores whatever the load (the demo machine is busy building),
# sample every second, and keep mDNS off so the bootstrap path is shown.
export BLACKBOX_METER_CPU_BASIS=allocatable BLACKBOX_METER_RESERVE_CPU=0 \
	BLACKBOX_METER_SAMPLE_INTERVAL=1s BLACKBOX_MDNS=false

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

start() { # start NAME [serve flags...]
	local name=$1; shift
	"$bin" serve --data-dir "$demo/$name" --listen /ip4/127.0.0.1/tcp/0 "$@" >"$demo/$name.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		"$bin" status --data-dir "$demo/$name" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "demo: node $name did not start:" >&2; cat "$demo/$name.log" >&2; exit 1
}

step "starting seller 1 (bootstrap peer)"
start seller1 --region eu
boot=$("$bin" status --json --data-dir "$demo/seller1" | sed -n 's/.*"\(\/ip4\/127.0.0.1\/tcp\/[^"]*\)".*/\1/p' | head -1)
echo "bootstrap address: $boot"

step "starting sellers 2 and 3 with different prices"
BLACKBOX_METER_PRICING_CORE_HOUR=15 start seller2 --region eu --bootstrap "$boot"
BLACKBOX_METER_PRICING_CORE_HOUR=30 BLACKBOX_METER_MAX_CPU=1 start seller3 --region us --bootstrap "$boot"

step "what seller 2 measured and offers (blackbox status)"
sleep 2
"$bin" status --data-dir "$demo/seller2"

step "starting the buyer's node"
BLACKBOX_METER_MAX_CPU=0 start buyer --bootstrap "$boot"

step "blackbox market (the buyer's view, cheapest first)"
for _ in $(seq 30); do
	out=$("$bin" market --data-dir "$demo/buyer" --timeout 5s)
	[ "$(printf '%s\n' "$out" | grep -c '^12D3')" -ge 3 ] && break
	sleep 1
done
printf '%s\n' "$out"

step "blackbox market --cpu 2 --region eu --max-price 40"
"$bin" market --data-dir "$demo/buyer" --cpu 2 --region eu --max-price 40

step "done: stopping the nodes"
