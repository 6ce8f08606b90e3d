package node

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	inat "github.com/libp2p/go-libp2p/p2p/net/nat"
)

// fakeNAT is a NAT manager that found a router (or not) and maps what
// mapped says.
type fakeNAT struct {
	found  bool
	mapped map[string]string // listen address → external address
}

func (f *fakeNAT) GetMapping(a ma.Multiaddr) ma.Multiaddr {
	if ext, ok := f.mapped[a.String()]; ok {
		return ma.StringCast(ext)
	}
	return nil
}
func (f *fakeNAT) HasDiscoveredNAT() bool { return f.found }
func (f *fakeNAT) Close() error           { return nil }

// listenNet is a network that only has listen addresses.
type listenNet struct {
	network.Network
	addrs []ma.Multiaddr
}

func (l listenNet) ListenAddresses() []ma.Multiaddr { return l.addrs }

// settled is p.status once its background check has answered.
func settled(t *testing.T, p *portMapper) (string, []string) {
	t.Helper()
	p.status()
	for range 1000 {
		p.mu.Lock()
		done := !p.checking && p.state != ""
		p.mu.Unlock()
		if done {
			return p.status()
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the port mapping check never answered")
	return "", nil
}

// TestPortMapperStatus: what status says of port mapping in each case.
func TestPortMapperStatus(t *testing.T) {
	tcp, quic := ma.StringCast("/ip4/0.0.0.0/tcp/7460"), ma.StringCast("/ip4/0.0.0.0/udp/7460/quic-v1")
	nw := listenNet{addrs: []ma.Multiaddr{tcp, quic}}
	var off *portMapper
	if s, m := off.status(); s != PortMapOff || m != nil {
		t.Errorf("off: %s %v", s, m)
	}
	if s, _ := (&portMapper{}).status(); s != PortMapSearching {
		t.Errorf("before the host made its manager: %s", s)
	}
	for _, tc := range []struct {
		name   string
		nat    *fakeNAT
		age    time.Duration
		want   string
		mapped []string
	}{
		{"looking", &fakeNAT{}, time.Second, PortMapSearching, nil},
		{"nobody answered", &fakeNAT{}, inat.DiscoveryTimeout + 3*time.Second, PortMapNoRouter, nil},
		{"router, no mapping", &fakeNAT{found: true}, time.Second, PortMapRefused, nil},
		{"mapped", &fakeNAT{found: true, mapped: map[string]string{
			tcp.String():  "/ip4/11.0.0.1/tcp/51291",
			quic.String(): "/ip4/11.0.0.1/udp/51291/quic-v1",
		}}, time.Minute, PortMapMapped, []string{"/ip4/11.0.0.1/tcp/51291", "/ip4/11.0.0.1/udp/51291/quic-v1"}},
	} {
		p := &portMapper{mgr: tc.nat, net: nw, started: time.Now().Add(-tc.age)}
		s, m := settled(t, p)
		if s != tc.want || !slices.Equal(m, tc.mapped) {
			t.Errorf("%s: %s %v, want %s %v", tc.name, s, m, tc.want, tc.mapped)
		}
	}
}
