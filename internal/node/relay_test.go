package node

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/health"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPrivateNodeIsReachedThroughItsRelay: three real libp2p hosts on
// loopback. A node forced public runs the relay service; a node forced
// private with that relay configured reserves a slot, lists the circuit
// address among its addresses, in its status and in its signed offer; a
// third host that knows only that circuit address reaches it through the
// relay (a limited, relayed connection that carries a ping).
func TestPrivateNodeIsReachedThroughItsRelay(t *testing.T) {
	rcfg := testConfig(t)
	rcfg.Network.Reachability = ReachPublic
	relay := startNode(t, rcfg)
	defer relay.Stop()
	waitFor(t, 30*time.Second, "the public node's relay service", func() bool { return relay.reach.view().RelayService })
	if v := relay.reach.view(); v.State != StatePublic || v.Source != "config" || v.DHTMode != DHTServer || len(v.Relays) != 0 {
		t.Fatalf("public node's reachability: %+v", v)
	}
	relayID := relay.Host().ID()
	relayAddr := relay.Host().Addrs()[0].String() + "/p2p/" + relayID.String()

	pcfg := testConfig(t)
	pcfg.Network.Reachability = ReachPrivate
	pcfg.Network.Relays = []string{relayAddr}
	priv := startNode(t, pcfg)
	defer priv.Stop()
	// kad-dht switches to client mode on the reachability event, a moment
	// after the relay slot: wait for both.
	waitFor(t, 60*time.Second, "a relay slot and the DHT in client mode", func() bool {
		v := priv.reach.view()
		return v.State == StatePrivate && v.DHTMode == DHTClient
	})
	v := priv.reach.view()
	if !slices.Equal(v.Relays, []string{relayID.String()}) || len(v.RelayAddrs) == 0 || v.DHTMode != DHTClient || v.RelayService {
		t.Fatalf("private node's reachability: %+v", v)
	}
	// The host lists the circuit address at its next address update, a
	// moment after the reservation.
	var circuit ma.Multiaddr
	waitFor(t, 30*time.Second, "the circuit address among the host's", func() bool {
		for _, a := range priv.Host().Addrs() {
			if isCircuit(a) && strings.Contains(a.String(), relayID.String()) {
				circuit = a
			}
		}
		return circuit != nil
	})
	// The offer is re-signed with it.
	waitFor(t, 30*time.Second, "the circuit address in the offer", func() bool {
		o, _ := priv.pub.Current()
		return o != nil && slices.ContainsFunc(o.Addrs, isCircuit)
	})
	// Status and the health check say so.
	s, err := api.NewClient(pcfg.DataDir).Status(context.Background())
	if err != nil || s.Reachability.State != StatePrivate || !slices.Contains(s.Reachability.RelayAddrs, circuit.String()) {
		t.Fatalf("status: %+v %v", s.Reachability, err)
	}
	rep, _ := priv.Health(context.Background())
	var reach health.Check
	for _, c := range rep.Checks {
		if c.Name == health.NameReach {
			reach = c
		}
	}
	if reach.Status != health.Warn || !strings.Contains(reach.Detail, "through relay "+relayID.String()) || !strings.Contains(reach.Fix, "forward") {
		t.Fatalf("reachability check: %+v", reach)
	}

	// A third host reaches the private node through the relay alone.
	h3, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h3.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h3.Connect(ctx, peer.AddrInfo{ID: priv.Host().ID(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
		t.Fatalf("connect through the relay: %v", err)
	}
	conns := h3.Network().ConnsToPeer(priv.Host().ID())
	if len(conns) == 0 || !isCircuit(conns[0].RemoteMultiaddr()) || !conns[0].Stat().Limited {
		t.Fatalf("connection to the private node: %v", conns)
	}
	if h3.Network().Connectedness(priv.Host().ID()) != network.Limited {
		t.Fatalf("connectedness %s, want Limited (relayed)", h3.Network().Connectedness(priv.Host().ID()))
	}
	res := <-ping.Ping(ctx, h3, priv.Host().ID())
	if res.Error != nil {
		t.Fatalf("ping through the relay: %v", res.Error)
	}

	// The relay goes away: the slot with it, the circuit address is
	// withdrawn from the host's addresses and from the offer.
	if err := relay.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the lost slot", func() bool { return priv.reach.view().State == StateUnreachable })
	if v := priv.reach.view(); len(v.Relays) != 0 || len(v.RelayAddrs) != 0 {
		t.Fatalf("reachability after the relay left: %+v", v)
	}
	waitFor(t, 30*time.Second, "the circuit address out of the host's addresses and the offer", func() bool {
		o, _ := priv.pub.Current()
		return !slices.ContainsFunc(priv.Host().Addrs(), isCircuit) && o != nil && !slices.ContainsFunc(o.Addrs, isCircuit)
	})
}

// TestRelayServiceSettings: relay_service on relays whatever AutoNAT says
// (here: nothing, on loopback); auto relays only when public; off never.
func TestRelayServiceSettings(t *testing.T) {
	for _, tc := range []struct {
		service, reach string
		want           bool
	}{
		{RelayOn, ReachAuto, true},
		{RelayAuto, ReachAuto, false},
		{RelayOff, ReachPublic, false},
	} {
		cfg := testConfig(t)
		cfg.Network.RelayService, cfg.Network.Reachability = tc.service, tc.reach
		n := startNode(t, cfg)
		if tc.want {
			waitFor(t, 30*time.Second, "the relay service", func() bool { return n.reach.view().RelayService })
		} else {
			time.Sleep(time.Second) // the relay manager reacts to the verdict at once
			if v := n.reach.view(); v.RelayService {
				t.Errorf("relay_service %s, reachability %s: relaying (%+v)", tc.service, tc.reach, v)
			}
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDHTModeFollowsTheRule: real nodes run their DHT as network.dht_mode's
// rule says (wantDHTMode), as seen from the protocols they answer on.
func TestDHTModeFollowsTheRule(t *testing.T) {
	// An address that looks like the internet's (nothing answers there).
	far := "/ip4/1.2.3.4/tcp/7460/p2p/12D3KooWGzh3xZqDxKxL1dA7kQyq8b8b3h3uM6xF6pdk5oCnCkPp"
	for _, tc := range []struct {
		mode, reach string
		boot        []string
		state       string
	}{
		{DHTAuto, ReachAuto, nil, StateUnknown},
		{DHTAuto, ReachPrivate, nil, StateUnreachable},
		{DHTAuto, ReachPublic, nil, StatePublic},
		{DHTServer, ReachPrivate, nil, StateUnreachable},
		{DHTClient, ReachAuto, nil, StateUnknown},
		{DHTAuto, ReachAuto, []string{far}, StateUnknown},
	} {
		cfg := testConfig(t)
		cfg.Network.DHTMode, cfg.Network.Reachability, cfg.Bootstrap = tc.mode, tc.reach, tc.boot
		n := startNode(t, cfg)
		want := wantDHTMode(tc.mode, len(tc.boot) == 0, tc.state)
		waitFor(t, 30*time.Second, "the DHT mode", func() bool {
			v := n.reach.view()
			return v.State == tc.state && v.DHTMode == want
		})
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}
