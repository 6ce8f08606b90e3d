package node

import (
	"github.com/btcsuite/btcd/chaincfg/chainhash"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The buyer's funder wrappers pass the wallet's transaction heights on: a
// channel open carries its funding's input heights to a seller that reads
// them (payment/openhints.go).

var (
	_ payment.TxHeighter = (*liveWallet)(nil)
	_ payment.TxHeighter = (*feeFunder)(nil)
)

// TxHeight implements payment.TxHeighter with the wallet open now (0 when
// none is).
func (l *liveWallet) TxHeight(txid chainhash.Hash) int32 {
	var h int32
	_ = l.with(func(w *payment.Wallet) error {
		h = w.TxHeight(txid)
		return nil
	})
	return h
}

// TxHeight implements payment.TxHeighter with the wrapped funder's.
func (f *feeFunder) TxHeight(txid chainhash.Hash) int32 {
	if th, ok := f.Funder.(payment.TxHeighter); ok {
		return th.TxHeight(txid)
	}
	return 0
}
