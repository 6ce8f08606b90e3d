#!/usr/bin/env bash
# btcd.sh — a private btcd regtest node for tests, benchmarks and the demo.
#
#   btcd.sh install BUILD_DIR   go install btcd and btcctl v0.26.2 into BUILD_DIR/bin
#                               (skipped when both are there)
#   btcd.sh start DIR [ADDR]    start regtest in DIR with --rejectnonstd, --txindex,
#                               RPC on 127.0.0.1 without TLS, mining to ADDR
#                               (default: a fixed regtest address); prints the
#                               connection settings and writes them to DIR/env
#   btcd.sh mine DIR N          mine N blocks; prints the new height
#   btcd.sh stop DIR            stop the node started in DIR (no-op if not running)
#
# Environment: BTCD_RPC_PORT (default 18334), BTCD_RPC_USER/BTCD_RPC_PASS
# (default blackbox/blackbox), BTCD_BIN (default: next to this build, then PATH).
# Go tests do not need this script: pkg/payment/btcdtest starts its own nodes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=v0.26.2
# The private key 0x01's P2WPKH address: a valid regtest address nobody needs.
default_addr=bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080

bin_dir() {
  local b="$here/../../build/bin"
  [ -x "$b/btcd" ] && { (cd "$b" && pwd); return; }
  dirname "$(command -v btcd)"
}

cmd=${1:-}
case "$cmd" in
install)
  build=${2:?usage: btcd.sh install BUILD_DIR}
  mkdir -p "$build/bin"
  if [ -x "$build/bin/btcd" ] && [ -x "$build/bin/btcctl" ]; then
    exit 0
  fi
  echo "btcd.sh: installing btcd $version into $build/bin"
  GOTOOLCHAIN=local GOBIN=$(cd "$build/bin" && pwd) GOFLAGS=-mod=mod \
    go install "github.com/btcsuite/btcd@$version" "github.com/btcsuite/btcd/cmd/btcctl@$version"
  ;;
start)
  dir=${2:?usage: btcd.sh start DIR [MINING_ADDR]}
  addr=${3:-$default_addr}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/btcd.pid" ] && kill -0 "$(cat "$dir/btcd.pid")" 2>/dev/null; then
    echo "btcd.sh: already running (pid $(cat "$dir/btcd.pid"))"; cat "$dir/env"; exit 0
  fi
  bin=${BTCD_BIN:-$(bin_dir)/btcd}
  port=${BTCD_RPC_PORT:-18334}
  # P2P on loopback for light clients (compact filters are served) when
  # BTCD_P2P_PORT is set; no P2P listener otherwise.
  listen=--nolisten
  [ -n "${BTCD_P2P_PORT:-}" ] && listen="--listen=127.0.0.1:$BTCD_P2P_PORT"
  user=${BTCD_RPC_USER:-blackbox}
  pass=${BTCD_RPC_PASS:-blackbox}
  : >"$dir/btcd.conf"
  "$bin" --configfile="$dir/btcd.conf" --regtest --datadir="$dir/data" --logdir="$dir/logs" \
    --rpcuser="$user" --rpcpass="$pass" --rpclisten="127.0.0.1:$port" --notls \
    "$listen" --rejectnonstd --txindex --miningaddr="$addr" >"$dir/btcd.out" 2>&1 &
  echo $! >"$dir/btcd.pid"
  cat >"$dir/env" <<ENV
BLACKBOX_PAYMENT_NETWORK=regtest
BLACKBOX_PAYMENT_RPC_HOST=127.0.0.1:$port
BLACKBOX_PAYMENT_RPC_USER=$user
BLACKBOX_PAYMENT_RPC_PASS=$pass
BLACKBOX_PAYMENT_RPC_NOTLS=true
ENV
  [ -n "${BTCD_P2P_PORT:-}" ] && echo "BTCD_P2P_HOST=127.0.0.1:$BTCD_P2P_PORT" >>"$dir/env"
  for _ in $(seq 100); do
    if "$(dirname "$bin")/btcctl" --configfile=/dev/null --regtest --notls --rpcserver="127.0.0.1:$port" \
      --rpcuser="$user" --rpcpass="$pass" getblockcount >/dev/null 2>&1; then
      echo "btcd.sh: regtest node up (pid $(cat "$dir/btcd.pid")), mining to $addr; settings in $dir/env:"
      cat "$dir/env"
      exit 0
    fi
    kill -0 "$(cat "$dir/btcd.pid")" 2>/dev/null || { cat "$dir/btcd.out"; exit 1; }
    sleep 0.1
  done
  echo "btcd.sh: RPC did not come up; see $dir/btcd.out" >&2
  exit 1
  ;;
mine)
  dir=${2:?usage: btcd.sh mine DIR N}
  n=${3:?usage: btcd.sh mine DIR N}
  # shellcheck disable=SC1091
  . "$dir/env"
  ctl="$(bin_dir)/btcctl --configfile=/dev/null --regtest --notls --rpcserver=$BLACKBOX_PAYMENT_RPC_HOST --rpcuser=$BLACKBOX_PAYMENT_RPC_USER --rpcpass=$BLACKBOX_PAYMENT_RPC_PASS"
  $ctl generate "$n" >/dev/null
  $ctl getblockcount
  ;;
stop)
  dir=${2:?usage: btcd.sh stop DIR}
  [ -f "$dir/btcd.pid" ] || exit 0
  pid=$(cat "$dir/btcd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/btcd.pid"
  ;;
*)
  sed -n '2,15p' "$0"; exit 2 ;;
esac
