#!/usr/bin/env bash
# deps.sh BUILD_DIR — install everything the tests and the demo need, if missing:
# Debian's containerd, runc and busybox-static, and btcd into BUILD_DIR/bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
"$here/containerd.sh" install
"$here/btcd.sh" install "$build"
