package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
)

// networkOptions are the host's options for reachability across NATs
// (network.*): AutoNAT v1 (client, and the service for others while this
// node is public) and v2, the forced reachability, port mapping, the relay
// service in auto mode, and hole punching with a counter. The relay
// transport (dialling and accepting relayed connections) is go-libp2p's
// default. Relay slots are held by the relayKeeper (startReach), not by
// go-libp2p's autorelay; see relayKeeper for why.
func (n *Node) networkOptions(reg prometheus.Registerer) ([]libp2p.Option, *holePunchCounter, *portMapper) {
	c := n.cfg.Network
	opts := []libp2p.Option{libp2p.EnableNATService(), libp2p.EnableAutoNATv2()}
	switch c.Reachability {
	case ReachPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	var ports *portMapper
	if c.PortMapping {
		// libp2p.NATPortMap's manager (UPnP) and our NAT-PMP fallback,
		// kept to tell status what they got.
		ports = &portMapper{log: n.log}
		opts = append(opts, libp2p.NATManager(ports.manager))
	}
	if c.RelayService == RelayAuto {
		// go-libp2p's relay manager runs the service while AutoNAT says
		// public and stops it when not.
		opts = append(opts, libp2p.EnableRelayService(relay.WithResources(c.RelayLimits.resources())))
	}
	punches := &holePunchCounter{inner: holepunch.NewMetricsTracer(holepunch.WithRegisterer(reg))}
	if c.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching(holepunch.WithMetricsTracer(punches)))
	}
	return opts, punches, ports
}

// startReach starts what follows and improves the node's reachability:
// the relay service when network.relay_service is on, the tracker of the
// host's reachability events, and the keeper of relay slots.
func (n *Node) startReach(ctx context.Context) error {
	c := n.cfg.Network
	boot, err := n.cfg.BootstrapPeers()
	if err != nil {
		return err
	}
	relays, err := c.RelayPeers()
	if err != nil {
		return fmt.Errorf("network.relays: %w", err)
	}
	t := n.reach
	t.private = privateNetwork(boot)
	if c.RelayService == RelayOn {
		r, err := relay.New(n.host, relay.WithResources(c.RelayLimits.resources()))
		if err != nil {
			return fmt.Errorf("start relay service: %w", err)
		}
		n.push(r.Close)
	}
	sub, err := t.subscribe()
	if err != nil {
		return fmt.Errorf("follow reachability: %w", err)
	}
	k, err := newRelayKeeper(n.host, relays, nil, n.log)
	if err != nil {
		sub.Close()
		return fmt.Errorf("relay slots: %w", err)
	}
	t.keeper = k
	t.onChange = func(state string) { k.setActive(keepRelays(c, t.private, state)) }
	k.setActive(keepRelays(c, t.private, StateUnknown))
	n.wg.Add(2)
	go func() { defer n.wg.Done(); t.run(ctx, sub) }()
	go func() { defer n.wg.Done(); k.run(ctx) }()
	return nil
}

// relayCandidates are the peers that may offer a relay slot: those
// connected and those in the DHT's routing table (the keeper keeps the
// ones that speak the relay's hop protocol).
func (n *Node) relayCandidates() []peer.ID {
	out := n.host.Network().Peers()
	if n.dht != nil {
		out = append(out, n.dht.RoutingTable().ListPeers()...)
	}
	return out
}

// offerAddrs are the host's addresses in the order an offer lists them
// (it keeps the first offer.MaxAddrs): public ones, then relayed ones
// (behind NAT, the way in), then private, then loopback.
func (n *Node) offerAddrs() []ma.Multiaddr {
	addrs := n.host.Addrs()
	rank := func(a ma.Multiaddr) int {
		switch {
		case isCircuit(a):
			return 1
		case manet.IsPublicAddr(a):
			return 0
		case manet.IsIPLoopback(a):
			return 3
		}
		return 2
	}
	slices.SortStableFunc(addrs, func(a, b ma.Multiaddr) int { return rank(a) - rank(b) })
	return addrs
}

// isCircuit reports whether a is a relayed (/p2p-circuit) address.
func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}
