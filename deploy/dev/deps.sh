#!/usr/bin/env bash
# deps.sh BUILD_DIR — install everything the tests and the demo need, if missing:
# Debian's containerd, runc and busybox-static, and btcd into BUILD_DIR/bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
"$here/containerd.sh" install
"$here/btcd.sh" install "$build"
# iproute2's ip makes the network namespaces of the LAN (mDNS) test.
if ! command -v ip >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq iproute2 >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get install -y -qq iproute2 >/dev/null; }
fi
# Debian's prometheus (with promtool) checks deploy/prometheus and scrapes
# real nodes in the metrics test, which starts its own server on a free
# port with its own storage: the packaged service is not needed.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi
