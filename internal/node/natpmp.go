package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-netroute"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Port mapping protocols (api.Reachability.PortMappingProtocol).
const (
	// MappedByUPnP: go-libp2p's NAT manager found a UPnP IGD. (It also
	// speaks NAT-PMP, but on Linux never gets to: it asks go-netroute for
	// the route to 0.0.0.0 to find the gateway, which go-netroute v0.4.0
	// refuses there.)
	MappedByUPnP = "upnp"
	// MappedByNATPMP: our natPMP mapper, the fallback when go-libp2p found
	// no router.
	MappedByNATPMP = "natpmp"
)

// NAT-PMP timing (RFC 6886).
const (
	// pmpLifetime is the lifetime asked for each mapping: the RFC's
	// recommended 7200 s. A node that dies without deleting its mappings
	// leaves them for at most this long; when it comes back it asks for
	// the same ports and gets them back.
	pmpLifetime = 2 * time.Hour
	// pmpTimeout bounds one request, retries included (250 ms, 500 ms,
	// 1 s, ... as the RFC says). A router that does not speak NAT-PMP
	// usually answers with ICMP port unreachable, which ends it at once.
	pmpTimeout = 3 * time.Second
	// pmpRecheck is how often the router's external address is asked
	// again between renewals (it changes when the ISP gives the router
	// another address).
	pmpRecheck = 5 * time.Minute
	// pmpRetry is the first wait after a refused or failed request; it
	// doubles with each failure up to pmpRetryMax.
	pmpRetry    = 5 * time.Second
	pmpRetryMax = 5 * time.Minute
)

// pmpClient is the NAT-PMP conversation with the gateway (jackpal's
// go-nat-pmp Client). Each call blocks until the gateway answered or the
// client's timeout passed. AddPortMapping with requestedExternalPort and
// lifetime 0 deletes the mapping of internalPort.
type pmpClient interface {
	GetExternalAddress() (*natpmp.GetExternalAddressResult, error)
	AddPortMapping(protocol string, internalPort, requestedExternalPort, lifetime int) (*natpmp.AddPortMappingResult, error)
}

// pmpPort is a listen port: "tcp" or "udp", and the port.
type pmpPort struct {
	proto string
	port  int
}

// pmpMapping is what the router holds for one listen port.
type pmpMapping struct {
	ext     int       // the WAN port granted (0: never granted)
	expires time.Time // when the router drops it unless renewed
	next    time.Time // when to ask next (renew, or retry)
	fails   int       // requests failed in a row
}

// live reports whether the router forwards the mapping at now.
func (m *pmpMapping) live(now time.Time) bool { return m.ext != 0 && now.Before(m.expires) }

// natPMP maps the host's IPv4 listen ports (TCP and UDP) on the default
// gateway through NAT-PMP (RFC 6886): it asks for the gateway's external
// address, maps each port to the same WAN port where the router allows
// (else takes the port it gives), renews each mapping at half its
// lifetime, re-maps everything when the router restarted (its epoch went
// back), and deletes the mappings when closed. One goroutine (run) talks
// to the router; status and mapping read what it found.
type natPMP struct {
	log *slog.Logger
	// dial finds the gateway and makes its client; an error means there
	// is no gateway to ask.
	dial func() (pmpClient, error)
	// ports are the listen ports to map now.
	ports    func() []pmpPort
	lifetime time.Duration

	// owned by run (and by close once run ended)
	client    pmpClient
	epoch     uint32    // the router's last seconds-since-start-of-epoch
	epochAt   time.Time // when it said so
	nextCheck time.Time // when to ask the external address again

	mu sync.Mutex
	// state is PortMapSearching, PortMapNoRouter, or PortMapRefused once
	// the gateway answered (statusAt tells mapped from the mappings)
	state  string
	extIP  netip.Addr
	maps   map[pmpPort]*pmpMapping
	closed bool
	cancel context.CancelFunc
	done   chan struct{}
}

// newNATPMP is the mapper of n's listen ports on the default gateway.
func newNATPMP(n network.Network, log *slog.Logger) *natPMP {
	return &natPMP{log: log, dial: dialGateway, ports: func() []pmpPort { return listenPorts(n.ListenAddresses()) },
		lifetime: pmpLifetime, state: PortMapSearching, maps: map[pmpPort]*pmpMapping{}}
}

// dialGateway is a NAT-PMP client of the default gateway: the next hop
// towards a public address (no packet is sent to it).
func dialGateway() (pmpClient, error) {
	r, err := netroute.New()
	if err != nil {
		return nil, fmt.Errorf("read the routing table: %w", err)
	}
	_, gw, _, err := r.Route(net.IPv4(1, 1, 1, 1))
	if err != nil {
		return nil, fmt.Errorf("route to the internet: %w", err)
	}
	if gw == nil || gw.To4() == nil {
		return nil, errors.New("no IPv4 gateway: the internet is on-link")
	}
	return natpmp.NewClientWithTimeout(gw, pmpTimeout), nil
}

// listenPorts are the TCP and UDP ports of the IPv4 listen addresses a
// router can forward to (unspecified or global unicast, not loopback),
// each once (QUIC and WebTransport share a UDP port).
func listenPorts(addrs []ma.Multiaddr) []pmpPort {
	var out []pmpPort
	seen := map[pmpPort]bool{}
	for _, a := range addrs {
		p, ok := mappable(a)
		if ok && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// mappable is the port of a if a is an IPv4 TCP or UDP address a router
// could forward to, and the rest of a after the port (/quic-v1, ...).
func mappable(a ma.Multiaddr) (pmpPort, bool) {
	p, _, ok := splitPort(a)
	return p, ok
}

// splitPort splits a into its port and what follows the port.
func splitPort(a ma.Multiaddr) (pmpPort, ma.Multiaddr, bool) {
	if len(a) < 2 || a[0].Code() != ma.P_IP4 {
		return pmpPort{}, nil, false
	}
	ip, ok := netip.AddrFromSlice(a[0].RawValue())
	if !ok || !(ip.IsUnspecified() || ip.IsGlobalUnicast()) {
		return pmpPort{}, nil, false
	}
	var proto string
	switch a[1].Code() {
	case ma.P_TCP:
		proto = "tcp"
	case ma.P_UDP:
		proto = "udp"
	default:
		return pmpPort{}, nil, false
	}
	na, err := manet.ToNetAddr(a[:2])
	if err != nil {
		return pmpPort{}, nil, false
	}
	var port int
	switch na := na.(type) {
	case *net.TCPAddr:
		port = na.Port
	case *net.UDPAddr:
		port = na.Port
	}
	if port == 0 {
		return pmpPort{}, nil, false
	}
	return pmpPort{proto, port}, a[2:], true
}

// start runs the mapper until close.
func (p *natPMP) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		return
	}
	p.cancel, p.done = cancel, make(chan struct{})
	p.mu.Unlock()
	go func() {
		defer close(p.done)
		p.run(ctx)
	}()
}

// run steps until the gateway turns out not to speak NAT-PMP or ctx ends.
func (p *natPMP) run(ctx context.Context) {
	for {
		next, ok := p.step(time.Now())
		if !ok {
			return
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// step does what is due at now: find the gateway (the first time), ask
// its external address when due, map the listen ports not mapped, renew
// those due, delete those no longer listened on. It returns when to step
// again; false when there is nothing to do ever (no gateway, or it does
// not answer NAT-PMP).
func (p *natPMP) step(now time.Time) (time.Time, bool) {
	if p.client == nil {
		c, err := p.dial()
		if err == nil {
			_, err = p.external(c, now)
		}
		if err != nil {
			p.log.Info("NAT-PMP: no router answered", "err", err)
			p.setState(PortMapNoRouter)
			return time.Time{}, false
		}
		p.client = c
		p.setState(PortMapRefused) // answered; statusAt tells mapped
		p.log.Info("NAT-PMP: the gateway answers", "external_ip", p.extIPNow())
	} else if !now.Before(p.nextCheck) {
		if _, err := p.external(p.client, now); err != nil {
			p.log.Info("NAT-PMP: the gateway did not say its external address", "err", err)
		}
	}
	want := map[pmpPort]bool{}
	for _, port := range p.ports() {
		want[port] = true
		p.mu.Lock()
		m := p.maps[port]
		if m == nil {
			m = &pmpMapping{}
			p.maps[port] = m
		}
		due := !now.Before(m.next)
		ext := m.ext
		p.mu.Unlock()
		if due {
			p.request(port, ext, now)
		}
	}
	p.mu.Lock()
	var gone []pmpPort
	for port := range p.maps {
		if !want[port] {
			gone = append(gone, port)
		}
	}
	p.mu.Unlock()
	for _, port := range gone {
		p.remove(port)
	}
	next := p.nextCheck
	p.mu.Lock()
	for _, m := range p.maps {
		if m.next.Before(next) {
			next = m.next
		}
	}
	p.mu.Unlock()
	return next, true
}

// external asks the gateway for its external address, and notes a
// router restart (its epoch went back: it lost its mappings) by making
// every mapping due.
func (p *natPMP) external(c pmpClient, now time.Time) (netip.Addr, error) {
	res, err := c.GetExternalAddress()
	p.nextCheck = now.Add(pmpRecheck)
	if err != nil {
		return netip.Addr{}, err
	}
	p.sawEpoch(res.SecondsSinceStartOfEpoc, now)
	ip := netip.AddrFrom4(res.ExternalIPAddress)
	p.mu.Lock()
	if ip != p.extIP {
		p.log.Info("NAT-PMP: external address", "ip", ip)
	}
	p.extIP = ip
	p.mu.Unlock()
	return ip, nil
}

// sawEpoch takes the router's seconds since its start (every answer
// carries them): less than expected from the last answer (with the RFC's
// slack of 1/8 and 2 s) means it restarted and forgot the mappings, so
// they are all asked for again now.
func (p *natPMP) sawEpoch(epoch uint32, now time.Time) {
	if !p.epochAt.IsZero() {
		elapsed := now.Sub(p.epochAt).Seconds()
		if float64(epoch)+2 < float64(p.epoch)+elapsed*7/8 {
			p.log.Info("NAT-PMP: the router restarted, mapping again", "epoch", epoch, "was", p.epoch)
			p.mu.Lock()
			for _, m := range p.maps {
				m.expires, m.next = time.Time{}, time.Time{}
			}
			p.mu.Unlock()
		}
	}
	p.epoch, p.epochAt = epoch, now
}

// request asks the router to map port (to the WAN port it had, else the
// same port) for p.lifetime, and takes what it grants.
func (p *natPMP) request(port pmpPort, ext int, now time.Time) {
	if ext == 0 {
		ext = port.port
	}
	res, err := p.client.AddPortMapping(port.proto, port.port, ext, int(p.lifetime/time.Second))
	if err == nil {
		switch {
		case int(res.InternalPort) != port.port:
			err = fmt.Errorf("the router answered for internal port %d", res.InternalPort)
		case res.MappedExternalPort == 0 || res.PortMappingLifetimeInSeconds == 0:
			err = errors.New("the router granted no port")
		}
	}
	if err == nil {
		p.sawEpoch(res.SecondsSinceStartOfEpoc, now)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.maps[port]
	if err != nil {
		m.fails++
		wait := min(pmpRetry<<min(m.fails-1, 16), pmpRetryMax)
		if m.live(now) {
			// Still forwarded: retry well before it lapses.
			wait = max(min(wait, m.expires.Sub(now)/4), time.Second)
		}
		m.next = now.Add(wait)
		p.log.Info("NAT-PMP: mapping refused", "proto", port.proto, "port", port.port, "err", err, "retry_in", wait)
		return
	}
	life := time.Duration(res.PortMappingLifetimeInSeconds) * time.Second
	if !m.live(now) || m.ext != int(res.MappedExternalPort) {
		p.log.Info("NAT-PMP: mapped", "proto", port.proto, "port", port.port, "external_port", res.MappedExternalPort, "lifetime", life)
	}
	m.ext, m.fails = int(res.MappedExternalPort), 0
	m.expires = now.Add(life)
	m.next = now.Add(life / 2)
}

// remove deletes port's mapping on the router (a port no longer listened
// on, or at close) and forgets it; a router that does not answer drops
// it when its lifetime ends.
func (p *natPMP) remove(port pmpPort) {
	p.mu.Lock()
	m := p.maps[port]
	delete(p.maps, port)
	p.mu.Unlock()
	if m == nil || m.ext == 0 {
		return
	}
	if _, err := p.client.AddPortMapping(port.proto, port.port, 0, 0); err != nil {
		p.log.Info("NAT-PMP: delete mapping", "proto", port.proto, "port", port.port, "err", err)
	}
}

func (p *natPMP) setState(s string) {
	p.mu.Lock()
	p.state = s
	p.mu.Unlock()
}

func (p *natPMP) extIPNow() netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.extIP
}

// mapping is the router's external address of listen address a, or nil
// when it maps none.
func (p *natPMP) mapping(a ma.Multiaddr) ma.Multiaddr { return p.mappingAt(a, time.Now()) }

// mappingAt is mapping at now.
func (p *natPMP) mappingAt(a ma.Multiaddr, now time.Time) ma.Multiaddr {
	port, rest, ok := splitPort(a)
	if !ok {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.maps[port]
	if m == nil || !m.live(now) || !p.extIP.IsValid() || p.extIP.IsUnspecified() {
		return nil
	}
	ext, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/%s/%d", p.extIP, port.proto, m.ext))
	if err != nil {
		return nil
	}
	return ma.Join(ext, rest)
}

// status is the mapper's state: one of the PortMap constants (searching
// until it has asked the gateway).
func (p *natPMP) status() string { return p.statusAt(time.Now()) }

// statusAt is status at now: once the gateway answered, mapped while it
// forwards a port (and has an external address), else refused.
func (p *natPMP) statusAt(now time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != PortMapRefused {
		return p.state
	}
	if p.extIP.IsValid() && !p.extIP.IsUnspecified() {
		for _, m := range p.maps {
			if m.live(now) {
				return PortMapMapped
			}
		}
	}
	return PortMapRefused
}

// close stops the mapper and deletes its mappings on the router.
func (p *natPMP) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return // never started
	}
	cancel()
	<-done
	if p.client == nil {
		return
	}
	p.mu.Lock()
	var ports []pmpPort
	for port := range p.maps {
		ports = append(ports, port)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, port := range ports {
		wg.Go(func() { p.remove(port) })
	}
	wg.Wait()
}
