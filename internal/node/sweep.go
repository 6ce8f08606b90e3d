package node

import (
	"context"
	"fmt"

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

// HoldScanFrom is where the hold-key scan of a seed starts (payment's
// ManagerConfig.HoldScanFrom): the wallet's birthday block, less a day of
// blocks for clocks that were off. It fails while the wallet is not synced.
func (l *liveWallet) HoldScanFrom(ctx context.Context) (int32, error) {
	var h int32
	err := l.with(func(w *payment.Wallet) error {
		b, ok := w.BirthdayHeight()
		if !ok {
			return fmt.Errorf("%w: the wallet's birthday block is not known yet", payment.ErrNotSynced)
		}
		h = max(b-144, 1)
		return nil
	})
	return h, err
}
