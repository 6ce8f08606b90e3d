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
# Debian's chromium: the dashboard test drives it headless (chromedp).
if ! command -v chromium >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get install -y -qq chromium >/dev/null; }
fi
