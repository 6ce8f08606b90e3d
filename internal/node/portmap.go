package node

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	bhost "github.com/libp2p/go-libp2p/p2p/host/basic"
	inat "github.com/libp2p/go-libp2p/p2p/net/nat"
)

// Port mapping outcomes (api.Reachability.PortMapping).
const (
	// PortMapOff: network.port_mapping is false.
	PortMapOff = "off"
	// PortMapSearching: looking for a UPnP IGD / NAT-PMP router (go-libp2p
	// gives up after inat.DiscoveryTimeout).
	PortMapSearching = "searching"
	// PortMapNoRouter: no UPnP / NAT-PMP router answered.
	PortMapNoRouter = "no_router"
	// PortMapRefused: a router answered but holds no mapping of a listen
	// port (it refused, or the request is under way).
	PortMapRefused = "refused"
	// PortMapMapped: the router forwards a WAN port to a listen port
	// (api.Reachability.MappedAddrs says which).
	PortMapMapped = "mapped"
)

// portMapper is go-libp2p's NAT manager (UPnP / NAT-PMP port mapping,
// libp2p.NATPortMap) with what status needs to say what it got: whether
// a router answered and which external addresses it mapped. The host
// adds those addresses to its own (host.Addrs) itself.
type portMapper struct {
	mu      sync.Mutex
	mgr     bhost.NATManager
	net     network.Network
	started time.Time
	// the last check's answer, and whether a check runs
	state    string
	mapped   []string
	checking bool
}

// manager is the libp2p.NATManager constructor: the default manager,
// kept.
func (p *portMapper) manager(n network.Network) bhost.NATManager {
	m := bhost.NewNATManager(n)
	p.mu.Lock()
	p.mgr, p.net, p.started = m, n, time.Now()
	p.mu.Unlock()
	return m
}

// status is one of the PortMap constants and, when mapped, the external
// addresses of the listen addresses. A nil portMapper is off.
//
// It never blocks: go-libp2p's NAT manager holds its locks while it talks
// to the router (a mapping request without a deadline), so the answer is
// worked out in the background and status returns the last one.
func (p *portMapper) status() (string, []string) {
	if p == nil {
		return PortMapOff, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checking && p.mgr != nil {
		p.checking = true
		go p.check()
	}
	if p.state == "" {
		return PortMapSearching, nil
	}
	return p.state, p.mapped
}

// check asks the NAT manager what it has and keeps the answer for status.
func (p *portMapper) check() {
	p.mu.Lock()
	m, n, started := p.mgr, p.net, p.started
	p.mu.Unlock()
	state, mapped := PortMapSearching, []string(nil)
	switch {
	case m.HasDiscoveredNAT():
		seen := map[string]bool{}
		for _, l := range n.ListenAddresses() {
			ext := m.GetMapping(l)
			if ext == nil || seen[ext.String()] {
				continue
			}
			seen[ext.String()] = true
			mapped = append(mapped, ext.String())
		}
		state = PortMapMapped
		if len(mapped) == 0 {
			state = PortMapRefused
		}
	case time.Since(started) >= inat.DiscoveryTimeout+2*time.Second:
		// The manager searches once, for inat.DiscoveryTimeout, and then
		// stops; a little slack for the last answers.
		state = PortMapNoRouter
	}
	p.mu.Lock()
	p.state, p.mapped, p.checking = state, mapped, false
	p.mu.Unlock()
}
