package node

import (
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	bhost "github.com/libp2p/go-libp2p/p2p/host/basic"
	inat "github.com/libp2p/go-libp2p/p2p/net/nat"
	ma "github.com/multiformats/go-multiaddr"
)

// Port mapping outcomes (api.Reachability.PortMapping).
const (
	// PortMapOff: network.port_mapping is false.
	PortMapOff = "off"
	// PortMapSearching: looking for a UPnP IGD (go-libp2p gives up after
	// inat.DiscoveryTimeout), then for a NAT-PMP router.
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

// portMapper is the host's NAT manager (libp2p.NATManager): go-libp2p's
// (UPnP IGD, libp2p.NATPortMap's) and, when that finds no router after
// its search, our NAT-PMP mapper (natPMP): go-libp2p v0.51 never asks
// NAT-PMP on Linux (see MappedByUPnP). UPnP goes first so that a router
// speaking both holds one mapping per port, not two. The host adds the
// external addresses either one maps to its own (host.Addrs, through
// GetMapping), and status says what they got.
type portMapper struct {
	log *slog.Logger

	mu      sync.Mutex
	mgr     bhost.NATManager
	pmp     *natPMP // nil: no NAT-PMP fallback (tests)
	net     network.Network
	started time.Time
	stop    chan struct{} // closed by Close
	// the last check's answer, and whether a check runs
	state    string
	proto    string // MappedByUPnP or MappedByNATPMP, once a router answered
	mapped   []string
	checking bool
}

// pmpAfter is how long after the start the NAT-PMP fallback starts when
// go-libp2p has found no router: its search (inat.DiscoveryTimeout) and
// a little slack for its last answers.
const pmpAfter = inat.DiscoveryTimeout + 2*time.Second

// manager is the libp2p.NATManager constructor: go-libp2p's manager,
// kept, and the NAT-PMP fallback waiting for it.
func (p *portMapper) manager(n network.Network) bhost.NATManager {
	m := bhost.NewNATManager(n)
	pmp := newNATPMP(n, p.log)
	stop := make(chan struct{})
	p.mu.Lock()
	p.mgr, p.pmp, p.net, p.started, p.stop = m, pmp, n, time.Now(), stop
	p.mu.Unlock()
	go func() {
		t := time.NewTimer(pmpAfter)
		defer t.Stop()
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if !m.HasDiscoveredNAT() {
			pmp.start() // does nothing once closed
		}
	}()
	return p
}

// GetMapping is the router's external address of listen address a (UPnP
// first, then NAT-PMP), nil when none maps it.
func (p *portMapper) GetMapping(a ma.Multiaddr) ma.Multiaddr {
	p.mu.Lock()
	m, pmp := p.mgr, p.pmp
	p.mu.Unlock()
	if ext := m.GetMapping(a); ext != nil {
		return ext
	}
	if pmp != nil {
		return pmp.mapping(a)
	}
	return nil
}

// HasDiscoveredNAT reports whether a UPnP or NAT-PMP router answered.
func (p *portMapper) HasDiscoveredNAT() bool {
	p.mu.Lock()
	m, pmp := p.mgr, p.pmp
	p.mu.Unlock()
	if m.HasDiscoveredNAT() {
		return true
	}
	if pmp == nil {
		return false
	}
	s := pmp.status()
	return s == PortMapMapped || s == PortMapRefused
}

// Close stops both and deletes their mappings on the router (the host
// closes its NAT manager when it closes).
func (p *portMapper) Close() error {
	p.mu.Lock()
	m, pmp, stop := p.mgr, p.pmp, p.stop
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	if pmp != nil {
		pmp.close()
	}
	return m.Close()
}

// status is one of the PortMap constants, when mapped the external
// addresses of the listen addresses, and which protocol a router answered
// (MappedByUPnP, MappedByNATPMP; "" while none did). A nil portMapper is
// off.
//
// It never blocks: go-libp2p's NAT manager holds its locks while it talks
// to the router (a mapping request without a deadline), so the answer is
// worked out in the background and status returns the last one.
func (p *portMapper) status() (state string, mapped []string, proto string) {
	if p == nil {
		return PortMapOff, nil, ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checking && p.mgr != nil {
		p.checking = true
		go p.check()
	}
	if p.state == "" {
		return PortMapSearching, nil, ""
	}
	return p.state, p.mapped, p.proto
}

// check asks the NAT manager, then the NAT-PMP mapper, what they have
// and keeps the answer for status.
func (p *portMapper) check() {
	p.mu.Lock()
	m, pmp, n, started := p.mgr, p.pmp, p.net, p.started
	p.mu.Unlock()
	state, mapped, proto := PortMapSearching, []string(nil), ""
	collect := func(get func(ma.Multiaddr) ma.Multiaddr) {
		seen := map[string]bool{}
		for _, l := range n.ListenAddresses() {
			ext := get(l)
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
	}
	switch {
	case m.HasDiscoveredNAT():
		proto = MappedByUPnP
		collect(m.GetMapping)
	case time.Since(started) < pmpAfter:
		// The manager searches once, for inat.DiscoveryTimeout, and then
		// stops; a little slack for the last answers.
	case pmp == nil:
		state = PortMapNoRouter
	default:
		switch s := pmp.status(); s {
		case PortMapMapped, PortMapRefused:
			proto = MappedByNATPMP
			collect(pmp.mapping)
		default:
			state = s
		}
	}
	p.mu.Lock()
	p.state, p.mapped, p.proto, p.checking = state, mapped, proto, false
	p.mu.Unlock()
}
