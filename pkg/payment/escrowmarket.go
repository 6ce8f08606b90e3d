package payment

import "fmt"

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
