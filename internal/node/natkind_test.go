package node

import (
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

const testPeer = peer.ID("a peer")

// TestNATObserver: the NAT's kind from what peers observe: one public
// port for every observer is endpoint-independent, a port per observer
// endpoint-dependent; one observer, relayed connections, private or
// mismatched observations decide nothing.
func TestNATObserver(t *testing.T) {
	m := ma.StringCast
	udpLocal, tcpLocal := m("/ip4/192.168.1.2/udp/7460/quic-v1"), m("/ip4/192.168.1.2/tcp/7460")
	peerAt := func(i int, proto string) ma.Multiaddr { return m(fmt.Sprintf("/ip4/11.0.0.%d/%s/7460", 10+i, proto)) }

	var cone natObserver
	cone.add(testPeer, udpLocal, peerAt(1, "udp"), m("/ip4/11.0.0.2/udp/7460/quic-v1"))
	if tcp, udp := cone.kinds(); tcp != network.NATDeviceTypeUnknown || udp != network.NATDeviceTypeUnknown {
		t.Fatalf("one observer decided: tcp %v udp %v", tcp, udp)
	}
	cone.add(testPeer, udpLocal, peerAt(2, "udp"), m("/ip4/11.0.0.2/udp/7460/quic-v1"))
	cone.add(testPeer, tcpLocal, peerAt(1, "tcp"), m("/ip4/11.0.0.2/tcp/7460"))
	// Ignored: a relayed connection, a LAN peer's private view, TCP seen
	// as UDP, a circuit address.
	cone.add(testPeer, m("/ip4/192.168.1.2/tcp/7460/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN/p2p-circuit"), peerAt(3, "tcp"), m("/ip4/11.0.0.2/tcp/999"))
	cone.add(testPeer, tcpLocal, m("/ip4/192.168.1.3/tcp/7460"), m("/ip4/192.168.1.2/tcp/7460"))
	cone.add(testPeer, tcpLocal, peerAt(4, "tcp"), m("/ip4/11.0.0.2/udp/1234"))
	if tcp, udp := cone.kinds(); tcp != network.NATDeviceTypeUnknown || udp != network.NATDeviceTypeEndpointIndependent {
		t.Fatalf("cone: tcp %v udp %v", tcp, udp)
	}
	if got := cone.addrs(); len(got) != 2 || got[0].String() != "/ip4/11.0.0.2/udp/7460/quic-v1" || got[1].String() != "/ip4/11.0.0.2/tcp/7460" {
		t.Fatalf("cone's observed addresses: %v", got)
	}

	// A peer that disconnects takes its word with it.
	cone.forget(testPeer)
	if tcp, udp := cone.kinds(); tcp != network.NATDeviceTypeUnknown || udp != network.NATDeviceTypeUnknown || len(cone.seen) != 0 {
		t.Fatalf("after the peer left: tcp %v udp %v, %d sockets", tcp, udp, len(cone.seen))
	}

	var sym natObserver
	for i := range 3 {
		sym.add(testPeer, tcpLocal, peerAt(i, "tcp"), m(fmt.Sprintf("/ip4/11.0.0.3/tcp/%d", 40000+i)))
	}
	// One peer repeating itself counts once: its latest word.
	sym.add(testPeer, tcpLocal, peerAt(0, "tcp"), m("/ip4/11.0.0.3/tcp/40002"))
	sym.add(testPeer, tcpLocal, peerAt(0, "tcp"), m("/ip4/11.0.0.3/tcp/40000"))
	if tcp, udp := sym.kinds(); tcp != network.NATDeviceTypeEndpointDependent || udp != network.NATDeviceTypeUnknown {
		t.Fatalf("symmetric: tcp %v udp %v", tcp, udp)
	}

	// A liar among honest observers does not flip a majority; a tie
	// decides nothing.
	var mixed natObserver
	for i := range 3 {
		mixed.add(testPeer, udpLocal, peerAt(i, "udp"), m("/ip4/11.0.0.2/udp/7460/quic-v1"))
	}
	mixed.add(testPeer, udpLocal, peerAt(9, "udp"), m("/ip4/11.0.0.2/udp/1/quic-v1"))
	if _, udp := mixed.kinds(); udp != network.NATDeviceTypeEndpointIndependent {
		t.Fatalf("3 of 4 agree: %v", udp)
	}
	var tie natObserver
	for i := range 4 {
		tie.add(testPeer, udpLocal, peerAt(i, "udp"), m(fmt.Sprintf("/ip4/11.0.0.2/udp/%d/quic-v1", 7460+i%2)))
	}
	if _, udp := tie.kinds(); udp != network.NATDeviceTypeUnknown {
		t.Fatalf("2 against 2: %v", udp)
	}

	// Bounded: a flood of observers and local sockets.
	var flood natObserver
	for i := range 300 {
		flood.add(testPeer, m(fmt.Sprintf("/ip4/192.168.1.2/tcp/%d", 1000+i%20)), m(fmt.Sprintf("/ip4/11.0.%d.%d/tcp/1", i/250, 1+i%250)), m("/ip4/11.0.0.2/tcp/1"))
	}
	if n := len(flood.seen); n > maxObservedLocals {
		t.Fatalf("%d local sockets kept", n)
	}
	for _, o := range flood.seen {
		if len(o) > maxObserversPerLocal {
			t.Fatalf("%d observers kept", len(o))
		}
	}
}

// FuzzNATObserver: observed addresses are a peer's word; whatever bytes
// they hold, the observer neither panics nor grows past its bounds.
func FuzzNATObserver(f *testing.F) {
	f.Add([]byte(ma.StringCast("/ip4/192.168.1.2/tcp/7460").Bytes()), []byte(ma.StringCast("/ip4/11.0.0.9/tcp/7460").Bytes()), []byte(ma.StringCast("/ip4/11.0.0.2/tcp/7460").Bytes()))
	f.Add([]byte(ma.StringCast("/ip6/::1/udp/1/quic-v1").Bytes()), []byte{}, []byte(ma.StringCast("/ip4/11.0.0.2/udp/1/quic-v1/p2p-circuit").Bytes()))
	f.Fuzz(func(t *testing.T, local, remote, obs []byte) {
		var o natObserver
		parse := func(b []byte) ma.Multiaddr {
			a, err := ma.NewMultiaddrBytes(b)
			if err != nil {
				return nil
			}
			return a
		}
		l, r, x := parse(local), parse(remote), parse(obs)
		for range 3 {
			o.add(testPeer, l, r, x)
		}
		o.kinds()
		if got := o.addrs(); len(got) > maxObservedShown {
			t.Fatalf("%d addresses", len(got))
		}
	})
}
