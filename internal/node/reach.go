package node

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Reachability states (api.Reachability.State, the reachability metric's
// label).
const (
	// StateUnknown: AutoNAT has no verdict yet (and on a loopback or LAN
	// market it never has one: it only tests public addresses).
	StateUnknown = "unknown"
	// StatePublic: peers dial the node directly.
	StatePublic = "public"
	// StatePrivate: behind NAT, reachable through a relay slot (and, if
	// the NAT allows, a hole punch from there).
	StatePrivate = "private"
	// StateUnreachable: behind NAT with no relay slot; only its own LAN
	// can reach it.
	StateUnreachable = "unreachable"
)

// Where api.Reachability.PublicAddrs come from.
const (
	// AddrsConfirmed: AutoNAT v2 dialled them back.
	AddrsConfirmed = "confirmed"
	// AddrsListen: a public node's own public addresses.
	AddrsListen = "listen"
	// AddrsObserved: what peers saw the node at (identify); behind NAT
	// not known to be reachable.
	AddrsObserved = "observed"
)

// Hole punching outlooks (api.Reachability.HolePunching).
const (
	PunchPossible  = "possible"
	PunchUnlikely  = "unlikely"
	PunchUnknown   = "unknown"
	PunchNotNeeded = "not_needed"
	PunchOff       = "off"
)

// reachState is what the node has heard on its event bus about its own
// reachability. apply folds one event in; the methods below derive the
// state from it, so the rule is a pure function of the events.
//
//	unknown ──autonat private──▶ unreachable ──relay addrs──▶ private
//	   │                              ▲ ◀──relay addrs gone──┘
//	   └──autonat public / a v2-confirmed address──▶ public
//
// (Any state goes to public on those, and back when they are withdrawn.)
type reachState struct {
	autonat network.Reachability
	// reachable are the public addresses AutoNAT v2 confirmed.
	reachable      []ma.Multiaddr
	natTCP, natUDP network.NATDeviceType
	relayAddrs     []ma.Multiaddr
}

// apply returns the state after event ev (other events change nothing).
func (s reachState) apply(ev any) reachState {
	switch e := ev.(type) {
	case event.EvtLocalReachabilityChanged:
		s.autonat = e.Reachability
	case event.EvtHostReachableAddrsChanged:
		s.reachable = slices.Clone(e.Reachable)
	case event.EvtNATDeviceTypeChanged:
		switch e.TransportProtocol {
		case network.NATTransportTCP:
			s.natTCP = e.NatDeviceType
		case network.NATTransportUDP:
			s.natUDP = e.NatDeviceType
		}
	case event.EvtAutoRelayAddrsUpdated:
		s.relayAddrs = slices.Clone(e.RelayAddrs)
	}
	return s
}

// state is one of the State constants.
func (s reachState) state() string {
	switch {
	case s.autonat == network.ReachabilityPublic || len(s.reachable) > 0:
		return StatePublic
	case s.autonat == network.ReachabilityPrivate && len(s.relayAddrs) > 0:
		return StatePrivate
	case s.autonat == network.ReachabilityPrivate:
		return StateUnreachable
	}
	return StateUnknown
}

// holePunching is the outlook for hole punching: not needed when public;
// possible when the NAT maps endpoint-independently for some transport
// (both sides need that); unlikely when it is known to map each
// destination apart (symmetric NAT); unknown before identify has seen
// enough observed addresses to tell.
func (s reachState) holePunching(enabled bool) string {
	switch {
	case !enabled:
		return PunchOff
	case s.state() == StatePublic:
		return PunchNotNeeded
	case s.natTCP == network.NATDeviceTypeEndpointIndependent || s.natUDP == network.NATDeviceTypeEndpointIndependent:
		return PunchPossible
	case s.natTCP == network.NATDeviceTypeEndpointDependent || s.natUDP == network.NATDeviceTypeEndpointDependent:
		return PunchUnlikely
	}
	return PunchUnknown
}

func natName(t network.NATDeviceType) string {
	switch t {
	case network.NATDeviceTypeEndpointIndependent:
		return "endpoint_independent"
	case network.NATDeviceTypeEndpointDependent:
		return "endpoint_dependent"
	}
	return "unknown"
}

// dhtServerProtocol is what blackbox's DHT answers on in server mode.
const dhtServerProtocol = protocol.ID(offer.DHTProtocolPrefix + "/kad/1.0.0")

// reachTracker keeps the node's reachability from its host's event bus.
type reachTracker struct {
	cfg     NetworkConfig
	private bool // privateNetwork(bootstrap peers)
	h       host.Host
	log     *slog.Logger
	punches *holePunchCounter
	ports   *portMapper  // nil when network.port_mapping is off
	keeper  *relayKeeper // nil when relays are not used
	// nat classifies the NAT from identify's observed addresses, where
	// go-libp2p's own EvtNATDeviceTypeChanged has not decided.
	nat natObserver

	mu    sync.Mutex
	s     reachState
	since time.Time
	// onChange is called (outside mu) with the new state when it changes.
	onChange func(state string)
	// onAddrs is called (outside mu) when the host's addresses change.
	onAddrs func()
}

// setOnAddrs sets onAddrs (the offer publisher starts after the tracker).
func (t *reachTracker) setOnAddrs(f func()) {
	t.mu.Lock()
	t.onAddrs = f
	t.mu.Unlock()
}

// events the tracker reads.
var reachEvents = []any{
	new(event.EvtLocalReachabilityChanged),
	new(event.EvtHostReachableAddrsChanged),
	new(event.EvtNATDeviceTypeChanged),
	new(event.EvtAutoRelayAddrsUpdated),
	new(event.EvtLocalAddressesUpdated),
	new(event.EvtPeerIdentificationCompleted),
	new(event.EvtPeerConnectednessChanged),
}

// run follows the event bus until ctx ends. The subscription is made
// before run returns its first event, so that stateful events emitted
// before (a forced reachability) are seen.
func (t *reachTracker) subscribe() (event.Subscription, error) {
	return t.h.EventBus().Subscribe(reachEvents, eventbus.Name("blackbox reachability"))
}

func (t *reachTracker) run(ctx context.Context, sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.Out():
			if !ok {
				return
			}
			t.handle(ev)
		}
	}
}

func (t *reachTracker) handle(ev any) {
	if e, ok := ev.(event.EvtPeerIdentificationCompleted); ok {
		if e.Conn != nil && !e.Conn.Stat().Limited {
			t.nat.add(e.Peer, e.Conn.LocalMultiaddr(), e.Conn.RemoteMultiaddr(), e.ObservedAddr)
		}
		return
	}
	if e, ok := ev.(event.EvtPeerConnectednessChanged); ok {
		if e.Connectedness != network.Connected {
			t.nat.forget(e.Peer)
		}
		return
	}
	if _, ok := ev.(event.EvtLocalAddressesUpdated); ok {
		t.mu.Lock()
		f := t.onAddrs
		t.mu.Unlock()
		if f != nil {
			f()
		}
		return
	}
	t.mu.Lock()
	before := t.s.state()
	t.s = t.s.apply(ev)
	after := t.s.state()
	if after != before {
		t.since = time.Now()
	}
	onChange := t.onChange
	t.mu.Unlock()
	if after != before {
		t.log.Info("reachability changed", "from", before, "to", after, "event", ev)
		if onChange != nil {
			onChange(after)
		}
	}
}

// snapshot is the state now, the NAT kinds go-libp2p has not decided
// filled in from the tracker's own observations.
func (t *reachTracker) snapshot() (reachState, time.Time) {
	tcp, udp := t.nat.kinds()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.s
	if s.natTCP == network.NATDeviceTypeUnknown {
		s.natTCP = tcp
	}
	if s.natUDP == network.NATDeviceTypeUnknown {
		s.natUDP = udp
	}
	return s, t.since
}

// view is the status's reachability.
func (t *reachTracker) view() api.Reachability {
	s, since := t.snapshot()
	v := api.Reachability{
		State:        s.state(),
		Source:       "autonat",
		Since:        since,
		NAT:          api.NATTypes{TCP: natName(s.natTCP), UDP: natName(s.natUDP)},
		HolePunching: s.holePunching(t.cfg.HolePunching),
		DHTMode:      DHTClient,
		RelayService: slices.Contains(t.h.Mux().Protocols(), proto.ProtoIDv2Hop),
		HolePunch:    t.punches.counts(),
	}
	v.PortMapping, v.MappedAddrs, v.PortMappingProtocol = t.ports.status()
	if t.cfg.Reachability != ReachAuto {
		v.Source = "config"
	}
	// The DHT serves while its protocol's handler is set (kad-dht sets and
	// removes it as it switches modes).
	if slices.Contains(t.h.Mux().Protocols(), dhtServerProtocol) {
		v.DHTMode = DHTServer
	}
	pub, from := s.reachable, AddrsConfirmed
	if len(pub) == 0 {
		// Not confirmed by AutoNAT v2: a public node's public addresses
		// (its listen ones, or those libp2p took from what peers saw);
		// behind NAT, what peers saw it at (libp2p's, then identify's
		// own word): observed, not known to be reachable.
		pub = slices.DeleteFunc(slices.Clone(t.h.Addrs()), func(a ma.Multiaddr) bool { return !manet.IsPublicAddr(a) || isRelayed(a) })
		from = AddrsListen
		if v.State != StatePublic {
			from = AddrsObserved
			for _, a := range t.nat.addrs() {
				if !slices.ContainsFunc(pub, a.Equal) {
					pub = append(pub, a)
				}
			}
		}
	}
	if len(pub) > 0 {
		v.PublicAddrsFrom = from
	}
	for _, a := range pub {
		v.PublicAddrs = append(v.PublicAddrs, a.String())
	}
	for _, a := range s.relayAddrs {
		v.RelayAddrs = append(v.RelayAddrs, a.String())
	}
	if t.keeper != nil {
		for _, p := range t.keeper.relays() {
			v.Relays = append(v.Relays, p.String())
		}
	}
	return v
}

// holePunchCounter counts hole punches for status and the metrics, and
// passes each on to go-libp2p's own metrics tracer.
type holePunchCounter struct {
	inner                         holepunch.MetricsTracer
	attempts, successes, directOK atomic.Uint64
}

var _ holepunch.MetricsTracer = (*holePunchCounter)(nil)

// HolePunchFinished is called once per hole punch on the side that runs
// it (after up to 3 rounds) and once per round on the other.
func (c *holePunchCounter) HolePunchFinished(side string, attempt int, theirs, ours []ma.Multiaddr, direct network.ConnMultiaddrs) {
	c.attempts.Add(1)
	if direct != nil {
		c.successes.Add(1)
	}
	if c.inner != nil {
		c.inner.HolePunchFinished(side, attempt, theirs, ours, direct)
	}
}

// DirectDialFinished is an upgrade tried by dialling the peer's public
// address, before any punch.
func (c *holePunchCounter) DirectDialFinished(success bool) {
	if success {
		c.directOK.Add(1)
	}
	if c.inner != nil {
		c.inner.DirectDialFinished(success)
	}
}

func (c *holePunchCounter) counts() api.HolePunchCounts {
	if c == nil {
		return api.HolePunchCounts{}
	}
	return api.HolePunchCounts{Attempts: c.attempts.Load(), Successes: c.successes.Load(), DirectDials: c.directOK.Load()}
}
