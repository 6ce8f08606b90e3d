//go:build integration

package main

import (
	"slices"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/netlab"
)

// TestMDNSFindsLANPeersWithoutBootstrap: mDNS stays a LAN feature. Two real
// nodes on one home LAN (netlab: network namespaces on a bridge behind a
// NAT router) with no bootstrap address connect both ways by mDNS; a node
// on another home's LAN, also with mDNS on, sees neither (and they do not
// see it). (Offers need btcd, which is not on that LAN;
// TestThreeProcessesFindEachOther covers the market.)
func TestMDNSFindsLANPeersWithoutBootstrap(t *testing.T) {
	bin := binary(t)
	in := netlab.New(t)
	home, other := in.Home("mdns1", netlab.Cone), in.Home("mdns2", netlab.Cone)
	start := func(h *netlab.Host) *proc {
		return serveIn(t, append(h.Prefix(), bin), nil, "--listen", "/ip4/0.0.0.0/tcp/0")
	}
	a, b, c := start(home.Host("a")), start(home.Host("b")), start(other.Host("c"))
	sa, sb, sc := waitStatus(t, bin, a), waitStatus(t, bin, b), waitStatus(t, bin, c)
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := waitStatus(t, bin, a)
		if slices.Contains(s.Peers, sb.PeerID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node A never found node B by mDNS; A's peers %v\nA log:\n%s", s.Peers, a.logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	// And the other way round.
	for s := waitStatus(t, bin, b); !slices.Contains(s.Peers, sa.PeerID); s = waitStatus(t, bin, b) {
		if time.Now().After(deadline) {
			t.Fatalf("node B never found node A by mDNS; B's peers %v", s.Peers)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The other home's node has announced and asked all this time (mDNS
	// restarts after 5 s, 10 s, …): give it another round, then nobody may
	// know anybody across the routers.
	time.Sleep(6 * time.Second)
	for _, x := range []struct {
		name string
		p    *proc
		not  []string
	}{{"A", a, []string{sc.PeerID}}, {"B", b, []string{sc.PeerID}}, {"C", c, []string{sa.PeerID, sb.PeerID}}} {
		s := waitStatus(t, bin, x.p)
		for _, id := range x.not {
			if slices.Contains(s.Peers, id) {
				t.Errorf("node %s (peers %v) found %s across the home routers", x.name, s.Peers, id)
			}
		}
	}
}
