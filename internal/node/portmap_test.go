package node

import (
	"net/netip"
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
func settled(t *testing.T, p *portMapper) (string, []string, string) {
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
	return "", nil, ""
}

// TestPortMapperStatus: what status says of port mapping in each case.
func TestPortMapperStatus(t *testing.T) {
	tcp, quic := ma.StringCast("/ip4/0.0.0.0/tcp/7460"), ma.StringCast("/ip4/0.0.0.0/udp/7460/quic-v1")
	nw := listenNet{addrs: []ma.Multiaddr{tcp, quic}}
	var off *portMapper
	if s, m, _ := off.status(); s != PortMapOff || m != nil {
		t.Errorf("off: %s %v", s, m)
	}
	if s, _, _ := (&portMapper{}).status(); s != PortMapSearching {
		t.Errorf("before the host made its manager: %s", s)
	}
	// NAT-PMP fallbacks, in each state.
	pmpIn := func(state string, mapTCP bool) *natPMP {
		p := &natPMP{state: state, extIP: netip.MustParseAddr("11.0.0.2"), maps: map[pmpPort]*pmpMapping{}}
		if mapTCP {
			p.maps[pmpTCP] = &pmpMapping{ext: 40001, expires: time.Now().Add(time.Hour)}
		}
		return p
	}
	late := inat.DiscoveryTimeout + 3*time.Second
	for _, tc := range []struct {
		name   string
		nat    *fakeNAT
		pmp    *natPMP
		age    time.Duration
		want   string
		mapped []string
		proto  string
	}{
		{"looking", &fakeNAT{}, nil, time.Second, PortMapSearching, nil, ""},
		{"nobody answered", &fakeNAT{}, nil, late, PortMapNoRouter, nil, ""},
		{"router, no mapping", &fakeNAT{found: true}, nil, time.Second, PortMapRefused, nil, MappedByUPnP},
		{"mapped", &fakeNAT{found: true, mapped: map[string]string{
			tcp.String():  "/ip4/11.0.0.1/tcp/51291",
			quic.String(): "/ip4/11.0.0.1/udp/51291/quic-v1",
		}}, nil, time.Minute, PortMapMapped, []string{"/ip4/11.0.0.1/tcp/51291", "/ip4/11.0.0.1/udp/51291/quic-v1"}, MappedByUPnP},
		{"UPnP looking, NAT-PMP waits", &fakeNAT{}, pmpIn(PortMapSearching, false), time.Second, PortMapSearching, nil, ""},
		{"no UPnP, NAT-PMP asking", &fakeNAT{}, pmpIn(PortMapSearching, false), late, PortMapSearching, nil, ""},
		{"no UPnP, no NAT-PMP", &fakeNAT{}, pmpIn(PortMapNoRouter, false), late, PortMapNoRouter, nil, ""},
		{"no UPnP, NAT-PMP refused", &fakeNAT{}, pmpIn(PortMapRefused, false), late, PortMapRefused, nil, MappedByNATPMP},
		{"no UPnP, NAT-PMP mapped", &fakeNAT{}, pmpIn(PortMapRefused, true), late, PortMapMapped, []string{"/ip4/11.0.0.2/tcp/40001"}, MappedByNATPMP},
	} {
		p := &portMapper{mgr: tc.nat, pmp: tc.pmp, net: nw, started: time.Now().Add(-tc.age)}
		s, m, proto := settled(t, p)
		if s != tc.want || !slices.Equal(m, tc.mapped) || proto != tc.proto {
			t.Errorf("%s: %s %v %q, want %s %v %q", tc.name, s, m, proto, tc.want, tc.mapped, tc.proto)
		}
		if ext, want := p.GetMapping(tcp), append(tc.mapped, "")[0]; addrOf(ext) != want {
			t.Errorf("%s: the host's mapping of %s is %v, want %q", tc.name, tcp, ext, want)
		}
	}
}
