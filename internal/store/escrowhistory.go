package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Escrow payouts in the history: each settled escrow (a release, a refund,
// an arbitrated payout) is recorded once, by escrow, with where its money
// went and what it cost; what this node earned by it (a seller's share, an
// arbiter's fee) and the fee it paid are added to the history's bucket in
// the same transaction, so `earnings` counts them with the channels' and
// recording twice (a restart) counts once.
//
// Bucket history_escrows (created on first use): key the escrow ID, value
// an EscrowPayout as JSON.
const historyEscrows = "history_escrows"

// EscrowPayout is one settled escrow as this node saw it. Money in sats.
type EscrowPayout struct {
	Escrow   string    `json:"escrow"`
	Contract string    `json:"contract,omitempty"`
	Role     string    `json:"role"` // buyer, seller or arbiter
	Kind     string    `json:"kind"` // release, refund, payout_seller, payout_buyer, payout_split
	Txid     string    `json:"txid"`
	At       time.Time `json:"at"`
	Amount   int64     `json:"amount_sat"`
	ToSeller int64     `json:"to_seller_sat"`
	ToBuyer  int64     `json:"to_buyer_sat"`
	// SpendFee is the payout transaction's fee; FundingFee (the buyer's,
	// about) and ArbiterFee are what the escrow's funding cost on top.
	SpendFee   int64 `json:"spend_fee_sat"`
	FundingFee int64 `json:"funding_fee_sat,omitempty"`
	ArbiterFee int64 `json:"arbiter_fee_sat,omitempty"`
	// Earned is what this node earned by the escrow (a seller's share
	// before the fee it paid, an arbiter's fee); FeesPaid the payout's fee
	// when this node bore it; Spent what a buyer paid the seller.
	Earned   int64 `json:"earned_sat"`
	FeesPaid int64 `json:"fees_paid_sat"`
	Spent    int64 `json:"spent_sat,omitempty"`
}

// RecordEscrowPayout records p once (by its escrow): its Earned and
// FeesPaid go into the bucket of p.At. It reports whether p was new.
func (h *HistoryStore) RecordEscrowPayout(p EscrowPayout) (bool, error) {
	if p.Escrow == "" {
		return false, fmt.Errorf("record escrow payout: no escrow ID")
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return false, err
	}
	added := false
	err = h.update("escrow payout", func(tx *Tx) error {
		added = false
		if tx.Get(historyEscrows, p.Escrow) != nil {
			return nil
		}
		added = true
		if err := tx.Put(historyEscrows, p.Escrow, raw); err != nil {
			return err
		}
		return changeBucket(tx, p.At, func(b *HistoryBucket) {
			b.EarnedSat += max(p.Earned, 0)
			b.FeesSat += max(p.FeesPaid, 0)
		})
	})
	return added, err
}

// EscrowPayouts returns the payouts recorded at or after from, oldest
// first; a record that does not decode is skipped.
func (h *HistoryStore) EscrowPayouts(from time.Time) ([]EscrowPayout, error) {
	var out []EscrowPayout
	err := h.db.View(func(tx *Tx) error {
		return tx.ForEach(historyEscrows, "", func(_ string, v []byte) error {
			var p EscrowPayout
			if json.Unmarshal(v, &p) == nil && !p.At.Before(from) {
				out = append(out, p)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read escrow payouts: %w", err)
	}
	slices.SortFunc(out, func(a, b EscrowPayout) int { return a.At.Compare(b.At) })
	return out, nil
}
