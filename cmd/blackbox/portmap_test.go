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
// on (the default) gets its listen ports mapped on the router through
// UPnP (go-libp2p's NAT manager); a node at a home whose router speaks
// NAT-PMP only (Home.NATPMP) gets them mapped through NAT-PMP (our
// fallback: go-libp2p v0.51 never asks NAT-PMP on Linux). For each, its
// status says mapped, with the router's address and the protocol; the
// router's table holds the forwards; a node on the public segment that
// knows only the mapped address connects to it directly (this internet
// has no relay: no node serves one), through the router; AutoNAT, with
// the public peers dialling it back, finds it public; doctor says the
// router maps it. The same node at a UPnP home with port_mapping off maps
// nothing, says off, and nobody gets in.
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
	sellerHost, pmpHost := on.Host("seller"), pmp.Host("pmpnode")
	began := time.Now()
	seller := w.at(sellerHost, base, "--bootstrap", w.bootAddr)
	closed := w.at(off.Host("closed"), append(slices.Clone(base), "BLACKBOX_NETWORK_PORT_MAPPING=false"), "--bootstrap", w.bootAddr)
	pmpBegan := time.Now()
	pmpNode := w.at(pmpHost, base, "--bootstrap", w.bootAddr)
	waitStatus(t, m.bin, closed.proc)

	mapped := func(name string, hm *netlab.Home, h *netlab.Host, d *daemon, began time.Time, proto, protoName string) {
		t.Helper()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("miniupnpd at home %s:\n%s", hm.Name, hm.Router.LogUPnP())
			}
		})
		id := d.peerID() // waits for its API
		// The router maps a WAN port of its choice to the node's TCP and
		// UDP listen ports (go-libp2p asks UPnP for a random one; NAT-PMP
		// asks for the same port).
		wanPrefix := fmt.Sprintf("/ip4/%s/tcp/", hm.Router.IP)
		var r api.Reachability
		var wan string
		waitFor(t, 90*time.Second, name+"'s port mapping", func() bool {
			r = w.reach(d)
			for _, a := range r.MappedAddrs {
				if strings.HasPrefix(a, wanPrefix) {
					wan = a
				}
			}
			return r.PortMapping == "mapped" && wan != ""
		})
		t.Logf("%s at %s: port_mapping %s by %s %v, %.1f s after its start", name, hm.Router.IP, r.PortMapping, r.PortMappingProtocol, r.MappedAddrs, time.Since(began).Seconds())
		if r.PortMappingProtocol != proto {
			t.Errorf("%s: mapped by %q, want %q", name, r.PortMappingProtocol, proto)
		}
		wanPort := strings.TrimPrefix(wan, wanPrefix)
		rules, err := hm.Router.PortMappings()
		if want := fmt.Sprintf("tcp %s %s:%d", wanPort, h.IP, nodePort); err != nil || !slices.Contains(rules, want) {
			t.Fatalf("%s: the router's mappings %q (%v) do not forward tcp %s to it", name, rules, err, wanPort)
		}
		if !slices.ContainsFunc(rules, func(r string) bool {
			return strings.HasPrefix(r, "udp ") && strings.HasSuffix(r, fmt.Sprintf(" %s:%d", h.IP, nodePort))
		}) {
			t.Errorf("%s: the router's mappings %q do not forward a udp port to it", name, rules)
		}
		out, err := d.cli("status")
		if err != nil || !strings.Contains(out, "port mapping mapped ") || !strings.Contains(out, wan) || !strings.Contains(out, "("+protoName+")") {
			t.Fatalf("%s: status does not say the %s mapping: %v\n%s", name, protoName, err, out)
		}

		// A node on the public segment whose only address for it is the
		// mapped one connects to it; the router let it in.
		probeHost := in.PublicHost("probe-" + name)
		if err := hm.Router.Watch(probeHost.IP); err != nil {
			t.Fatal(err)
		}
		probe := w.at(probeHost, base, "--bootstrap", wan+"/p2p/"+id)
		waitFor(t, 60*time.Second, "the probe's connection to "+name+"'s mapped address", func() bool {
			st := waitStatus(t, m.bin, probe.proc)
			return slices.Contains(st.Peers, id)
		})
		if n, err := hm.Router.Traffic(probeHost.IP); err != nil || n == 0 {
			t.Fatalf("%s: the router let %d bytes in from the probe (%v): not a direct connection", name, n, err)
		}

		// AutoNAT: the public peers dial the mapped address back.
		waitFor(t, 60*time.Second, name+": AutoNAT's verdict public", func() bool {
			r = w.reach(d)
			return r.State == "public"
		})
		t.Logf("%s: %s at %v", name, r.State, r.PublicAddrs)
		// doctor exits 1 here (payments are off): its report is on stdout,
		// the mapped addresses in no particular order.
		if out, err := exec.Command(m.bin, "--data-dir", d.dir, "doctor").Output(); !strings.Contains(string(out), "router maps ") || !strings.Contains(string(out), wan) || !strings.Contains(string(out), protoName) {
			t.Errorf("%s: doctor does not say the router maps %s (%s) (%v):\n%s", name, wan, protoName, err, out)
		}
		if !slices.Contains(r.PublicAddrs, wan) {
			t.Errorf("%s: public addresses %v lack the mapped %s", name, r.PublicAddrs, wan)
		}
	}
	mapped("seller", on, sellerHost, seller, began, "upnp", "UPnP")
	mapped("pmpnode", pmp, pmpHost, pmpNode, pmpBegan, "natpmp", "NAT-PMP")
	// The UPnP home's router speaks NAT-PMP too; the seller, mapped
	// through UPnP, did not also map through NAT-PMP: one forward per
	// port (long after the NAT-PMP fallback would have started).
	if rules, err := on.Router.PortMappings(); err != nil || len(rules) != 2 {
		t.Errorf("the UPnP home's router maps %q (%v), want one tcp and one udp forward", rules, err)
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
	probeHost := in.PublicHost("probe-off")
	if c, err := probeHost.Dial(ctx, "tcp", netip.AddrPortFrom(off.Router.IP, nodePort).String()); err == nil {
		c.Close()
		t.Fatalf("port_mapping false: the public side got in to %s:%d", off.Router.IP, nodePort)
	}

	// A node that stops deletes its NAT-PMP mappings on the router.
	pmpNode.stop()
	if rules, err := pmp.Router.PortMappings(); err != nil || len(rules) > 0 {
		t.Errorf("the NAT-PMP node stopped: the router still maps %q (%v)", rules, err)
	}
}
