package payment

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/wire"
)

// A release pays the seller what the job used (the signed receipt's bill,
// the record's Release) and gives the buyer the rest back in the same
// transaction. The seller pays the release's fee from its share, as it
// pays a channel's close; a buyer's rest below dust goes to the seller
// (no output can carry it).

// ReleaseTx is the unsigned cooperative spend paying toSeller share less
// fee and toBuyer the rest of the escrow. A share of 0 or the whole amount,
// or a rest below dust, is the whole escrow to the seller (SpendTx). A
// share that cannot pay the fee and leave more than dust is ErrNotWorth.
func (e *Escrow) ReleaseTx(toSeller []byte, share int64, toBuyer []byte, fee int64) (*wire.MsgTx, error) {
	if !releaseSplits(e.Amount, share, toBuyer) {
		return e.SpendTx(toSeller, fee, false)
	}
	if IsDust(toSeller, share-fee) {
		return nil, fmt.Errorf("escrow release: %w: the seller's %d sats after the fee %d", ErrNotWorth, share-fee, fee)
	}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&e.Outpoint, nil, nil))
	tx.AddTxOut(wire.NewTxOut(share-fee, toSeller))
	tx.AddTxOut(wire.NewTxOut(e.Amount-share, toBuyer))
	return tx, nil
}

// releaseSplits reports whether a release of share out of amount has an
// output back to the buyer.
func releaseSplits(amount, share int64, toBuyer []byte) bool {
	return share > 0 && share < amount && !IsDust(toBuyer, amount-share)
}

// EscrowPaid is where an escrow's spend paid: the seller, the buyer, and
// the transaction's fee (what the escrow lost to it).
type EscrowPaid struct {
	ToSeller int64 `json:"to_seller_sat"`
	ToBuyer  int64 `json:"to_buyer_sat"`
	Fee      int64 `json:"fee_sat"`
}

// paidBy reads where tx, a spend of e's escrow, paid.
func (e *EscrowRecord) paidBy(tx *wire.MsgTx) *EscrowPaid {
	p := &EscrowPaid{Fee: e.Amount}
	for _, o := range tx.TxOut {
		switch {
		case bytes.Equal(o.PkScript, e.SellerScript):
			p.ToSeller += o.Value
		case bytes.Equal(o.PkScript, e.BuyerScript):
			p.ToBuyer += o.Value
		}
		p.Fee -= o.Value
	}
	return p
}

// SetRelease records the seller's share of the release of escrow id (what
// the signed receipt billed), before signing the release or taking the
// other party's signature of it. Once set it cannot change: a signature of
// another share would not verify.
func (m *EscrowManager) SetRelease(id string, share int64) (*EscrowRecord, error) {
	es, rec := m.escrows.lock(id)
	if es == nil {
		return nil, fmt.Errorf("escrow %s: %w", id, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	switch {
	case share <= 0 || share > rec.Amount:
		return nil, fmt.Errorf("escrow %s: a release gives the seller between 1 and %d sats, not %d", id, rec.Amount, share)
	case rec.Release == share:
		return rec.clone(), nil
	case rec.Release != 0:
		return nil, fmt.Errorf("escrow %s: %w: the release's share is %d already, not %d", id, ErrEscrowState, rec.Release, share)
	}
	next := rec.clone()
	next.Release = share
	if err := m.persist(es, next); err != nil {
		return nil, err
	}
	return next.clone(), nil
}

// EscrowFeeHeadroom is how much the fee rate may rise between an escrow's
// funding and its release: an escrow is worth funding only if its release
// at that many times today's rate still leaves the seller more than dust.
const EscrowFeeHeadroom = 3

// EscrowFloor is the smallest escrow worth funding at feeRate (sat/vB):
// a release at EscrowFeeHeadroom times that rate must leave more than the
// dust of a P2WSH payout (the largest usual one), and releaseFee is what
// that release costs at feeRate itself.
func EscrowFloor(feeRate int64) (floor, releaseFee int64) {
	vs := escrowSpendVSize()
	return vs*feeRate*EscrowFeeHeadroom + DustP2WSH + 1, vs * feeRate
}

// escrowSpendVSize is the size of a one-output escrow spend to a P2WSH
// script (the largest usual payout).
var escrowSpendVSize = sync.OnceValue(func() int64 {
	k, _ := btcec.NewPrivateKey()
	pk := k.PubKey()
	e := &Escrow{Buyer: pk, Seller: pk, Arbiter: pk, Delay: 1 << 22}
	vs, err := e.SpendVSize(make([]byte, 34))
	if err != nil {
		return 170
	}
	return vs
})
