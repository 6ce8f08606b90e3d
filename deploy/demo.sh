#!/usr/bin/env bash
# demo.sh BUILD_DIR — a whole blackbox market on this one machine.
#
# Starts a private containerd and a btcd regtest node, three sellers and one
# buyer on loopback (the buyer and the cheapest seller on the embedded light
# client with no RPC settings, syncing from btcd over P2P; the others on
# btcd's RPC); funds the buyer's wallet by mining; submits a job with
# `blackbox submit`; prints its output, the seller's signed receipt and the
# cost; closes the seller's payment channel and shows the payout confirmed on
# chain. Everything lives under BUILD_DIR/demo and is stopped and removed at
# the end (KEEP=1 keeps it for a look).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(mkdir -p "${1:-$here/../build}" && cd "${1:-$here/../build}" && pwd)
bin="$build/bin/blackbox"
demo="$build/demo"
[ -x "$bin" ] || { echo "demo: $bin missing: run make build" >&2; exit 1; }

# Bold headings on a terminal only: no escape codes in a log or a pipe.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
bb() { local node=$1; shift; "$bin" --data-dir "$demo/$node" "$@"; }

pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	"$here/dev/btcd.sh" stop "$demo/btcd" >/dev/null 2>&1
	"$here/dev/containerd.sh" stop "$demo/containerd" >/dev/null 2>&1
	[ "${KEEP:-}" = 1 ] || rm -rf "$demo"
}
trap cleanup EXIT
"$here/dev/btcd.sh" stop "$demo/btcd" >/dev/null 2>&1 || true
"$here/dev/containerd.sh" stop "$demo/containerd" >/dev/null 2>&1 || true
rm -rf "$demo"; mkdir -p "$demo"

step "starting a private containerd and a btcd regtest node"
"$here/dev/containerd.sh" start "$demo/containerd" >/dev/null
# free_port prints a loopback TCP port nothing listens on (bash only: no python).
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}
export BTCD_RPC_PORT=${BTCD_RPC_PORT:-$(free_port)}
export BTCD_P2P_PORT=${BTCD_P2P_PORT:-$(free_port)}
"$here/dev/btcd.sh" start "$demo/btcd" >/dev/null
"$here/dev/btcd.sh" mine "$demo/btcd" 1 >/dev/null
set -a; . "$demo/btcd/env"; set +a
echo "containerd: $demo/containerd/containerd.sock, btcd regtest on $BLACKBOX_PAYMENT_RPC_HOST (RPC) and $BTCD_P2P_HOST (P2P)"

# Every node: this containerd, this btcd, one confirmation, a demo wallet
# passphrase; CPU sold by allocation (the machine is busy building) and
# sampled every second; short billing intervals so payments are visible. The
# demo's one job pays a start fee of 1000 sat: at the default 200 sat, one job
# holds less than its channel's close costs (342 sat at 2 sat/vB), and no close
# could pay it out (docs/payout.md).
export BLACKBOX_SANDBOX_ADDRESS="$demo/containerd/containerd.sock" \
	BLACKBOX_PAYMENT_CONFIRMATIONS=1 BLACKBOX_WALLET_PASSPHRASE=demo-passphrase \
	BLACKBOX_METER_CPU_BASIS=allocatable BLACKBOX_METER_RESERVE_CPU=0 \
	BLACKBOX_METER_SAMPLE_INTERVAL=1s BLACKBOX_OFFER_BILLING_INTERVAL=5s BLACKBOX_MDNS=false \
	BLACKBOX_PAYMENT_FALLBACK_FEE_RATE=2 BLACKBOX_METER_PRICING_START_FEE=1000

# LIGHT=1 start ...: the node runs the embedded light client (neutrino)
# with no RPC settings at all, btcd's P2P port its one Bitcoin peer.
start() { # start NAME [serve flags...]
	local name=$1; shift
	local run=()
	if [ "${LIGHT:-}" = 1 ]; then
		run=(env -u BLACKBOX_PAYMENT_RPC_HOST -u BLACKBOX_PAYMENT_RPC_USER -u BLACKBOX_PAYMENT_RPC_PASS
			-u BLACKBOX_PAYMENT_RPC_NOTLS BLACKBOX_PAYMENT_BACKEND=neutrino BLACKBOX_PAYMENT_PEERS="$BTCD_P2P_HOST")
	fi
	"${run[@]}" "$bin" serve --data-dir "$demo/$name" --listen /ip4/127.0.0.1/tcp/0 "$@" >"$demo/$name.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 300); do
		bb "$name" status >/dev/null 2>&1 && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "demo: node $name did not start:" >&2; tail -20 "$demo/$name.log" >&2; exit 1
}

step "starting three sellers (the first is the others' bootstrap peer) and a buyer"
start seller1 --region eu
boot=$(bb seller1 status --json | sed -n 's/.*"\(\/ip4\/127.0.0.1\/tcp\/[^"]*\)".*/\1/p' | head -1)
LIGHT=1 BLACKBOX_METER_PRICING_CORE_HOUR=15 start seller2 --region eu --bootstrap "$boot"
BLACKBOX_METER_PRICING_CORE_HOUR=30 start seller3 --region us --bootstrap "$boot"
LIGHT=1 BLACKBOX_METER_MAX_CPU=0 start buyer --bootstrap "$boot"
bb seller2 status | grep -E '^(Peer ID|On offer|Buying|Bitcoin):'
bb buyer status | grep -E '^Bitcoin:'

step "funding the buyer's wallet by mining to it"
addr=$(bb buyer wallet address)
echo "buyer address: $addr"
"$here/dev/btcd.sh" stop "$demo/btcd" >/dev/null
"$here/dev/btcd.sh" start "$demo/btcd" "$addr" >/dev/null
"$here/dev/btcd.sh" mine "$demo/btcd" 110 >/dev/null
for _ in $(seq 100); do
	bal=$(bb buyer wallet balance --json 2>/dev/null | sed -n 's/.*"spendable_sat": *\([0-9]*\).*/\1/p')
	[ "${bal:-0}" -gt 0 ] && break
	sleep 0.2
done
echo "buyer spendable balance: ${bal:-0} sat"
sleep 2 # let the wallet settle on the new tip
[ "${bal:-0}" -gt 0 ] || { echo "demo: the buyer's wallet saw no funds" >&2; exit 1; }

# A miner: regtest makes a block every second, as the network would.
( while sleep 1; do "$here/dev/btcd.sh" mine "$demo/btcd" 1 >/dev/null 2>&1 || true; done ) &
pids+=($!)

step "the market as the buyer sees it (blackbox market)"
for _ in $(seq 30); do
	out=$(bb buyer market --timeout 5s)
	[ "$(printf '%s\n' "$out" | grep -c '^12D3')" -ge 3 ] && break
	sleep 1
done
printf '%s\n' "$out"

step "building a job image (busybox) and submitting a job"
go run ./pkg/sandbox/sandboxtest/busybox-image "$demo/job.tar" >/dev/null 2>&1 ||
	(cd "$here/.." && go run ./pkg/sandbox/sandboxtest/busybox-image "$demo/job.tar" >/dev/null)
echo '$ blackbox submit --cpus 1 --memory 256MiB --time 2m --max-price 2000 --image job.tar -- sh -c '"'"'echo hello > /out/hello.txt; echo hello from $(hostname)'"'"''
(cd "$demo" && bb buyer submit --cpus 1 --memory 256MiB --time 2m --max-price 2000 --image job.tar --out "$demo/results" \
	-- sh -c 'echo hello > /out/hello.txt; echo hello from $(hostname)')

step "the results, with the seller's signed receipt"
ls -l "$demo/results" "$demo/results/out"
echo "out/hello.txt: $(cat "$demo/results/out/hello.txt")"
job=$(bb buyer jobs --json | sed -n 's/^    "id": "\([^"]*\)".*/\1/p' | head -1)
bb buyer job "$job"

step "the seller's view (blackbox contracts)"
seller=$(bb buyer job "$job" --json | sed -n 's/^  "seller": "\([^"]*\)".*/\1/p')
for s in seller1 seller2 seller3; do
	[ "$(bb "$s" status --json | sed -n 's/.*"peer_id": "\([^"]*\)".*/\1/p')" = "$seller" ] && snode=$s
done
bb "$snode" contracts

step "the seller closes its payment channel: payout on chain"
# What a close costs and what it leaves, before it is made.
bb "$snode" channels
bb "$snode" wallet balance
chan=$(bb "$snode" channels --json | sed -n 's/^    "id": "\([^"]*\)".*/\1/p' | head -1)
txid=$(bb "$snode" channel close "$chan" | awk '{print $NF}')
echo "close transaction: $txid"
for _ in $(seq 60); do
	state=$(bb "$snode" channels --json | sed -n 's/^    "state": "\([^"]*\)".*/\1/p' | head -1)
	[ "$state" = closed ] && break
	sleep 1
done
bb "$snode" channels
[ "$state" = closed ] || { echo "demo: the close did not confirm" >&2; exit 1; }
. "$demo/btcd/env"
"$build/bin/btcctl" --configfile=/dev/null --regtest --notls --rpcserver="$BLACKBOX_PAYMENT_RPC_HOST" \
	--rpcuser="$BLACKBOX_PAYMENT_RPC_USER" --rpcpass="$BLACKBOX_PAYMENT_RPC_PASS" getrawtransaction "$txid" 1 |
	grep -E '"(txid|confirmations|value)"' | sed 's/^ */  /'
echo "payout confirmed on chain."
bb "$snode" wallet balance

step "done: stopping everything"
