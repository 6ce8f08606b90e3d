package node

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// Browse searches the market without a running daemon: it joins the network
// for a moment as a DHT client under a throwaway identity (through the
// configured bootstrap peers and, if enabled, mDNS), waits up to settle for
// a first peer, finds the offers matching f, and leaves.
func Browse(ctx context.Context, cfg Config, f offer.Filter, settle time.Duration, log *slog.Logger) ([]*offer.Offer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	boot, err := cfg.BootstrapPeers()
	if err != nil {
		return nil, fmt.Errorf("config: bootstrap: %w", err)
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings("/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
	)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	defer h.Close()
	d, err := offer.NewDHT(h, false, boot, nil)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	for _, b := range boot {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := h.Connect(cctx, b); err != nil {
			log.Warn("bootstrap peer unreachable", "peer", b.ID, "err", err)
		}
		cancel()
	}
	if cfg.MDNS {
		svc := mdns.NewMdnsService(h, MDNSService, &mdnsConnector{h: h, ctx: ctx, log: log})
		if err := svc.Start(); err == nil {
			defer svc.Close()
		}
	}
	// Wait for a first DHT server in the routing table (a connected peer
	// enters it once identify has shown it speaks blackbox's DHT).
	deadline := time.Now().Add(settle)
	for d.RoutingTable().Size() == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if d.RoutingTable().Size() == 0 {
		return nil, fmt.Errorf("no blackbox peers found in %s: give bootstrap addresses (config key bootstrap) or start `blackbox serve`", settle)
	}
	<-d.RefreshRoutingTable()
	disc := offer.NewDiscoverer(offer.DiscovererConfig{Host: h, Finder: d, Log: log})
	return disc.Find(ctx, f)
}
