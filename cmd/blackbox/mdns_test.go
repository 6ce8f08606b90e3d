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

// netns makes a network namespace pair joined by a veth link, each end with
// an address on a private /24, and removes them at cleanup. It needs root
// and iproute2.
func netnsPair(t *testing.T) (a, b string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (network namespaces), and CI runs as root")
		}
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2's ip is needed: %v", err)
	}
	id := os.Getpid() % 10000
	a, b = fmt.Sprintf("bbmdns%da", id), fmt.Sprintf("bbmdns%db", id)
	va, vb := fmt.Sprintf("bbv%da", id), fmt.Sprintf("bbv%db", id)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", a).Run()
		exec.Command("ip", "netns", "del", b).Run()
	})
	sh("netns", "add", a)
	sh("netns", "add", b)
	sh("link", "add", va, "type", "veth", "peer", "name", vb)
	sh("link", "set", va, "netns", a)
	sh("link", "set", vb, "netns", b)
	for _, x := range []struct{ ns, dev, addr string }{{a, va, "10.231.7.1/24"}, {b, vb, "10.231.7.2/24"}} {
		sh("-n", x.ns, "addr", "add", x.addr, "dev", x.dev)
		sh("-n", x.ns, "link", "set", x.dev, "up")
		sh("-n", x.ns, "link", "set", "lo", "up")
	}
	return a, b
}

// TestMDNSFindsLANPeersWithoutBootstrap runs two real nodes on a private
// two-host LAN (network namespaces joined by veth) with no bootstrap address:
// mDNS must connect them both ways. (Offers need btcd, which is not on that
// LAN; TestThreeProcessesFindEachOther covers the market.)
func TestMDNSFindsLANPeersWithoutBootstrap(t *testing.T) {
	bin := binary(t)
	nsA, nsB := netnsPair(t)
	var env []string
	start := func(ns string) *proc {
		p := serveIn(t, []string{"ip", "netns", "exec", ns, bin}, env, "--listen", "/ip4/0.0.0.0/tcp/0")
		return p
	}
	a, b := start(nsA), start(nsB)
	sa, sb := waitStatus(t, bin, a), waitStatus(t, bin, b)
	deadline := time.Now().Add(30 * time.Second)
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
}
