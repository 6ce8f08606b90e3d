package payment

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Coin is a wallet output lent to a transaction the node builds itself: a
// CPFP child whose parent output is too small to pay the bump (bump.go).
type Coin struct {
	OutPoint wire.OutPoint `json:"outpoint"`
	Value    int64         `json:"value"`
	PkScript []byte        `json:"pk_script"`
}

// CoinSource lends confirmed wallet coins; OutputSigner signs them.
type CoinSource interface {
	// LeaseCoins returns confirmed P2WPKH wallet coins worth at least
	// amount (largest first, none of except), locked against the wallet's
	// own coin selection until ReleaseCoins or until a transaction
	// spending them is published.
	LeaseCoins(ctx context.Context, amount int64, except []wire.OutPoint) ([]Coin, error)
	ReleaseCoins(coins []Coin)
}

var _ CoinSource = (*Wallet)(nil)

// LeaseCoins implements CoinSource.
func (w *Wallet) LeaseCoins(ctx context.Context, amount int64, except []wire.OutPoint) ([]Coin, error) {
	list, err := w.w.ListUnspent(1, 1<<30, "")
	if err != nil {
		return nil, fmt.Errorf("lease coins: %w", err)
	}
	var cands []Coin
	for _, u := range list {
		h, err := chainhash.NewHashFromStr(u.TxID)
		if err != nil {
			continue
		}
		pk, err := hex.DecodeString(u.ScriptPubKey)
		if err != nil || !isP2WPKH(pk) {
			continue
		}
		op := wire.OutPoint{Hash: *h, Index: u.Vout}
		if slices.Contains(except, op) {
			continue
		}
		v, err := btcutil.NewAmount(u.Amount)
		if err != nil {
			continue
		}
		cands = append(cands, Coin{OutPoint: op, Value: int64(v), PkScript: pk})
	}
	slices.SortFunc(cands, func(a, b Coin) int { return int(b.Value - a.Value) })
	var got []Coin
	var sum int64
	for _, c := range cands {
		if sum >= amount {
			break
		}
		got = append(got, c)
		sum += c.Value
	}
	if sum < amount {
		return nil, fmt.Errorf("lease coins: %w: need %d sat of confirmed coins, the wallet has %d", ErrInsufficientFunds, amount, sum)
	}
	for _, c := range got {
		w.w.LockOutpoint(c.OutPoint)
	}
	return got, nil
}

// ReleaseCoins implements CoinSource.
func (w *Wallet) ReleaseCoins(coins []Coin) {
	for _, c := range coins {
		w.w.UnlockOutpoint(c.OutPoint)
	}
}

// isP2WPKH reports whether pk is a P2WPKH output script.
func isP2WPKH(pk []byte) bool { return len(pk) == 22 && pk[0] == 0x00 && pk[1] == 0x14 }
