package node

import (
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// natObserver classifies the node's NAT from the addresses peers tell it
// they see it at (identify's observed address, one per connection).
// go-libp2p's own classification (EvtNATDeviceTypeChanged) needs nine
// observations from distinct peers per transport and runs once a minute,
// so a home node with a handful of public peers never gets one. This
// one decides from two observers: for one local socket (IP and port),
// if different observers see the same public address and port, the NAT
// maps endpoint-independently (hole punching works); if each sees
// another port, it maps per destination (symmetric: it rarely does).
//
// Observations come from peers, who may lie: one observer (an IP) counts
// once per local socket (its latest word), a verdict needs a majority,
// and the tables are bounded. As in go-libp2p, an observation lasts while
// its peer is connected (a node that moves to another network forgets
// the old one's as its connections close).
type natObserver struct {
	mu sync.Mutex
	// seen maps a local thin-waist address (/ip4/…/tcp|udp/port) to
	// what each observer (its IP) last saw it as.
	seen map[string]map[string]observed
}

// observed is one peer's observation of a local socket.
type observed struct {
	peer peer.ID
	tw   string       // the observed thin-waist address: IP, transport, port
	addr ma.Multiaddr // the full observed address (with /quic-v1 etc.)
	tcp  bool
}

// Bounds on what peers can make the node remember.
const (
	maxObservedLocals    = 8
	maxObserversPerLocal = 32
	// maxObservedShown is how many observed addresses status lists.
	maxObservedShown = 4
)

// thinWaist splits a into its first two components (IP and TCP/UDP port)
// and says whether it is TCP; ok is false for anything else (circuits,
// DNS names, ...).
func thinWaist(a ma.Multiaddr) (tw ma.Multiaddr, tcp, ok bool) {
	if len(a) < 2 {
		return nil, false, false
	}
	c0, c1 := a[0].Code(), a[1].Code()
	if (c0 != ma.P_IP4 && c0 != ma.P_IP6) || (c1 != ma.P_TCP && c1 != ma.P_UDP) {
		return nil, false, false
	}
	return a[:2], c1 == ma.P_TCP, true
}

// add records that peer p at remote sees the connection's local address
// local as obs. Relayed connections and observations that are not public
// addresses (a LAN peer's view) or do not match the local transport are
// ignored.
func (o *natObserver) add(p peer.ID, local, remote, obs ma.Multiaddr) {
	if local == nil || remote == nil || obs == nil {
		return
	}
	for _, a := range []ma.Multiaddr{local, remote, obs} {
		if isRelayed(a) {
			return
		}
	}
	if !manet.IsPublicAddr(obs) {
		return
	}
	ltw, ltcp, ok := thinWaist(local)
	if !ok {
		return
	}
	otw, otcp, ok := thinWaist(obs)
	if !ok || otcp != ltcp || ltw[0].Code() != otw[0].Code() {
		return
	}
	ip, err := manet.ToIP(remote)
	if err != nil {
		return
	}
	observer := ip.String()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]map[string]observed{}
	}
	key := string(ltw.Bytes())
	m := o.seen[key]
	if m == nil {
		if len(o.seen) >= maxObservedLocals {
			return
		}
		m = map[string]observed{}
		o.seen[key] = m
	}
	if _, known := m[observer]; !known && len(m) >= maxObserversPerLocal {
		return
	}
	m[observer] = observed{peer: p, tw: string(otw.Bytes()), addr: obs, tcp: otcp}
}

// forget drops what peer p observed (it disconnected).
func (o *natObserver) forget(p peer.ID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for local, m := range o.seen {
		for observer, ob := range m {
			if ob.peer == p {
				delete(m, observer)
			}
		}
		if len(m) == 0 {
			delete(o.seen, local)
		}
	}
}

func isRelayed(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// kinds is the NAT's mapping for TCP and for UDP, each from the local
// socket of that transport with the most observers.
func (o *natObserver) kinds() (tcp, udp network.NATDeviceType) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var best [2]map[string]observed
	for _, m := range o.seen {
		i := 1
		for _, ob := range m {
			if ob.tcp {
				i = 0
			}
			break
		}
		if len(m) > len(best[i]) {
			best[i] = m
		}
	}
	return mappingOf(best[0]), mappingOf(best[1])
}

// mappingOf decides from one local socket's observations: two or more
// observers, a majority seeing one address → endpoint-independent; every
// observer seeing another → endpoint-dependent; anything else unknown.
func mappingOf(m map[string]observed) network.NATDeviceType {
	if len(m) < 2 {
		return network.NATDeviceTypeUnknown
	}
	count := map[string]int{}
	top := 0
	for _, ob := range m {
		count[ob.tw]++
		top = max(top, count[ob.tw])
	}
	switch {
	case 2*top > len(m):
		return network.NATDeviceTypeEndpointIndependent
	case top == 1:
		return network.NATDeviceTypeEndpointDependent
	}
	return network.NATDeviceTypeUnknown
}

// addrs are the public addresses peers see the node at: per local socket
// the one most observers saw (ties: the smaller), most observed first, at
// most maxObservedShown.
func (o *natObserver) addrs() []ma.Multiaddr {
	o.mu.Lock()
	defer o.mu.Unlock()
	type pick struct {
		addr ma.Multiaddr
		n    int
	}
	var picks []pick
	for _, m := range o.seen {
		count := map[string]int{}
		var p pick
		for _, ob := range m {
			count[ob.tw]++
			if n := count[ob.tw]; n > p.n || (n == p.n && ob.addr.String() < p.addr.String()) {
				p = pick{ob.addr, n}
			}
		}
		if p.addr != nil && !slices.ContainsFunc(picks, func(q pick) bool { return q.addr.Equal(p.addr) }) {
			picks = append(picks, p)
		}
	}
	slices.SortFunc(picks, func(a, b pick) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return a.addr.Compare(b.addr)
	})
	var out []ma.Multiaddr
	for _, p := range picks[:min(len(picks), maxObservedShown)] {
		out = append(out, p.addr)
	}
	return out
}
