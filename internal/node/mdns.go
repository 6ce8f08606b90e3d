package node

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// mDNS restarts: the first after mdnsFirstRestart, doubling up to
// mdnsMaxRestart, which is also the pace once a LAN peer was found.
const (
	mdnsFirstRestart = 5 * time.Second
	mdnsMaxRestart   = 5 * time.Minute
)

// startMDNS finds blackbox nodes on the LAN with no bootstrap address.
// zeroconf's browser stops asking as soon as any answer comes (this node's
// own included), so two nodes starting together can each miss the other's
// one announcement and never meet. The service is therefore started anew (a
// new query and announcement) after 5 s, 10 s, 20 s … and every 5 min
// at most; a machine without multicast still works through bootstrap peers.
func (n *Node) startMDNS(runCtx, loopCtx context.Context) {
	conn := &mdnsConnector{h: n.host, ctx: runCtx, log: n.log}
	start := func() mdns.Service {
		svc := mdns.NewMdnsService(n.host, MDNSService, conn)
		if err := svc.Start(); err != nil {
			n.log.Warn("mDNS unavailable; LAN peers will not be found automatically", "err", err)
			return nil
		}
		return svc
	}
	svc := start()
	if svc == nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		wait := mdnsFirstRestart
		for {
			select {
			case <-loopCtx.Done():
				svc.Close()
				return
			case <-time.After(wait):
			}
			svc.Close()
			if svc = start(); svc == nil {
				return
			}
			wait = min(2*wait, mdnsMaxRestart)
			if conn.found.Load() {
				wait = mdnsMaxRestart
			}
		}
	}()
}

// mdnsConnector connects to blackbox nodes seen on the LAN; the DHT then
// adds them to its routing table.
type mdnsConnector struct {
	h     host.Host
	ctx   context.Context
	log   *slog.Logger
	found atomic.Bool // a LAN peer was connected
}

// HandlePeerFound implements mdns.Notifee.
func (m *mdnsConnector) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.h.ID() {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
		defer cancel()
		if err := m.h.Connect(ctx, ai); err != nil {
			m.log.Debug("mDNS peer unreachable", "peer", ai.ID, "err", err)
			return
		}
		m.found.Store(true)
		m.log.Debug("mDNS peer connected", "peer", ai.ID)
	}()
}
