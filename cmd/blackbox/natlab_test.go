//go:build integration

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// natLab builds a small internet from network namespaces: a core router
// joining two "public" hosts (6.0.0.2 and 7.0.0.2: globally
// routable-looking addresses that never leave the namespaces, since
// go-libp2p tests and hole-punches towards public addresses only) and two
// home routers, each with its own "public" address (8.0.0.2, 9.0.0.2), a
// LAN behind it with one host (192.168.77.2, 192.168.78.2), a masquerade
// (nftables) and the firewall of a home router: nothing comes in from the
// WAN but replies. Linux's source NAT keeps a socket's port where it can:
// an endpoint-independent mapping, where hole punching works; with
// symmetricB, home B's router picks a random port for each connection
// (endpoint-dependent, "symmetric"), where it does not. It returns
// the public hosts and the homes, and removes everything at cleanup. It
// needs root, iproute2 and nftables.
func natLab(t testing.TB, symmetricB bool) (public1, public2, home, home2 string) {
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
	core, natA, natB := ns("core"), ns("natA"), ns("natB")
	public1, public2, home, home2 = ns("pubA"), ns("pubB"), ns("homeA"), ns("homeB")
	all := []string{core, natA, natB, public1, public2, home, home2}
	t.Cleanup(func() {
		for _, n := range all {
			exec.Command("ip", "netns", "del", n).Run()
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	in := func(n string, args ...string) { run(append([]string{"ip", "netns", "exec", n}, args...)...) }
	for _, n := range all {
		run("ip", "netns", "add", n)
		run("ip", "-n", n, "link", "set", "lo", "up")
	}
	// link joins host to router on a /24: host gets addr and routes
	// everything through the router's gw; it returns the host's device.
	nlinks := 0
	link := func(router, gw, host, addr string) string {
		nlinks++
		dev := fmt.Sprintf("bb%d-%d", id, nlinks)
		run("ip", "link", "add", dev+"r", "type", "veth", "peer", "name", dev)
		run("ip", "link", "set", dev+"r", "netns", router)
		run("ip", "link", "set", dev, "netns", host)
		run("ip", "-n", router, "addr", "add", gw+"/24", "dev", dev+"r")
		run("ip", "-n", host, "addr", "add", addr+"/24", "dev", dev)
		run("ip", "-n", router, "link", "set", dev+"r", "up")
		run("ip", "-n", host, "link", "set", dev, "up")
		run("ip", "-n", host, "route", "add", "default", "via", gw)
		return dev
	}
	link(core, "6.0.0.1", public1, "6.0.0.2")
	link(core, "7.0.0.1", public2, "7.0.0.2")
	for _, r := range []struct{ nat, wan, lan, host string }{{natA, "8.0.0", "192.168.77", home}, {natB, "9.0.0", "192.168.78", home2}} {
		wan := link(core, r.wan+".1", r.nat, r.wan+".2")
		link(r.nat, r.lan+".1", r.host, r.lan+".2")
		in(r.nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		in(r.nat, "nft", "add table ip nat")
		in(r.nat, "nft", "add chain ip nat post { type nat hook postrouting priority 100 ; }")
		masq := "masquerade"
		if symmetricB && r.nat == natB {
			masq = "masquerade random"
		}
		in(r.nat, "nft", "add rule ip nat post oifname "+wan+" "+masq)
		in(r.nat, "nft", "add table ip filter")
		for _, hook := range []string{"input", "forward"} {
			in(r.nat, "nft", "add chain ip filter "+hook+" { type filter hook "+hook+" priority 0 ; }")
			in(r.nat, "nft", "add rule ip filter "+hook+" iifname "+wan+" ct state new drop")
		}
	}
	in(core, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return public1, public2, home, home2
}

// TestAutoNATBehindARealNAT: nothing forced. Two nodes on the "public"
// side and a node at home behind a masquerading router (real processes in
// network namespaces). Each asks the others to dial it back (AutoNAT): the
// public nodes learn they are public, run the DHT as servers and the relay
// service; the home node learns it is behind NAT, runs the DHT as a client,
// finds the public node's relay among its peers (no network.relays) and
// reserves a slot, its circuit address among its addresses. doctor says
// both from AutoNAT's verdict.
func TestAutoNATBehindARealNAT(t *testing.T) {
	l := startLab(t, false)
	bin, pubA, pubB, home, sa, sb := l.bin, l.pubA, l.pubB, l.home, l.a, l.b

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
func waitUntilOr(t testing.TB, bin string, timeout time.Duration, what string, cond func() bool, nodes ...*proc) {
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

// TestHolePunchBetweenTwoHomes: DCUtR through real NATs. A blackbox node
// at home A (behind 8.0.0.2) holds a relay slot on a public node. A libp2p
// host at home B (behind 9.0.0.2; a helper process of this test binary in
// that namespace) knows only its circuit address: it connects through the
// relay, and the two punch through both NATs to a direct connection. The
// node counts the hole punch in status --json.
func TestHolePunchBetweenTwoHomes(t *testing.T) {
	home, nsHome2 := punchLab(t, false)
	out, err := punchOnce(t, home.circuit, nsHome2)
	// Direct: to home A's router's address, not through a relay.
	if err != nil || !strings.Contains(string(out), "DIRECT /ip4/8.0.0.2/") {
		t.Fatalf("home B's host: %v\n%s\nhome A: %+v\n%s", err, out, reachOf(t, home.bin, home.p).Reachability, tail(home.p.logs.String(), 20))
	}
	t.Logf("home B: %s", strings.TrimSpace(string(out)))
	waitUntilOr(t, home.bin, 30*time.Second, "the hole punch counted", func() bool {
		r := reachOf(t, home.bin, home.p).Reachability
		return r.HolePunch.Attempts >= 1 && r.HolePunch.Successes >= 1
	}, home.p)
}

// punchTarget is the node at home A, with its circuit address.
type punchTarget struct {
	bin, circuit string
	p            *proc
}

// punchLab starts natLab's public nodes and a node at home A, and waits
// for that node's relay slot; it returns the node and home B's namespace.
func punchLab(t testing.TB, symmetricB bool) (punchTarget, string) {
	l := startLab(t, symmetricB)
	bin, pubA, pubB, home, hs := l.bin, l.pubA, l.pubB, l.home, l.h
	var h reachStatus
	waitUntilOr(t, bin, 150*time.Second, "the home node's relay slot", func() bool {
		h = reachOf(t, bin, home)
		return h.Reachability.State == "private" && slices.ContainsFunc(h.Reachability.RelayAddrs, func(a string) bool { return strings.Contains(a, "/tcp/") })
	}, pubA, pubB, home)
	var circuit string
	for _, a := range h.Reachability.RelayAddrs {
		if strings.Contains(a, "/tcp/") {
			circuit = a + "/p2p/" + hs.PeerID
		}
	}
	return punchTarget{bin: bin, circuit: circuit, p: home}, l.nsHome2
}

// lab is natLab with nodes: public nodes A (the bootstrap) and B, and a
// node at home A, all in auto mode (nothing forced).
type lab struct {
	bin              string
	pubA, pubB, home *proc
	a, b, h          status
	nsHome2          string
}

func startLab(t testing.TB, symmetricB bool) lab {
	l := lab{bin: binary(t)}
	nsA, nsB, nsHome, nsHome2 := natLab(t, symmetricB)
	l.nsHome2 = nsHome2
	env := []string{"BLACKBOX_MDNS=false"}
	listen := []string{"--listen", "/ip4/0.0.0.0/tcp/7460", "--listen", "/ip4/0.0.0.0/udp/7460/quic-v1"}
	in := func(ns string, args ...string) *proc {
		return serveIn(t, []string{"ip", "netns", "exec", ns, l.bin}, env, append(slices.Clone(listen), args...)...)
	}
	l.pubA = in(nsA)
	l.a = waitStatus(t, l.bin, l.pubA)
	boot := "/ip4/6.0.0.2/tcp/7460/p2p/" + l.a.PeerID
	l.pubB = in(nsB, "--bootstrap", boot)
	l.home = in(nsHome, "--bootstrap", boot)
	l.b, l.h = waitStatus(t, l.bin, l.pubB), waitStatus(t, l.bin, l.home)
	return l
}

// punchOnce runs TestHolePunchHelper in namespace ns against circuit: a
// fresh host connects through the relay and waits for a direct connection.
func punchOnce(t testing.TB, circuit, ns string) ([]byte, error) {
	relay, _, _ := strings.Cut(circuit, "/p2p-circuit")
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestHolePunchHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "BLACKBOX_HP_RELAY="+relay, "BLACKBOX_HP_TARGET="+circuit, "BLACKBOX_HP_WAIT=20s")
	return cmd.CombinedOutput()
}

// BenchmarkHolePunch: hole punch success between two homes, each behind
// its own NAT router (natLab): BLACKBOX_BENCH_PUNCHES (20) fresh hosts at
// home B each reach the node at home A through its relay and wait up to
// 20 s for DCUtR's direct connection; home B's NAT is endpoint-independent
// ("cone") or, in the second case, symmetric (a random port per
// connection), where hole punching is expected to fail.
func BenchmarkHolePunch(b *testing.B) {
	n := 20
	if s := os.Getenv("BLACKBOX_BENCH_PUNCHES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("BLACKBOX_BENCH_PUNCHES=%q: want a count >= 1", s)
		}
		n = v
	}
	for _, symmetric := range []bool{false, true} {
		name := "cone NAT to cone NAT"
		if symmetric {
			name = "cone NAT to symmetric NAT"
		}
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			home, ns := punchLab(b, symmetric)
			ok := 0
			for i := range n {
				out, err := punchOnce(b, home.circuit, ns)
				if err == nil && strings.Contains(string(out), "DIRECT ") {
					ok++
				}
				b.Logf("punch %d: %v", i+1, err == nil)
			}
			r := reachOf(b, home.bin, home.p).Reachability
			b.Logf("%s: %d of %d direct; the node counted %d hole punches, %d succeeded", name, ok, n, r.HolePunch.Attempts, r.HolePunch.Successes)
			fmt.Printf("BENCHROW hole punch success, %s = %d/%d|-|-|-|-\n", name, ok, n)
		})
	}
}

// TestHolePunchHelper is TestHolePunchBetweenTwoHomes's host at home B: it
// does nothing unless that test runs it (with BLACKBOX_HP_RELAY and
// BLACKBOX_HP_TARGET set). It connects to the relay, then to the target
// through it, waits for a direct connection and prints it.
func TestHolePunchHelper(t *testing.T) {
	relayAddr, target := os.Getenv("BLACKBOX_HP_RELAY"), os.Getenv("BLACKBOX_HP_TARGET")
	if relayAddr == "" || target == "" {
		return // not run by TestHolePunchBetweenTwoHomes
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"),
		libp2p.EnableHolePunching(), libp2p.ForceReachabilityPrivate())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	wait := 90 * time.Second
	if d, err := time.ParseDuration(os.Getenv("BLACKBOX_HP_WAIT")); err == nil {
		wait = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ri, err := peer.AddrInfoFromString(relayAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctx, *ri); err != nil {
		t.Fatalf("connect to the relay: %v", err)
	}
	ti, err := peer.AddrInfoFromString(target)
	if err != nil {
		t.Fatal(err)
	}
	// Identify tells this host its address outside the NAT, which it
	// offers the other side to punch towards.
	time.Sleep(2 * time.Second)
	if err := h.Connect(ctx, *ti); err != nil {
		t.Fatalf("connect through the relay: %v", err)
	}
	for ctx.Err() == nil {
		for _, c := range h.Network().ConnsToPeer(ti.ID) {
			if !c.Stat().Limited {
				fmt.Printf("DIRECT %s\n", c.RemoteMultiaddr())
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no direct connection to %s: %v", ti.ID, h.Network().ConnsToPeer(ti.ID))
}
