#!/usr/bin/env bash
# containerd.sh — Debian's containerd for development and tests.
#
#   containerd.sh install     apt-get install containerd runc busybox-static runsc crun if missing
#                             (apt-get update only when a package is missing); idempotent.
#   containerd.sh start DIR   start a private containerd: --root DIR/root --state DIR/state
#                             --address DIR/containerd.sock, config DIR/config.toml with the
#                             CRI plugin disabled, log DIR/containerd.log, pid DIR/containerd.pid.
#                             Waits until the socket answers. Idempotent when already running.
#   containerd.sh stop DIR    stop it (SIGTERM, then SIGKILL after 10 s); succeeds when stopped.
#
# Needs root (containerd mounts snapshots and creates cgroups).
set -euo pipefail

die() { echo "containerd.sh: $*" >&2; exit 1; }

install() {
	local missing=()
	command -v containerd >/dev/null 2>&1 || missing+=(containerd)
	command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
	[ -x /bin/busybox ] || missing+=(busybox-static)
	# The other runtime tiers: gVisor (runsc) and crun. The node offers only
	# those its probe job proves, and the runtime tests cover each installed.
	command -v runsc >/dev/null 2>&1 || missing+=(runsc)
	command -v crun >/dev/null 2>&1 || missing+=(crun)
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "need root to install ${missing[*]}"
	echo "containerd.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	# Debian's package starts the system containerd; the tests use a private one,
	# so leave the system service as the package set it up.
}

running() { # running DIR: the daemon of DIR is alive
	local pid
	[ -f "$1/containerd.pid" ] || return 1
	pid=$(cat "$1/containerd.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

answers() { # answers DIR: the socket accepts a version request
	ctr --address "$1/containerd.sock" --timeout 1s version >/dev/null 2>&1
}

start() {
	local dir=$1
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ "$(id -u)" = 0 ] || die "containerd needs root"
	command -v containerd >/dev/null 2>&1 || die "containerd not installed: run '$0 install'"
	if running "$dir" && answers "$dir"; then
		return 0
	fi
	if running "$dir"; then # alive but not answering: restart it
		stop "$dir"
	fi
	mkdir -p "$dir/root" "$dir/state"
	cat >"$dir/config.toml" <<-EOF
		version = 2
		root = "$dir/root"
		state = "$dir/state"
		disabled_plugins = ["io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$dir/containerd.sock"
	EOF
	rm -f "$dir/containerd.sock"
	setsid containerd --config "$dir/config.toml" --root "$dir/root" --state "$dir/state" \
		--address "$dir/containerd.sock" >>"$dir/containerd.log" 2>&1 </dev/null &
	echo $! >"$dir/containerd.pid"
	for _ in $(seq 1 150); do
		if answers "$dir"; then
			return 0
		fi
		running "$dir" || { tail -n 20 "$dir/containerd.log" >&2; die "containerd exited; log: $dir/containerd.log"; }
		sleep 0.1
	done
	tail -n 20 "$dir/containerd.log" >&2
	die "containerd did not answer on $dir/containerd.sock within 15 s"
}

stop() {
	local dir=$1 pid
	[ -d "$dir" ] || return 0
	if running "$dir"; then
		pid=$(cat "$dir/containerd.pid")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/containerd.pid" "$dir/containerd.sock" "$dir/containerd.sock.ttrpc"
}

case "${1:-}" in
install) install ;;
start) [ $# -eq 2 ] || die "usage: $0 start DIR"; start "$2" ;;
stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
*) die "usage: $0 install | start DIR | stop DIR" ;;
esac
