package payment

import (
	"context"
	"fmt"

	"github.com/btcsuite/btcd/wire"
)

// EscrowMarket is what the market records with an escrow: the parties'
// node IDs, the contract it pays for, the arbiter's fee, whether the buyer
// holds the release back, and a dispute's case and decision.
type EscrowMarket struct {
	Contract string `json:"contract"`
	Buyer    string `json:"buyer"`
	Seller   string `json:"seller"`
	Arbiter  string `json:"arbiter"`
	// ArbiterFee is what the funding paid the arbiter, in sats.
	ArbiterFee int64 `json:"arbiter_fee_sat,omitempty"`
	// FundingFee is about what the buyer's funding transaction paid in
	// fees (its rate times its size), in sats.
	FundingFee int64 `json:"funding_fee_sat,omitempty"`
	// Hold: the buyer releases by hand, not on a verified receipt.
	Hold bool `json:"hold,omitempty"`
	// DisputedBy and Reason: who raised a dispute and why; Evidence is
	// the arbiter's summary of the case (contract, receipt, digests).
	DisputedBy string `json:"disputed_by,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Evidence   string `json:"evidence,omitempty"`
	// Decision is the arbiter's ("seller" or "buyer"), once made.
	Decision string `json:"decision,omitempty"`
}

// SetMarket applies f to a copy of escrow id's market facts and persists
// them; the escrow's state and keys cannot change this way. An error from
// f changes nothing.
func (m *EscrowManager) SetMarket(id string, f func(*EscrowMarket) error) (*EscrowRecord, error) {
	es, rec := m.escrows.lock(id)
	if es == nil {
		return nil, fmt.Errorf("escrow %s: %w", id, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	next := rec.clone()
	if next.Market == nil {
		next.Market = &EscrowMarket{}
	}
	if err := f(next.Market); err != nil {
		return nil, err
	}
	if err := m.persist(es, next); err != nil {
		return nil, err
	}
	return next.clone(), nil
}

// SetSplit records the seller's share of a split payout of escrow id
// (before signing one, or accepting the arbiter's signature of one). Once
// set it cannot change.
func (m *EscrowManager) SetSplit(id string, share int64) (*EscrowRecord, error) {
	es, rec := m.escrows.lock(id)
	if es == nil {
		return nil, fmt.Errorf("escrow %s: %w", id, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	switch {
	case rec.Split == share:
		return rec.clone(), nil
	case rec.Split != 0:
		return nil, fmt.Errorf("escrow %s: %w: split set to %d already", id, ErrEscrowState, rec.Split)
	case share <= 0 || share >= rec.Amount:
		return nil, fmt.Errorf("escrow %s: a split gives the seller between 1 and %d sats, not %d", id, rec.Amount-1, share)
	}
	next := rec.clone()
	next.Split = share
	if err := m.persist(es, next); err != nil {
		return nil, err
	}
	return next.clone(), nil
}

// SplitRange is the seller's shares a split of escrow id can pay now: at
// least the seller's dust limit, and at most the escrow less the split's fee
// at the chain's rate and the buyer's dust limit (both outputs must carry
// money); fee is that fee.
func (m *EscrowManager) SplitRange(ctx context.Context, id string) (lo, hi, fee int64, err error) {
	rec := m.escrows.get(id)
	if rec == nil {
		return 0, 0, 0, fmt.Errorf("escrow %s: %w", id, ErrUnknownEscrow)
	}
	e, err := rec.Escrow()
	if err != nil {
		return 0, 0, 0, err
	}
	if fee, err = m.spendFee(ctx, rec, e, SpendPayoutSplit); err != nil {
		return 0, 0, 0, fmt.Errorf("escrow %s split: %w", id, err)
	}
	lo, hi = dustLimit(rec.SellerScript), rec.Amount-fee-dustLimit(rec.BuyerScript)
	if hi < lo {
		return lo, hi, fee, fmt.Errorf("escrow %s: %w: %d sats less the split's fee %d leave no two outputs above dust", id, ErrNotWorth, rec.Amount, fee)
	}
	return lo, hi, fee, nil
}

// ClearSplit undoes SetSplit when no signature of the split exists (the
// decision that set it failed before signing).
func (m *EscrowManager) ClearSplit(id string) error {
	es, rec := m.escrows.lock(id)
	if es == nil {
		return fmt.Errorf("escrow %s: %w", id, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	if rec.Split == 0 {
		return nil
	}
	for _, s := range rec.Sigs {
		if s.Kind == SpendPayoutSplit {
			return fmt.Errorf("escrow %s: %w: the split is signed already", id, ErrEscrowState)
		}
	}
	next := rec.clone()
	next.Split = 0
	return m.persist(es, next)
}

// ArbitrateKind is Arbitrate for any arbitrated kind (a split included:
// SetSplit first).
func (m *EscrowManager) ArbitrateKind(ctx context.Context, id string, kind SpendKind) (*EscrowSig, *wire.MsgTx, error) {
	if !kind.Arbitrated() {
		return nil, nil, fmt.Errorf("%w: %s is not an arbitrated payout", ErrWrongRole, kind)
	}
	return m.settle(ctx, id, kind)
}
