//go:build integration

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/netlab"
)

// TestPortMapping: a node at a home whose router runs a real UPnP IGD /
// NAT-PMP daemon (miniupnpd, netlab's Home.UPnP) with network.port_mapping
// on (the default) gets its listen port mapped on the router; its status
// says so with the router's address; a node on the public segment that
// knows only that address connects to it directly (this internet has no
// relay: no node serves one); AutoNAT, with the public peers dialling it
// back, finds it public. The same node at another such home with
// port_mapping off maps nothing, says off, and nobody gets in.
//
// At a home whose router speaks NAT-PMP only (Home.NATPMP) the node gets
// no mapping and says no_router: go-libp2p v0.51's NAT-PMP discovery
// asks go-netroute (v0.4.0) for the route to 0.0.0.0 to find the default
// gateway, and go-netroute's Linux router refuses an unspecified
// destination ("destination IP must be specified"), so go-libp2p never
// sends a NAT-PMP request on Linux; only UPnP works. netlab's TestUPnP
// shows the router itself maps through NAT-PMP. When a go-libp2p (or a
// port mapper of ours) fixes this, this part fails: assert the mapping.
func TestPortMapping(t *testing.T) {
	m := newMarketMining(t, 0)
	in := netlab.New(t)
	w := &world{market: m, net: in}
	// No wallets (no btcd at that address: payments are off) and no
	// relay service anywhere, so that a connection is a direct one.
	base := []string{"BLACKBOX_METER_MAX_CPU=0", "BLACKBOX_NETWORK_RELAY_SERVICE=off"}
	w.rpc = "127.0.0.1:9"
	on, off := in.Home("upnp", netlab.Cone), in.Home("upnp-off", netlab.Cone)
	for _, hm := range []*netlab.Home{on, off} {
		if err := hm.UPnP(); err != nil {
			t.Fatal(err)
		}
	}
	pmp := in.Home("natpmp", netlab.Cone)
	if err := pmp.NATPMP(); err != nil {
		t.Fatal(err)
	}
	w.bootHost = in.PublicHost("boot")
	w.boot = w.at(w.bootHost, base)
	w.bootAddr = w.addrOf(w.boot, w.bootHost)
	// AutoNAT v1 wants answers from several peers: a few public ones.
	for i := range publicPeers {
		w.at(in.PublicHost(fmt.Sprintf("peer%d", i)), base, "--bootstrap", w.bootAddr)
	}
	sellerHost := on.Host("seller")
	began := time.Now()
	seller := w.at(sellerHost, base, "--bootstrap", w.bootAddr)
	closed := w.at(off.Host("closed"), append(slices.Clone(base), "BLACKBOX_NETWORK_PORT_MAPPING=false"), "--bootstrap", w.bootAddr)
	pmpNode := w.at(pmp.Host("pmpnode"), base, "--bootstrap", w.bootAddr)

	sellerID := seller.peerID() // waits for its API
	waitStatus(t, m.bin, closed.proc)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("miniupnpd at home %s:\n%s", on.Name, on.Router.LogUPnP())
		}
	})
	// The router maps a WAN port of its choice (go-libp2p asks for a
	// random one) to the seller's TCP listen port.
	wanPrefix := fmt.Sprintf("/ip4/%s/tcp/", on.Router.IP)
	var r api.Reachability
	var wan string
	waitFor(t, 60*time.Second, "the seller's port mapping", func() bool {
		r = w.reach(seller)
		for _, a := range r.MappedAddrs {
			if strings.HasPrefix(a, wanPrefix) {
				wan = a
			}
		}
		return r.PortMapping == "mapped" && wan != ""
	})
	t.Logf("seller at %s: port_mapping %s %v, %.1f s after its start", on.Router.IP, r.PortMapping, r.MappedAddrs, time.Since(began).Seconds())
	wanPort := strings.TrimPrefix(wan, wanPrefix)
	rules, err := on.Router.PortMappings()
	if want := fmt.Sprintf("tcp %s %s:%d", wanPort, sellerHost.IP, nodePort); err != nil || !slices.Contains(rules, want) {
		t.Fatalf("the router's mappings %q (%v) do not forward tcp %s to the seller", rules, err, wanPort)
	}
	out, err := seller.cli("status")
	if err != nil || !strings.Contains(out, "port mapping mapped ") || !strings.Contains(out, wan) {
		t.Fatalf("status does not say the mapping: %v\n%s", err, out)
	}

	// A node on the public segment whose only address for the seller is
	// the mapped one connects to it; the router let it in.
	probeHost := in.PublicHost("probe")
	if err := on.Router.Watch(probeHost.IP); err != nil {
		t.Fatal(err)
	}
	probe := w.at(probeHost, base, "--bootstrap", wan+"/p2p/"+sellerID)
	waitFor(t, 60*time.Second, "the probe's connection to the seller's mapped address", func() bool {
		st := waitStatus(t, m.bin, probe.proc)
		return slices.Contains(st.Peers, sellerID)
	})
	if n, err := on.Router.Traffic(probeHost.IP); err != nil || n == 0 {
		t.Fatalf("the router let %d bytes in from the probe (%v): not a direct connection", n, err)
	}

	// AutoNAT: the public peers dial the mapped address back.
	waitFor(t, 60*time.Second, "AutoNAT's verdict public", func() bool {
		r = w.reach(seller)
		return r.State == "public"
	})
	t.Logf("seller: %s at %v", r.State, r.PublicAddrs)
	// doctor exits 1 here (payments are off): its report is on stdout,
	// the mapped addresses in no particular order.
	if out, err := exec.Command(m.bin, "--data-dir", seller.dir, "doctor").Output(); !strings.Contains(string(out), "router maps ") || !strings.Contains(string(out), wan) {
		t.Errorf("doctor does not say the router maps %s (%v):\n%s", wan, err, out)
	}
	if !slices.Contains(r.PublicAddrs, wan) {
		t.Errorf("public addresses %v lack the mapped %s", r.PublicAddrs, wan)
	}

	// port_mapping: false: nothing mapped, and the router keeps it closed.
	if c := w.reach(closed); c.PortMapping != "off" || len(c.MappedAddrs) > 0 {
		t.Fatalf("port_mapping false: %s %v", c.PortMapping, c.MappedAddrs)
	}
	if rules, err := off.Router.PortMappings(); err != nil || len(rules) > 0 {
		t.Fatalf("port_mapping false: the router maps %q (%v)", rules, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c, err := probeHost.Dial(ctx, "tcp", netip.AddrPortFrom(off.Router.IP, nodePort).String()); err == nil {
		c.Close()
		t.Fatalf("port_mapping false: the public side got in to %s:%d", off.Router.IP, nodePort)
	}

	// NAT-PMP only: go-libp2p finds no router (see above), and the
	// router holds nothing. Its search ended long ago (inat.DiscoveryTimeout).
	var p api.Reachability
	waitFor(t, 60*time.Second, "the NAT-PMP home's search to end", func() bool {
		p = w.reach(pmpNode)
		return p.PortMapping != "searching"
	})
	t.Logf("node at the NAT-PMP home: port_mapping %s, %.1f s after the seller's start", p.PortMapping, time.Since(began).Seconds())
	if p.PortMapping != "no_router" || len(p.MappedAddrs) > 0 {
		t.Fatalf("NAT-PMP only: port_mapping %s %v; go-libp2p now maps through NAT-PMP: assert the mapping here", p.PortMapping, p.MappedAddrs)
	}
	if rules, err := pmp.Router.PortMappings(); err != nil || len(rules) > 0 {
		t.Fatalf("NAT-PMP only: the router maps %q (%v) while the node says no_router", rules, err)
	}
}
