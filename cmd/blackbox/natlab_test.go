//go:build integration

package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/netlab"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// reachLab is a small netlab internet with nodes that force nothing: two
// nodes on the public segment (A, the bootstrap, and B) and a node at
// home behind a cone NAT; a second cone home is left empty for a test's
// own hosts. No btcd, no containerd: these nodes only find out how they
// are reached.
type reachLab struct {
	bin              string
	pubA, pubB, home *proc
	a, b, h          status
	hostA, hostB     *netlab.Host
	homeHost         *netlab.Host
	homeNet, home2   *netlab.Home
}

func startReachLab(t testing.TB) *reachLab {
	t.Helper()
	in := netlab.New(t)
	l := &reachLab{bin: binary(t), hostA: in.PublicHost("a"), hostB: in.PublicHost("b"),
		homeNet: in.Home("home", netlab.Cone), home2: in.Home("home2", netlab.Cone)}
	start := func(h *netlab.Host, args ...string) *proc {
		listen := []string{"--listen", fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", nodePort), "--listen", fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", nodePort)}
		return serveIn(t, append(h.Prefix(), l.bin), []string{"BLACKBOX_MDNS=false"}, append(listen, args...)...)
	}
	l.pubA = start(l.hostA)
	l.a = waitStatus(t, l.bin, l.pubA)
	boot := fmt.Sprintf("/ip4/%s/tcp/%d/p2p/%s", l.hostA.IP, nodePort, l.a.PeerID)
	l.pubB = start(l.hostB, "--bootstrap", boot)
	l.homeHost = l.homeNet.Host("node")
	l.home = start(l.homeHost, "--bootstrap", boot)
	l.b, l.h = waitStatus(t, l.bin, l.pubB), waitStatus(t, l.bin, l.home)
	// On failure, each node's reachability and log tail (registered
	// after the nodes, so it runs while they still answer).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range []*proc{l.pubA, l.pubB, l.home} {
			out, err := runCLI(t, l.bin, "status", "--json", "--data-dir", p.dir)
			t.Logf("%s: %v %s\n%s", p.dir, err, out, tail(p.logs.String(), 15))
		}
	})
	return l
}

// TestAutoNATBehindARealNAT: nothing forced. Two nodes on the public
// segment and a node at home behind a NAT router (real processes in
// network namespaces, netlab). Each asks the others to dial it back
// (AutoNAT): the public nodes learn they are public, run the DHT as
// servers and the relay service; the home node learns it is behind NAT,
// runs the DHT as a client, finds a public node's relay among its peers
// (no network.relays) and reserves a slot, its circuit address among its
// addresses, and shows the address peers see it at (its router's) as
// observed. doctor says both from AutoNAT's verdict.
func TestAutoNATBehindARealNAT(t *testing.T) {
	l := startReachLab(t)
	for _, x := range []struct {
		p  *proc
		ip string
	}{{l.pubA, l.hostA.IP.String()}, {l.pubB, l.hostB.IP.String()}} {
		var s reachStatus
		waitFor(t, 150*time.Second, "a public verdict on "+x.ip, func() bool {
			s = reachOf(t, l.bin, x.p)
			return s.Reachability.State == "public" && s.Reachability.RelayService && s.Reachability.DHTMode == "server"
		})
		r := s.Reachability
		if r.Source != "autonat" || r.HolePunching != "not_needed" || !slices.ContainsFunc(r.PublicAddrs, func(a string) bool { return strings.Contains(a, "/"+x.ip+"/") }) {
			t.Fatalf("public node at %s: %+v", x.ip, r)
		}
		if st, detail, _ := doctorReach(t, l.bin, x.p); st != "ok" || !strings.Contains(detail, "peers dialled it back") {
			t.Fatalf("public node's doctor: %s %q", st, detail)
		}
	}

	var h reachStatus
	router := "/" + l.homeNet.Router.IP.String() + "/"
	waitFor(t, 150*time.Second, "the home node's verdict, relay slot and observed address", func() bool {
		h = reachOf(t, l.bin, l.home)
		return h.Reachability.State == "private" && slices.ContainsFunc(h.Reachability.PublicAddrs, func(a string) bool { return strings.Contains(a, router) })
	})
	r := h.Reachability
	if r.Source != "autonat" || len(r.Relays) == 0 || r.DHTMode != "client" || r.RelayService || r.PublicAddrsFrom != "observed" {
		t.Fatalf("home node: %+v", r)
	}
	for _, relay := range r.Relays {
		if relay != l.a.PeerID && relay != l.b.PeerID {
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
	forward := fmt.Sprintf("forward tcp %d, udp %d on the router to %s", nodePort, nodePort, l.homeHost.IP)
	if st, detail, fix := doctorReach(t, l.bin, l.home); st != "warn" || !strings.Contains(detail, "AutoNAT: peers could not dial it back") ||
		!strings.Contains(detail, "through relay ") || !strings.Contains(detail, "seen by peers at") || !strings.Contains(fix, forward) {
		t.Fatalf("home node's doctor: %s %q fix %q", st, detail, fix)
	}
}

// TestHolePunchBetweenTwoHomes: DCUtR through real NATs. A blackbox node
// at home (behind one cone NAT) holds a relay slot on a public node. A
// libp2p host at home2 (behind another; TestHolePunchHelper, run in that
// namespace) knows only its circuit address: it connects through the
// relay, and the two punch through both NATs to a direct connection. The
// node counts the hole punch in status --json. (BenchmarkNAT measures the
// success rate over 20 attempts, for a cone and a symmetric NAT.)
func TestHolePunchBetweenTwoHomes(t *testing.T) {
	l := startReachLab(t)
	var circuit string
	waitFor(t, 150*time.Second, "the home node's relay slot", func() bool {
		r := reachOf(t, l.bin, l.home).Reachability
		for _, a := range r.RelayAddrs {
			if r.State == "private" && strings.Contains(a, "/tcp/") {
				circuit = a + "/p2p/" + l.h.PeerID
			}
		}
		return circuit != ""
	})
	relay, _, _ := strings.Cut(circuit, "/p2p-circuit")
	cmd := l.home2.Host("punch").Command(os.Args[0], "-test.run=^TestHolePunchHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "BLACKBOX_HP_RELAY="+relay, "BLACKBOX_HP_TARGET="+circuit, "BLACKBOX_HP_WAIT=20s")
	out, err := cmd.CombinedOutput()
	// Direct: to the home router's address, not through a relay.
	if err != nil || !strings.Contains(string(out), "DIRECT /ip4/"+l.homeNet.Router.IP.String()+"/") {
		t.Fatalf("home2's host: %v\n%s", err, out)
	}
	t.Logf("home2: %s", strings.TrimSpace(string(out)))
	waitFor(t, 30*time.Second, "the hole punch counted", func() bool {
		r := reachOf(t, l.bin, l.home).Reachability
		return r.HolePunch.Attempts >= 1 && r.HolePunch.Successes >= 1
	})
}

// TestHolePunchHelper is TestHolePunchBetweenTwoHomes's host at home2: it
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
