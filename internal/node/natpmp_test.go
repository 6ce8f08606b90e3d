package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
	ma "github.com/multiformats/go-multiaddr"
)

// fakeGateway is a NAT-PMP router that can be told to fail: it answers
// with ext as its external address and epoch as its age (plus the
// seconds from start to now, the time of the step under test), and grants
// what grant says (nil: what was asked; grant's answers get the epoch
// too). It records every request.
type fakeGateway struct {
	mu     sync.Mutex
	ext    [4]byte
	epoch  uint32
	start  time.Time
	now    time.Time // set by mustStep
	extErr error
	grant  func(proto string, internal, want, life int) (*natpmp.AddPortMappingResult, error)
	calls  []string // "tcp 7460 7460 7200": protocol, internal, requested, lifetime
}

func (f *fakeGateway) GetExternalAddress() (*natpmp.GetExternalAddressResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.extErr != nil {
		return nil, f.extErr
	}
	return &natpmp.GetExternalAddressResult{SecondsSinceStartOfEpoc: f.age(), ExternalIPAddress: f.ext}, nil
}

// age is the router's epoch now (f.mu held).
func (f *fakeGateway) age() uint32 {
	if f.start.IsZero() || f.now.Before(f.start) {
		return f.epoch
	}
	return f.epoch + uint32(f.now.Sub(f.start)/time.Second)
}

func (f *fakeGateway) AddPortMapping(proto string, internal, want, life int) (*natpmp.AddPortMappingResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %d %d %d", proto, internal, want, life))
	grant, epoch := f.grant, f.age()
	f.mu.Unlock()
	if grant != nil {
		res, err := grant(proto, internal, want, life)
		if res != nil {
			res.SecondsSinceStartOfEpoc = epoch
		}
		return res, err
	}
	return &natpmp.AddPortMappingResult{SecondsSinceStartOfEpoc: epoch, InternalPort: uint16(internal), MappedExternalPort: uint16(want), PortMappingLifetimeInSeconds: uint32(life)}, nil
}

// took returns and forgets the requests made so far.
func (f *fakeGateway) took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeGateway) set(fn func(*fakeGateway)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

var (
	pmpTCP  = pmpPort{"tcp", 7460}
	pmpUDP  = pmpPort{"udp", 7460}
	tcpAddr = ma.StringCast("/ip4/0.0.0.0/tcp/7460")
	udpAddr = ma.StringCast("/ip4/0.0.0.0/udp/7460/quic-v1")
)

// testPMP is a mapper of ports on gw (gw nil: there is no gateway).
func testPMP(gw *fakeGateway, ports *[]pmpPort) *natPMP {
	p := &natPMP{log: slog.New(slog.NewTextHandler(io.Discard, nil)), lifetime: 2 * time.Hour,
		state: PortMapSearching, maps: map[pmpPort]*pmpMapping{}}
	p.dial = func() (pmpClient, error) {
		if gw == nil {
			return nil, errors.New("no IPv4 gateway")
		}
		return gw, nil
	}
	p.ports = func() []pmpPort { return slices.Clone(*ports) }
	return p
}

// mustStep steps p at now (gw's clock with it).
func mustStep(t *testing.T, p *natPMP, gw *fakeGateway, now time.Time) time.Time {
	t.Helper()
	gw.set(func(f *fakeGateway) {
		if f.start.IsZero() {
			f.start = now
		}
		f.now = now
	})
	next, ok := p.step(now)
	if !ok {
		t.Fatalf("step at %s: the mapper stopped", now)
	}
	return next
}

func addrOf(a ma.Multiaddr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// TestNATPMPNoRouter: no gateway, or a gateway that does not answer
// NAT-PMP: no_router, nothing asked, nothing mapped, and the mapper stops.
func TestNATPMPNoRouter(t *testing.T) {
	ports := []pmpPort{pmpTCP}
	p := testPMP(nil, &ports)
	if s := p.status(); s != PortMapSearching {
		t.Errorf("before the first step: %s", s)
	}
	if _, ok := p.step(time.Now()); ok || p.status() != PortMapNoRouter {
		t.Errorf("no gateway: going on %v, status %s", ok, p.status())
	}
	gw := &fakeGateway{extErr: errors.New("connection refused")}
	p = testPMP(gw, &ports)
	if _, ok := p.step(time.Now()); ok || p.status() != PortMapNoRouter {
		t.Errorf("no NAT-PMP: going on %v, status %s", ok, p.status())
	}
	if c := gw.took(); len(c) > 0 || p.mapping(tcpAddr) != nil {
		t.Errorf("no NAT-PMP: asked %q, mapped %v", c, p.mapping(tcpAddr))
	}
	p.close() // never started: nothing to delete, no hang
	if c := gw.took(); len(c) > 0 {
		t.Errorf("close asked %q", c)
	}
}

// TestNATPMPRefused: a router that refuses one port, grants nothing
// usable (port 0, lifetime 0, another internal port) or has no external
// address: that port is not advertised, the others are, and the refused
// one is asked again after a backoff that doubles.
func TestNATPMPRefused(t *testing.T) {
	ports := []pmpPort{pmpTCP, pmpUDP}
	for _, tc := range []struct {
		name string
		res  *natpmp.AddPortMappingResult
		err  error
	}{
		{"error", nil, errors.New("Non-zero result code 2")},
		{"port 0", &natpmp.AddPortMappingResult{InternalPort: 7460, MappedExternalPort: 0, PortMappingLifetimeInSeconds: 7200}, nil},
		{"lifetime 0", &natpmp.AddPortMappingResult{InternalPort: 7460, MappedExternalPort: 7460}, nil},
		{"another internal port", &natpmp.AddPortMappingResult{InternalPort: 7461, MappedExternalPort: 7460, PortMappingLifetimeInSeconds: 7200}, nil},
	} {
		refuseUDP := true
		gw := &fakeGateway{ext: [4]byte{203, 0, 113, 7}, epoch: 100}
		gw.grant = func(proto string, internal, want, life int) (*natpmp.AddPortMappingResult, error) {
			if proto == "udp" && refuseUDP {
				return tc.res, tc.err
			}
			return &natpmp.AddPortMappingResult{InternalPort: uint16(internal), MappedExternalPort: uint16(want), PortMappingLifetimeInSeconds: uint32(life)}, nil
		}
		p := testPMP(gw, &ports)
		t0 := time.Now()
		next := mustStep(t, p, gw, t0)
		if s := p.statusAt(t0); s != PortMapMapped {
			t.Errorf("%s: status %s with tcp mapped", tc.name, s)
		}
		if got := addrOf(p.mappingAt(tcpAddr, t0)); got != "/ip4/203.0.113.7/tcp/7460" {
			t.Errorf("%s: tcp maps to %q", tc.name, got)
		}
		if got := p.mappingAt(udpAddr, t0); got != nil {
			t.Errorf("%s: refused udp advertised as %s", tc.name, got)
		}
		if want := t0.Add(pmpRetry); !next.Equal(want) {
			t.Errorf("%s: next step in %s, want the retry in %s", tc.name, next.Sub(t0), pmpRetry)
		}
		gw.took()
		// Refused again: the wait doubles; only udp is asked (tcp is not due).
		if next = mustStep(t, p, gw, next); !next.Equal(t0.Add(pmpRetry + 2*pmpRetry)) {
			t.Errorf("%s: second retry in %s, want %s", tc.name, next.Sub(t0.Add(pmpRetry)), 2*pmpRetry)
		}
		if c := gw.took(); !slices.Equal(c, []string{"udp 7460 7460 7200"}) {
			t.Errorf("%s: the retry asked %q", tc.name, c)
		}
		refuseUDP = false
		mustStep(t, p, gw, next)
		if got := addrOf(p.mappingAt(udpAddr, next)); got != "/ip4/203.0.113.7/udp/7460/quic-v1" {
			t.Errorf("%s: after the router granted it, udp maps to %q", tc.name, got)
		}
	}

	// A router with no external address (0.0.0.0: its WAN is down) maps
	// ports nobody can reach: nothing advertised, refused.
	gw := &fakeGateway{epoch: 100}
	p := testPMP(gw, &ports)
	now := time.Now()
	mustStep(t, p, gw, now)
	if s, a := p.statusAt(now), p.mappingAt(tcpAddr, now); s != PortMapRefused || a != nil {
		t.Errorf("external address 0.0.0.0: %s, advertised %v", s, a)
	}
}

// TestNATPMPRenewalFails: a mapping whose renewal the router refuses is
// still advertised while the router forwards it, retried well before it
// lapses, dropped from the addresses when it lapsed, and back once the
// router grants it again. A router that grants another port and a
// shorter lifetime is taken at its word, and asked for that port again.
func TestNATPMPRenewalFails(t *testing.T) {
	ports := []pmpPort{pmpTCP}
	gw := &fakeGateway{ext: [4]byte{203, 0, 113, 7}, epoch: 100}
	gw.grant = func(proto string, internal, want, life int) (*natpmp.AddPortMappingResult, error) {
		return &natpmp.AddPortMappingResult{InternalPort: uint16(internal), MappedExternalPort: 40001, PortMappingLifetimeInSeconds: 600}, nil
	}
	p := testPMP(gw, &ports)
	t0 := time.Now()
	renew := mustStep(t, p, gw, t0)
	if want := t0.Add(5 * time.Minute); !renew.Equal(want) {
		t.Errorf("renewal at %s, want half the granted 600 s", renew.Sub(t0))
	}
	if got := addrOf(p.mappingAt(tcpAddr, t0)); got != "/ip4/203.0.113.7/tcp/40001" {
		t.Errorf("granted 40001: maps to %q", got)
	}
	gw.took()
	gw.set(func(f *fakeGateway) {
		f.grant = func(string, int, int, int) (*natpmp.AddPortMappingResult, error) {
			return nil, errors.New("Timed out trying to contact gateway")
		}
	})
	expires := t0.Add(10 * time.Minute)
	now, steps := renew, 0
	for now.Before(expires) {
		if p.mappingAt(tcpAddr, now) == nil || p.statusAt(now) != PortMapMapped {
			t.Fatalf("%s after the mapping, before it lapses: not advertised (%s)", now.Sub(t0), p.statusAt(now))
		}
		now = mustStep(t, p, gw, now)
		steps++
	}
	if c := gw.took(); len(c) != steps || c[0] != "tcp 7460 40001 7200" {
		t.Errorf("renewals asked %q in %d steps, want the granted port 40001 each time", c, steps)
	}
	if steps < 3 {
		t.Errorf("only %d renewal attempts before the mapping lapsed", steps)
	}
	if a, s := p.mappingAt(tcpAddr, expires), p.statusAt(expires); a != nil || s != PortMapRefused {
		t.Errorf("lapsed: advertised %v, status %s", a, s)
	}
	gw.set(func(f *fakeGateway) { f.grant = nil })
	now = now.Add(time.Minute) // the retry is due by then
	mustStep(t, p, gw, now)
	if got := addrOf(p.mappingAt(tcpAddr, now)); got != "/ip4/203.0.113.7/tcp/40001" {
		t.Errorf("granted again: maps to %q", got)
	}
}

// TestNATPMPRouterRestart: a router whose epoch went back (it restarted
// and forgot its mappings) gets every port asked for again at once, not
// at the next renewal.
func TestNATPMPRouterRestart(t *testing.T) {
	ports := []pmpPort{pmpTCP, pmpUDP}
	gw := &fakeGateway{ext: [4]byte{203, 0, 113, 7}, epoch: 5000}
	p := testPMP(gw, &ports)
	t0 := time.Now()
	next := mustStep(t, p, gw, t0)
	if want := t0.Add(pmpRecheck); !next.Equal(want) {
		t.Fatalf("next step in %s, want the external address check in %s", next.Sub(t0), pmpRecheck)
	}
	gw.took()
	// Five minutes on, the router says it is 30 s old.
	gw.set(func(f *fakeGateway) { f.epoch = 30 })
	mustStep(t, p, gw, next)
	c := gw.took()
	slices.Sort(c)
	if want := []string{"tcp 7460 7460 7200", "udp 7460 7460 7200"}; !slices.Equal(c, want) {
		t.Errorf("after the router restarted: asked %q, want %q", c, want)
	}
	// Its clock going on as expected is no restart: nothing asked.
	gw.set(func(f *fakeGateway) { f.epoch = 30 + 300 })
	mustStep(t, p, gw, next.Add(pmpRecheck))
	if c := gw.took(); len(c) > 0 {
		t.Errorf("no restart: asked %q", c)
	}
}

// TestNATPMPTeardown: a port no longer listened on is deleted on the
// router; close deletes the rest, a delete the router fails does not stop
// the others, nothing is advertised after close, and start after close
// does nothing.
func TestNATPMPTeardown(t *testing.T) {
	ports := []pmpPort{pmpTCP, pmpUDP, {"tcp", 7461}}
	gw := &fakeGateway{ext: [4]byte{203, 0, 113, 7}, epoch: 100}
	p := testPMP(gw, &ports)
	now := time.Now()
	mustStep(t, p, gw, now)
	gw.took()
	ports = ports[:2]
	mustStep(t, p, gw, now.Add(time.Second))
	if c := gw.took(); !slices.Equal(c, []string{"tcp 7461 0 0"}) {
		t.Errorf("port 7461 closed: asked %q, want its delete", c)
	}
	if a := p.mappingAt(ma.StringCast("/ip4/0.0.0.0/tcp/7461"), now); a != nil {
		t.Errorf("port 7461 closed: still advertised as %s", a)
	}

	// close with the run loop started: the loop ends, the rest is deleted,
	// the udp delete failing does not stop the tcp one.
	p = testPMP(gw, &ports)
	gw.set(func(f *fakeGateway) {
		f.grant = func(proto string, internal, want, life int) (*natpmp.AddPortMappingResult, error) {
			if life == 0 && proto == "udp" {
				return nil, errors.New("Timed out trying to contact gateway")
			}
			return &natpmp.AddPortMappingResult{InternalPort: uint16(internal), MappedExternalPort: uint16(want), PortMappingLifetimeInSeconds: uint32(life)}, nil
		}
	})
	p.start()
	for i := 0; p.status() != PortMapMapped; i++ {
		if i > 5000 {
			t.Fatalf("started: never mapped (%s)", p.status())
		}
		time.Sleep(time.Millisecond)
	}
	gw.took()
	p.close()
	c := gw.took()
	slices.Sort(c)
	if want := []string{"tcp 7460 0 0", "udp 7460 0 0"}; !slices.Equal(c, want) {
		t.Errorf("close asked %q, want %q", c, want)
	}
	if a := p.mapping(tcpAddr); a != nil {
		t.Errorf("closed: still advertised as %s", a)
	}
	p.close() // twice: nothing more
	p.start()
	time.Sleep(20 * time.Millisecond)
	if c := gw.took(); len(c) > 0 {
		t.Errorf("closed twice and started: asked %q", c)
	}
}

// TestListenPorts: which listen addresses a router can forward to.
func TestListenPorts(t *testing.T) {
	var addrs []ma.Multiaddr
	for _, s := range []string{
		"/ip4/0.0.0.0/tcp/7460", "/ip4/0.0.0.0/udp/7460/quic-v1", "/ip4/0.0.0.0/udp/7460/quic-v1/webtransport",
		"/ip4/192.168.1.2/tcp/7461", "/ip4/127.0.0.1/tcp/7462", "/ip6/::/tcp/7460", "/p2p-circuit",
	} {
		addrs = append(addrs, ma.StringCast(s))
	}
	got := listenPorts(addrs)
	if want := []pmpPort{pmpTCP, pmpUDP, {"tcp", 7461}}; !slices.Equal(got, want) {
		t.Errorf("listen ports %v, want %v", got, want)
	}
}

// FuzzNATPMPGrant: whatever the router answers to a mapping request (a
// port, a lifetime, an internal port, an epoch; or for its external
// address), the mapper advertises a mapping only of the port asked, to a
// port and for a time the router granted, and never steps again in the
// past.
func FuzzNATPMPGrant(f *testing.F) {
	f.Add(uint16(7460), uint16(7460), uint32(7200), uint32(100), uint32(200), []byte{203, 0, 113, 7})
	f.Add(uint16(7461), uint16(0), uint32(0), uint32(0), uint32(0), []byte{0, 0, 0, 0})
	f.Add(uint16(7460), uint16(65535), uint32(1), uint32(1<<32-1), uint32(0), []byte{255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, internal, ext uint16, life, epoch, epoch2 uint32, ip []byte) {
		var ext4 [4]byte
		copy(ext4[:], ip)
		ports := []pmpPort{pmpTCP}
		gw := &fakeGateway{ext: ext4, epoch: epoch}
		gw.grant = func(string, int, int, int) (*natpmp.AddPortMappingResult, error) {
			return &natpmp.AddPortMappingResult{InternalPort: internal, MappedExternalPort: ext, PortMappingLifetimeInSeconds: life}, nil
		}
		p := testPMP(gw, &ports)
		now := time.Now()
		next := mustStep(t, p, gw, now)
		gw.set(func(f *fakeGateway) { f.epoch = epoch2 })
		for range 3 {
			if !next.After(now) {
				t.Fatalf("next step at %s, not after %s", next, now)
			}
			a := p.mappingAt(tcpAddr, now)
			granted := internal == 7460 && ext != 0 && life != 0 && ext4 != [4]byte{}
			if a == nil {
				if granted {
					t.Fatalf("granted %d for %d s on %v: not advertised", ext, life, ext4)
				}
			} else if want := fmt.Sprintf("/ip4/%s/tcp/%d", netip.AddrFrom4(ext4), ext); !granted || a.String() != want {
				t.Fatalf("advertised %s, want %q (granted %v)", a, want, granted)
			}
			now = next
			next = mustStep(t, p, gw, now)
		}
	})
}
