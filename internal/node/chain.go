package node

import (
	"context"
	"fmt"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// lightSyncTimeout bounds how long serve waits at start for the light
// client to catch up with its peers before the wallet opens.
const lightSyncTimeout = 2 * time.Minute

// waitChain checks the chain backend at start and, for the light client,
// waits until it has caught up with its peers. It returns why payments
// cannot start yet ("" when they can); the node keeps trying
// (chainsource.go).
func (n *Node) waitChain(ctx context.Context, cfg payment.Config, chain payment.ChainSource) string {
	if light, ok := chain.(*payment.NeutrinoChain); ok {
		n.log.Info("light client syncing", "network", cfg.Network, "peers", cfg.Peers, "dir", payment.NeutrinoDir(n.cfg.DataDir, cfg))
		sctx, cancel := context.WithTimeout(ctx, lightSyncTimeout)
		defer cancel()
		start := time.Now()
		if err := light.WaitSynced(sctx); err != nil {
			tip, _ := light.Tip(ctx)
			return fmt.Sprintf("the light client has not caught up with its peers in %s (tip %d): %v", lightSyncTimeout, tip, err)
		}
		tip, _ := light.Tip(ctx)
		n.log.Info("light client synced", "network", cfg.Network, "tip", tip, "took", time.Since(start).Round(time.Millisecond))
	}
	return n.checkChainAtStart(ctx, chain)
}

// bitcoinStatus is status's Bitcoin line: the network, the backend, the
// tip and the fee rate a transaction would pay now, with its source.
func (n *Node) bitcoinStatus(ctx context.Context) api.BitcoinStatus {
	cfg := n.cfg.Payment
	b := api.BitcoinStatus{Network: payment.CanonicalNetwork(cfg.Network), Backend: cfg.Backend}
	if n.chain == nil {
		return b
	}
	if n.wallet != nil && !n.wallet.chainUp() {
		// The chain source does not answer (the live wallet keeps
		// trying): status says what it last knew at once rather than
		// wait out the backend's retries (btcd's client retries a
		// refused connection for seconds).
		b.Height = n.wallet.status().Height
		return b
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if tip, err := n.chain.Tip(ctx); err == nil {
		b.Height = tip
	}
	b.FeeRate, b.FeeSource = cfg.FeeRateSource(ctx, n.chain, 6)
	return b
}
