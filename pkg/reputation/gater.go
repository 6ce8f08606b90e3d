package reputation

import (
	"log/slog"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Standing is what the gater asks; *Book implements it.
type Standing interface {
	Blocked(peer.ID) bool
}

var _ Standing = (*Book)(nil)

// Gater is a connmgr.ConnectionGater that refuses dials to and connections
// from peers in bad standing. Pass it to libp2p.ConnectionGater; call Sweep
// after scores change to drop connections that already exist.
type Gater struct {
	s   Standing
	log *slog.Logger
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// NewGater returns a gater over s; log may be nil.
func NewGater(s Standing, log *slog.Logger) *Gater {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gater{s: s, log: log}
}

func (g *Gater) allow(p peer.ID, what string) bool {
	if g.s.Blocked(p) {
		g.log.Debug("reputation: refusing low-standing peer", "peer", p, "at", what)
		return false
	}
	return true
}

// InterceptPeerDial implements connmgr.ConnectionGater.
func (g *Gater) InterceptPeerDial(p peer.ID) bool { return g.allow(p, "dial") }

// InterceptAddrDial implements connmgr.ConnectionGater.
func (g *Gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allow(p, "dial") }

// InterceptAccept implements connmgr.ConnectionGater: the peer is not known
// yet, so every inbound connection may proceed to the handshake.
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured implements connmgr.ConnectionGater.
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allow(p, "secured")
}

// InterceptUpgraded implements connmgr.ConnectionGater.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// Sweep closes connections to peers now in bad standing and returns how many
// peers it disconnected.
func (g *Gater) Sweep(n network.Network) int {
	dropped := 0
	for _, p := range n.Peers() {
		if g.s.Blocked(p) {
			g.log.Info("reputation: disconnecting low-standing peer", "peer", p)
			if err := n.ClosePeer(p); err == nil {
				dropped++
			}
		}
	}
	return dropped
}
