package node

import (
	"context"

	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/btcsuite/btcd/wire"
)

var _ payment.CoinSource = (*liveWallet)(nil)

// LeaseCoins implements payment.CoinSource (wallet coins for a CPFP child
// whose payout output cannot pay it alone): through the open wallet, refused
// with the reason while the chain source is down or the wallet behind it.
func (l *liveWallet) LeaseCoins(ctx context.Context, amount int64, except []wire.OutPoint) ([]payment.Coin, error) {
	if err := l.canFund(); err != nil {
		return nil, err
	}
	var coins []payment.Coin
	err := l.with(func(w *payment.Wallet) (err error) {
		coins, err = w.LeaseCoins(ctx, amount, except)
		return err
	})
	return coins, err
}

// ReleaseCoins implements payment.CoinSource.
func (l *liveWallet) ReleaseCoins(coins []payment.Coin) {
	_ = l.with(func(w *payment.Wallet) error { w.ReleaseCoins(coins); return nil })
}
