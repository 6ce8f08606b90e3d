package node

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
)

// probeListen binds each fixed TCP and UDP port of the listen addresses
// once, plainly, and lets it go. libp2p's TCP transport binds with
// SO_REUSEPORT, so a second daemon on a port another one holds would start
// and split the incoming connections with it; and the swarm starts as long
// as one address works. A plain bind fails on a port anyone holds, so the
// node refuses to start instead. Port 0 (any port) is not probed.
func probeListen(addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("listen address %q: %w", s, err)
		}
		host, err := a.ValueForProtocol(ma.P_IP4)
		if err != nil {
			if host, err = a.ValueForProtocol(ma.P_IP6); err != nil {
				continue // not an IP address: nothing to probe
			}
		}
		if port, err := a.ValueForProtocol(ma.P_TCP); err == nil && port != "0" {
			ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
			if err != nil {
				return listenErr(s, "TCP", err)
			}
			ln.Close()
		}
		if port, err := a.ValueForProtocol(ma.P_UDP); err == nil && port != "0" {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
			if err != nil {
				return listenErr(s, "UDP", err)
			}
			pc.Close()
		}
	}
	return nil
}

func listenErr(addr, proto string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen %s: %s port in use by another process (another blackbox node?): stop it or pick another port with --listen or the listen key", addr, proto)
	}
	return fmt.Errorf("listen %s: %w", addr, err)
}
