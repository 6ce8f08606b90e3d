package cli

import (
	"context"
	"fmt"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// startChain starts cfg's chain backend in this process for a command
// that needs it while the node is stopped (the light client's headers are
// the data dir's, and only one process can hold them): the source, cfg
// for the wallet, and a stop function.
func (a *App) startChain(ctx context.Context, cfg payment.Config) (payment.ChainSource, payment.Config, func(), error) {
	chain, cfg, err := payment.OpenChain(cfg, a.DataDir(), a.Logger())
	if err != nil {
		return nil, cfg, func() {}, fmt.Errorf("chain source (%s): %w (is the node running? stop it first, or use its API)", cfg.Backend, err)
	}
	if light, ok := chain.(*payment.NeutrinoChain); ok {
		if err := light.WaitSynced(ctx); err != nil {
			chain.Close()
			return nil, cfg, func() {}, err
		}
	}
	return chain, cfg, chain.Close, nil
}

// chainOf is the chain of an open wallet's config: its light client, or a
// new btcd client.
func (a *App) chainOf(cfg payment.Config) (payment.Chain, func(), error) {
	if l := cfg.LightClient(); l != nil {
		return l, func() {}, nil
	}
	b, err := payment.DialBtcd(cfg, a.Logger())
	if err != nil {
		return nil, func() {}, err
	}
	return b, b.Close, nil
}

// bitcoinString is status's Bitcoin line.
func bitcoinString(b api.BitcoinStatus) string {
	s := b.Network + " via " + b.Backend
	if b.Backend == payment.BackendNeutrino {
		s = b.Network + " via the light client (neutrino)"
	}
	if b.Height > 0 {
		s += fmt.Sprintf(", tip %d", b.Height)
	}
	if b.FeeSource != "" {
		s += fmt.Sprintf(", fee %d sat/vB (%s)", b.FeeRate, b.FeeSource)
	}
	return s
}
