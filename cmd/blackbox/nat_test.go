//go:build integration

package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// natLab builds a small internet from network namespaces: two "public"
// hosts (6.0.0.2 and 7.0.0.2: globally routable-looking addresses that
// never leave the namespaces, since go-libp2p tests and hole-punches
// towards public addresses only) and a home (192.168.77.2), all joined by
// a router namespace that routes between the public ones and masquerades
// (nftables) the home behind its own address 8.0.0.1. It returns the
// namespaces and removes everything at cleanup. It needs root, iproute2
// and nftables.
func natLab(t *testing.T) (public1, public2, home string) {
	var router string
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (network namespaces, nftables), and CI runs as root")
		}
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install iproute2 nftables): %v", tool, err)
		}
	}
	id := os.Getpid() % 10000
	ns := func(what string) string { return fmt.Sprintf("bb%s%d", what, id) }
	public1, public2, router, home = ns("pubA"), ns("pubB"), ns("rtr"), ns("home")
	t.Cleanup(func() {
		for _, n := range []string{public1, public2, router, home} {
			exec.Command("ip", "netns", "del", n).Run()
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, n := range []string{public1, public2, router, home} {
		run("ip", "netns", "add", n)
		run("ip", "-n", n, "link", "set", "lo", "up")
	}
	// link joins host to the router: host gets addr, the router gw, and
	// the host routes everything through it.
	link := func(host, dev, addr, gw string) {
		rdev := dev + "r"
		run("ip", "link", "add", rdev, "type", "veth", "peer", "name", dev)
		run("ip", "link", "set", rdev, "netns", router)
		run("ip", "link", "set", dev, "netns", host)
		run("ip", "-n", router, "addr", "add", gw+"/24", "dev", rdev)
		run("ip", "-n", host, "addr", "add", addr+"/24", "dev", dev)
		run("ip", "-n", router, "link", "set", rdev, "up")
		run("ip", "-n", host, "link", "set", dev, "up")
		run("ip", "-n", host, "route", "add", "default", "via", gw)
	}
	link(public1, fmt.Sprintf("bba%d", id), "6.0.0.2", "6.0.0.1")
	link(public2, fmt.Sprintf("bbb%d", id), "7.0.0.2", "7.0.0.1")
	link(home, fmt.Sprintf("bbh%d", id), "192.168.77.2", "192.168.77.1")
	// The home's router address on the "internet": the masquerade's source.
	run("ip", "-n", router, "addr", "add", "8.0.0.1/32", "dev", "lo")
	in := func(n string, args ...string) { run(append([]string{"ip", "netns", "exec", n}, args...)...) }
	in(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	in(router, "nft", "add", "table", "ip", "nat")
	in(router, "nft", "add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100; }")
	in(router, "nft", "add", "rule", "ip", "nat", "post", "ip", "saddr", "192.168.77.0/24", "snat", "to", "8.0.0.1")
	return public1, public2, home
}

// TestAutoNATBehindARealNAT: nothing forced. A node on the "public" side
// and a node at home behind a masquerading router (real processes in
// network namespaces). Each asks the other to dial it back (AutoNAT): the
// public node learns it is public, runs the DHT as a server and the relay
// service; the home node learns it is behind NAT, runs the DHT as a client,
// finds the public node's relay among its peers (no network.relays) and
// reserves a slot, its circuit address among its addresses. doctor says
// both from AutoNAT's verdict.
func TestAutoNATBehindARealNAT(t *testing.T) {
	bin := binary(t)
	nsA, nsB, nsHome := natLab(t)
	env := []string{"BLACKBOX_MDNS=false"}
	listen := []string{"--listen", "/ip4/0.0.0.0/tcp/7460", "--listen", "/ip4/0.0.0.0/udp/7460/quic-v1"}
	pubA := serveIn(t, []string{"ip", "netns", "exec", nsA, bin}, env, listen...)
	sa := waitStatus(t, bin, pubA)
	boot := "/ip4/6.0.0.2/tcp/7460/p2p/" + sa.PeerID
	pubB := serveIn(t, []string{"ip", "netns", "exec", nsB, bin}, env, append(listen, "--bootstrap", boot)...)
	sb := waitStatus(t, bin, pubB)
	home := serveIn(t, []string{"ip", "netns", "exec", nsHome, bin}, env, append(listen, "--bootstrap", boot)...)
	waitStatus(t, bin, home)

	for _, x := range []struct {
		p  *proc
		ip string
	}{{pubA, "6.0.0.2"}, {pubB, "7.0.0.2"}} {
		var s reachStatus
		waitUntilOr(t, bin, 150*time.Second, "a public verdict", func() bool {
			s = reachOf(t, bin, x.p)
			return s.Reachability.State == "public" && s.Reachability.RelayService && s.Reachability.DHTMode == "server"
		}, pubA, pubB, home)
		if s.Reachability.Source != "autonat" || !slices.ContainsFunc(s.Reachability.PublicAddrs, func(a string) bool { return strings.Contains(a, x.ip) }) {
			t.Fatalf("public node at %s: %+v", x.ip, s.Reachability)
		}
		if st, detail, _ := doctorReach(t, bin, x.p); st != "ok" || !strings.Contains(detail, "peers dialled it back") {
			t.Fatalf("public node's doctor: %s %q", st, detail)
		}
	}

	var h reachStatus
	waitUntilOr(t, bin, 150*time.Second, "the home node's verdict and relay slot", func() bool {
		h = reachOf(t, bin, home)
		return h.Reachability.State == "private"
	}, pubA, pubB, home)
	r := h.Reachability
	if r.Source != "autonat" || len(r.Relays) == 0 || r.DHTMode != "client" || r.RelayService {
		t.Fatalf("home node: %+v", r)
	}
	for _, relay := range r.Relays {
		if relay != sa.PeerID && relay != sb.PeerID {
			t.Fatalf("home node's relay %s is neither public node", relay)
		}
	}
	if !slices.ContainsFunc(r.RelayAddrs, func(a string) bool {
		return strings.HasSuffix(a, "/p2p-circuit") && !strings.Contains(a, "/127.0.0.1/")
	}) {
		t.Fatalf("home node's relay addresses: %v", r.RelayAddrs)
	}
	if !slices.ContainsFunc(h.Addrs, func(a string) bool { return strings.Contains(a, "/p2p-circuit/") }) {
		t.Fatalf("home node's addresses lack the circuit: %v", h.Addrs)
	}
	if st, detail, fix := doctorReach(t, bin, home); st != "warn" || !strings.Contains(detail, "AutoNAT: peers could not dial it back") ||
		!strings.Contains(detail, "through relay ") || !strings.Contains(fix, "forward tcp 7460, udp 7460 on the router to 192.168.77.2") {
		t.Fatalf("home node's doctor: %s %q fix %q", st, detail, fix)
	}
}

// waitUntilOr waits for cond, and on timeout fails with the reachability
// and the log tail of each node.
func waitUntilOr(t *testing.T, bin string, timeout time.Duration, what string, cond func() bool, nodes ...*proc) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range nodes {
				fmt.Fprintf(&b, "\n%s: %+v\n%s", p.dir, reachOf(t, bin, p).Reachability, tail(p.logs.String(), 15))
			}
			t.Fatalf("timed out after %s waiting for %s:%s", timeout, what, b.String())
		}
	}
}
