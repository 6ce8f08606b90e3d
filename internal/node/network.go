package node

import (
	"errors"
	"fmt"
	"slices"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Reachability settings (network.reachability).
const (
	ReachAuto    = "auto"
	ReachPublic  = "public"
	ReachPrivate = "private"
)

// DHT modes (network.dht_mode).
const (
	DHTAuto   = "auto"
	DHTServer = "server"
	DHTClient = "client"
)

// Relay service settings (network.relay_service).
const (
	RelayAuto = "auto"
	RelayOn   = "on"
	RelayOff  = "off"
)

// NetworkConfig is how the node makes itself reachable across NATs: what it
// believes of its reachability, port mapping on the router, the DHT's mode,
// the circuit relay service it offers when public, the relays it reserves
// slots on when it is not, and hole punching.
type NetworkConfig struct {
	// Reachability is auto (AutoNAT decides), public or private (forced:
	// for operators who know, and for tests).
	Reachability string `mapstructure:"reachability"`
	// PortMapping asks the router to forward the listen ports (UPnP
	// through go-libp2p, then NAT-PMP through natPMP).
	PortMapping bool `mapstructure:"port_mapping"`
	// DHTMode is auto, server or client; see dhtMode for auto's rule.
	DHTMode string `mapstructure:"dht_mode"`
	// RelayService is auto (a circuit relay v2 service while publicly
	// reachable), on (always) or off.
	RelayService string `mapstructure:"relay_service"`
	// RelayLimits bound the relay service.
	RelayLimits RelayLimits `mapstructure:"relay_limits"`
	// Relays are relays (multiaddrs with /p2p/) to reserve a slot on when
	// the node is not publicly reachable, before any found on the network.
	Relays []string `mapstructure:"relays"`
	// HolePunching upgrades relayed connections to direct ones (DCUtR).
	HolePunching bool `mapstructure:"hole_punching"`
}

// RelayLimits are the relay service's resource limits.
type RelayLimits struct {
	// MaxReservations is how many peers may hold a slot at once.
	MaxReservations int `mapstructure:"max_reservations"`
	// MaxReservationsPerIP bounds the slots from one IP address.
	MaxReservationsPerIP int `mapstructure:"max_reservations_per_ip"`
	// MaxCircuits is how many relayed connections one peer may have open.
	MaxCircuits int `mapstructure:"max_circuits"`
	// ReservationTTL is how long a slot lasts before the peer renews it.
	ReservationTTL time.Duration `mapstructure:"reservation_ttl"`
	// CircuitDuration and CircuitData bound each relayed connection: it
	// is reset after that time or that many bytes in either direction.
	CircuitDuration time.Duration `mapstructure:"circuit_duration"`
	CircuitData     int64         `mapstructure:"circuit_data"`
}

// DefaultNetworkConfig is auto everywhere, port mapping and hole punching
// on, and relay limits that let a negotiation and a small job's image
// through a relay while keeping a public node's cost bounded.
func DefaultNetworkConfig() NetworkConfig {
	return NetworkConfig{
		Reachability: ReachAuto,
		PortMapping:  true,
		DHTMode:      DHTAuto,
		RelayService: RelayAuto,
		RelayLimits: RelayLimits{
			MaxReservations:      128,
			MaxReservationsPerIP: 8,
			MaxCircuits:          16,
			ReservationTTL:       time.Hour,
			CircuitDuration:      5 * time.Minute,
			CircuitData:          16 << 20,
		},
		Relays:       []string{},
		HolePunching: true,
	}
}

// Validate checks the network section; errors name the key.
func (c NetworkConfig) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("network.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if !slices.Contains([]string{ReachAuto, ReachPublic, ReachPrivate}, c.Reachability) {
		bad("reachability", "must be auto, public or private, not %q", c.Reachability)
	}
	if !slices.Contains([]string{DHTAuto, DHTServer, DHTClient}, c.DHTMode) {
		bad("dht_mode", "must be auto, server or client, not %q", c.DHTMode)
	}
	if !slices.Contains([]string{RelayAuto, RelayOn, RelayOff}, c.RelayService) {
		bad("relay_service", "must be auto, on or off, not %q", c.RelayService)
	}
	l := c.RelayLimits
	if l.MaxReservations < 1 || l.MaxReservations > 100000 {
		bad("relay_limits.max_reservations", "must be between 1 and 100000, not %d", l.MaxReservations)
	}
	if l.MaxReservationsPerIP < 1 || l.MaxReservationsPerIP > l.MaxReservations {
		bad("relay_limits.max_reservations_per_ip", "must be between 1 and max_reservations (%d), not %d", l.MaxReservations, l.MaxReservationsPerIP)
	}
	if l.MaxCircuits < 1 || l.MaxCircuits > 1024 {
		bad("relay_limits.max_circuits", "must be between 1 and 1024, not %d", l.MaxCircuits)
	}
	if l.ReservationTTL < time.Minute || l.ReservationTTL > 24*time.Hour {
		bad("relay_limits.reservation_ttl", "must be between 1m and 24h, not %s", l.ReservationTTL)
	}
	if l.CircuitDuration < time.Second || l.CircuitDuration > 24*time.Hour {
		bad("relay_limits.circuit_duration", "must be between 1s and 24h, not %s", l.CircuitDuration)
	}
	if l.CircuitData < 1<<10 || l.CircuitData > 1<<40 {
		bad("relay_limits.circuit_data", "must be between 1KiB and 1TiB, not %d bytes", l.CircuitData)
	}
	if _, err := c.RelayPeers(); err != nil {
		bad("relays", "%v", err)
	}
	return errors.Join(errs...)
}

// RelayPeers parses network.relays, merging addresses of the same peer.
func (c NetworkConfig) RelayPeers() ([]peer.AddrInfo, error) {
	return peerAddrs("relay", c.Relays)
}

// resources are the relay service's limits in go-libp2p's terms.
func (l RelayLimits) resources() relayv2.Resources {
	rc := relayv2.DefaultResources()
	rc.MaxReservations = l.MaxReservations
	rc.MaxReservationsPerIP = l.MaxReservationsPerIP
	rc.MaxReservationsPerASN = max(rc.MaxReservationsPerASN, l.MaxReservationsPerIP)
	rc.MaxCircuits = l.MaxCircuits
	rc.ReservationTTL = l.ReservationTTL
	rc.Limit = &relayv2.RelayLimit{Duration: l.CircuitDuration, Data: l.CircuitData}
	return rc
}

// privateNetwork reports whether the node's market is a closed one: none
// of its bootstrap peers has a globally routable address (none at all: an
// mDNS LAN market; loopback or private ones: a test, a LAN, a lab). There
// AutoNAT can never say "public" (it only tests public addresses), yet the
// nodes must serve the DHT to each other or no offer is ever stored.
func privateNetwork(boot []peer.AddrInfo) bool {
	for _, b := range boot {
		if slices.ContainsFunc(b.Addrs, manet.IsPublicAddr) {
			return false
		}
	}
	return true
}

// dhtOption is kad-dht's mode for network.dht_mode: server or client when
// set. Auto is server when the node is publicly reachable and client when
// it is known to be behind NAT (a node nobody can dial must not put itself
// into every routing table as a server); while AutoNAT has no verdict,
// server on a private network (see privateNetwork: every node must serve
// there, and a verdict never comes) and client on the internet. kad-dht's
// ModeAutoServer and ModeAuto are exactly that, and switch as the verdict
// changes.
func dhtOption(setting string, private bool) dht.ModeOpt {
	switch {
	case setting == DHTServer:
		return dht.ModeServer
	case setting == DHTClient:
		return dht.ModeClient
	case private:
		return dht.ModeAutoServer
	}
	return dht.ModeAuto
}

// forcedReachability is the reachability the config forces on libp2p
// (unknown in auto): the node's state starts from it, not from libp2p's
// event saying so, which the relay service may answer first.
func (c NetworkConfig) forcedReachability() network.Reachability {
	switch c.Reachability {
	case ReachPublic:
		return network.ReachabilityPublic
	case ReachPrivate:
		return network.ReachabilityPrivate
	}
	return network.ReachabilityUnknown
}

// keepRelays says whether the node should hold relay slots: always when
// forced private, never when forced public; in auto while it is not
// public, on the internet, or wherever relays are configured.
func keepRelays(c NetworkConfig, private bool, state string) bool {
	switch c.Reachability {
	case ReachPublic:
		return false
	case ReachPrivate:
		return true
	}
	return state != StatePublic && (!private || len(c.Relays) > 0)
}
