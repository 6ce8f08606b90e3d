package node

import (
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestReachStateFromEvents: the reachability state machine, events in,
// state and hole punching outlook out.
func TestReachStateFromEvents(t *testing.T) {
	private := event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPrivate}
	public := event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPublic}
	unknown := event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityUnknown}
	circuit := ma.StringCast("/ip4/203.0.113.7/tcp/7460/p2p/12D3KooWGzh3xZqDxKxL1dA7kQyq8b8b3h3uM6xF6pdk5oCnCkPp/p2p-circuit")
	relayed := event.EvtAutoRelayAddrsUpdated{RelayAddrs: []ma.Multiaddr{circuit}}
	noRelay := event.EvtAutoRelayAddrsUpdated{}
	cone := event.EvtNATDeviceTypeChanged{TransportProtocol: network.NATTransportUDP, NatDeviceType: network.NATDeviceTypeEndpointIndependent}
	symTCP := event.EvtNATDeviceTypeChanged{TransportProtocol: network.NATTransportTCP, NatDeviceType: network.NATDeviceTypeEndpointDependent}
	confirmed := event.EvtHostReachableAddrsChanged{Reachable: []ma.Multiaddr{ma.StringCast("/ip4/1.2.3.4/udp/7460/quic-v1")}}
	for _, tc := range []struct {
		name   string
		events []any
		state  string
		punch  string
	}{
		{"at start", nil, StateUnknown, PunchUnknown},
		{"public", []any{public}, StatePublic, PunchNotNeeded},
		{"private, no relay yet", []any{private}, StateUnreachable, PunchUnknown},
		{"private with a relay slot", []any{private, relayed}, StatePrivate, PunchUnknown},
		{"relay slot before the verdict", []any{relayed, private}, StatePrivate, PunchUnknown},
		{"relay slot lost", []any{private, relayed, noRelay}, StateUnreachable, PunchUnknown},
		{"cone NAT", []any{private, relayed, cone}, StatePrivate, PunchPossible},
		{"symmetric NAT", []any{private, relayed, symTCP}, StatePrivate, PunchUnlikely},
		{"one transport cone is enough", []any{private, symTCP, cone, relayed}, StatePrivate, PunchPossible},
		{"v2 confirms an address", []any{private, relayed, confirmed}, StatePublic, PunchNotNeeded},
		{"v2 withdraws it", []any{private, relayed, confirmed, event.EvtHostReachableAddrsChanged{}}, StatePrivate, PunchUnknown},
		{"public then NAT", []any{public, private}, StateUnreachable, PunchUnknown},
		{"verdict withdrawn", []any{private, relayed, unknown}, StateUnknown, PunchUnknown},
		{"other events change nothing", []any{public, event.EvtLocalAddressesUpdated{}, "junk"}, StatePublic, PunchNotNeeded},
	} {
		var s reachState
		for _, ev := range tc.events {
			s = s.apply(ev)
		}
		if s.state() != tc.state || s.holePunching(true) != tc.punch {
			t.Errorf("%s: state %s, hole punching %s; want %s, %s", tc.name, s.state(), s.holePunching(true), tc.state, tc.punch)
		}
		if s.holePunching(false) != PunchOff {
			t.Errorf("%s: hole punching off says %s", tc.name, s.holePunching(false))
		}
	}
}

// wantDHTMode is network.dht_mode's rule (dhtOption's comment) as a
// function of the setting, the kind of network and the state.
func wantDHTMode(setting string, private bool, state string) string {
	switch setting {
	case DHTServer, DHTClient:
		return setting
	}
	switch state {
	case StatePublic:
		return DHTServer
	case StatePrivate, StateUnreachable:
		return DHTClient
	}
	if private {
		return DHTServer
	}
	return DHTClient
}

// TestDHTModeRule: set modes stay; auto is server when public, client
// behind NAT, and while unknown depends on whether the market is a
// private network; kad-dht's option follows the same rule.
func TestDHTModeRule(t *testing.T) {
	for _, tc := range []struct {
		setting string
		private bool
		state   string
		want    string
	}{
		{DHTServer, false, StateUnreachable, DHTServer},
		{DHTClient, true, StatePublic, DHTClient},
		{DHTAuto, false, StatePublic, DHTServer},
		{DHTAuto, true, StatePublic, DHTServer},
		{DHTAuto, false, StatePrivate, DHTClient},
		{DHTAuto, true, StatePrivate, DHTClient},
		{DHTAuto, false, StateUnreachable, DHTClient},
		{DHTAuto, false, StateUnknown, DHTClient},
		// A loopback, LAN or mDNS-only market: AutoNAT never answers,
		// every node serves.
		{DHTAuto, true, StateUnknown, DHTServer},
	} {
		if got := wantDHTMode(tc.setting, tc.private, tc.state); got != tc.want {
			t.Errorf("wantDHTMode(%s, private network %v, %s) = %s, want %s", tc.setting, tc.private, tc.state, got, tc.want)
		}
	}
	info := func(addrs ...string) peer.AddrInfo {
		ai := peer.AddrInfo{}
		for _, a := range addrs {
			ai.Addrs = append(ai.Addrs, ma.StringCast(a))
		}
		return ai
	}
	for _, tc := range []struct {
		name string
		boot []peer.AddrInfo
		want bool
	}{
		{"no bootstrap (mDNS)", nil, true},
		{"loopback", []peer.AddrInfo{info("/ip4/127.0.0.1/tcp/7460")}, true},
		{"LAN", []peer.AddrInfo{info("/ip4/192.168.1.2/tcp/7460"), info("/ip4/10.0.0.2/udp/7460/quic-v1")}, true},
		{"internet", []peer.AddrInfo{info("/ip4/192.168.1.2/tcp/7460"), info("/ip4/1.2.3.4/tcp/7460")}, false},
	} {
		if got := privateNetwork(tc.boot); got != tc.want {
			t.Errorf("privateNetwork(%s) = %v", tc.name, got)
		}
	}
}

// TestKeepRelays: who holds relay slots.
func TestKeepRelays(t *testing.T) {
	c := DefaultNetworkConfig()
	withRelays := c
	withRelays.Relays = []string{"/ip4/1.2.3.4/tcp/7460/p2p/12D3KooWGzh3xZqDxKxL1dA7kQyq8b8b3h3uM6xF6pdk5oCnCkPp"}
	forced := func(r string) NetworkConfig { x := c; x.Reachability = r; return x }
	for _, tc := range []struct {
		name    string
		c       NetworkConfig
		private bool
		state   string
		want    bool
	}{
		{"internet, unknown", c, false, StateUnknown, true},
		{"internet, behind NAT", c, false, StateUnreachable, true},
		{"internet, public", c, false, StatePublic, false},
		{"LAN market", c, true, StateUnknown, false},
		{"LAN market with relays set", withRelays, true, StateUnknown, true},
		{"forced private", forced(ReachPrivate), true, StateUnknown, true},
		{"forced public", forced(ReachPublic), false, StateUnreachable, false},
	} {
		if got := keepRelays(tc.c, tc.private, tc.state); got != tc.want {
			t.Errorf("%s: keepRelays = %v", tc.name, got)
		}
	}
}

// TestNetworkConfigValidate: every bad value is refused naming its key.
func TestNetworkConfigValidate(t *testing.T) {
	if err := DefaultNetworkConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		key string
		set func(*NetworkConfig)
	}{
		{"network.reachability", func(c *NetworkConfig) { c.Reachability = "maybe" }},
		{"network.dht_mode", func(c *NetworkConfig) { c.DHTMode = "both" }},
		{"network.relay_service", func(c *NetworkConfig) { c.RelayService = "yes" }},
		{"network.relay_limits.max_reservations", func(c *NetworkConfig) { c.RelayLimits.MaxReservations = 0 }},
		{"network.relay_limits.max_reservations_per_ip", func(c *NetworkConfig) { c.RelayLimits.MaxReservationsPerIP = 1000 }},
		{"network.relay_limits.max_circuits", func(c *NetworkConfig) { c.RelayLimits.MaxCircuits = -1 }},
		{"network.relay_limits.reservation_ttl", func(c *NetworkConfig) { c.RelayLimits.ReservationTTL = time.Second }},
		{"network.relay_limits.circuit_duration", func(c *NetworkConfig) { c.RelayLimits.CircuitDuration = 0 }},
		{"network.relay_limits.circuit_data", func(c *NetworkConfig) { c.RelayLimits.CircuitData = 10 }},
		{"network.relays", func(c *NetworkConfig) { c.Relays = []string{"/ip4/1.2.3.4/tcp/7460"} }},
		{"network.relays", func(c *NetworkConfig) { c.Relays = []string{"not an address"} }},
	} {
		c := DefaultNetworkConfig()
		tc.set(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%s: %v", tc.key, err)
		}
		full := DefaultConfig()
		full.Network = c
		if err := full.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s through Config.Validate: %v", tc.key, err)
		}
	}
}

type fakeConn struct{ network.ConnMultiaddrs }

// TestHolePunchCounter: attempts and successes as go-libp2p's hole
// punching service reports them, passed on to its own tracer.
func TestHolePunchCounter(t *testing.T) {
	inner := &holePunchCounter{}
	c := &holePunchCounter{inner: inner}
	c.HolePunchFinished("initiator", 3, nil, nil, nil)
	c.HolePunchFinished("initiator", 1, nil, nil, fakeConn{})
	c.HolePunchFinished("receiver", 1, nil, nil, fakeConn{})
	c.DirectDialFinished(true)
	c.DirectDialFinished(false)
	if got := c.counts(); got.Attempts != 3 || got.Successes != 2 || got.DirectDials != 1 {
		t.Fatalf("counts %+v", got)
	}
	if inner.counts() != c.counts() {
		t.Fatalf("not passed on: %+v", inner.counts())
	}
	var none *holePunchCounter
	if none.counts().Attempts != 0 {
		t.Fatal("nil counter")
	}
}

// TestUnreachableSellersInStatus: status lists the sellers the buyer ranks
// last, soonest to expire first.
func TestUnreachableSellersInStatus(t *testing.T) {
	var ids []peer.ID
	for range 3 {
		k, err := LoadOrCreateIdentity(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		p, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p)
	}
	now := time.Now()
	got := unreachableSellers(map[peer.ID]time.Time{ids[0]: now.Add(3 * time.Minute), ids[1]: now.Add(time.Minute), ids[2]: now.Add(2 * time.Minute)})
	if len(got) != 3 || got[0].Peer != ids[1].String() || got[1].Peer != ids[2].String() || got[2].Peer != ids[0].String() || !got[0].Until.Equal(now.Add(time.Minute)) {
		t.Fatalf("status lists %+v", got)
	}
	if unreachableSellers(nil) != nil {
		t.Fatal("none should be nil, left out of the JSON")
	}
}
