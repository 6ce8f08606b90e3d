#!/usr/bin/env bash
# deps.sh BUILD_DIR — install everything the tests and the demo need, if missing:
# Debian's containerd, runc and busybox-static, and btcd into BUILD_DIR/bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
"$here/containerd.sh" install
"$here/btcd.sh" install "$build"
# need CMD PACKAGE installs Debian's PACKAGE (without recommends) when CMD is
# missing; apt's lists are refreshed only when the first try fails.
need() {
	command -v "$1" >/dev/null 2>&1 && return
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null; apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
}
# iproute2's ip and tc make the network namespaces, veth links, bridges and
# rate limits of internal/netlab's internet (the NAT, mDNS and impairment
# tests); Debian's nftables does its routers' NAT, loss and partitions.
need ip iproute2
need nft nftables
# miniupnpd-nftables is the UPnP IGD / NAT-PMP daemon netlab runs on a
# home router (the port mapping test). The package is the program only:
# it ships no service, and netlab starts it per router in a namespace.
need miniupnpd miniupnpd-nftables
# Debian's prometheus (with promtool) checks deploy/prometheus and scrapes
# real nodes in the metrics test, which starts its own server on a free
# port with its own storage: the packaged service is not needed.
need promtool prometheus
need prometheus prometheus
# Debian's chromium: the dashboard test drives it headless (chromedp).
need chromium chromium
