package api

import "time"

// EscrowEarnings is what escrowed jobs (submit --escrow) paid and cost this
// node over an Earnings period, and each settled escrow. A seller's share
// and an arbiter's fee are in the totals' earned_sat too, and a payout fee
// this node bore in their fees_sat.
type EscrowEarnings struct {
	// EarnedSat: sellers' shares (before the release fee they pay) and
	// arbiters' fees.
	EarnedSat int64 `json:"earned_sat"`
	// SpentSat is what this node as a buyer paid sellers; RefundedSat what
	// came back to it (the unused rest of a release, a refund).
	SpentSat    int64 `json:"spent_sat"`
	RefundedSat int64 `json:"refunded_sat"`
	// FeesSat: the payout fees this node bore; ArbiterFeesSat and
	// FundingFeesSat: what its escrows' fundings cost it as a buyer.
	FeesSat        int64          `json:"fees_sat"`
	ArbiterFeesSat int64          `json:"arbiter_fees_sat"`
	FundingFeesSat int64          `json:"funding_fees_sat"`
	Payouts        []EscrowPayout `json:"payouts,omitempty"`
}

// EscrowPayout is one settled escrow: where its money went and what it
// cost (sats).
type EscrowPayout struct {
	Escrow     string    `json:"escrow"`
	Contract   string    `json:"contract,omitempty"`
	Role       string    `json:"role"`
	Kind       string    `json:"kind"`
	Txid       string    `json:"txid"`
	At         time.Time `json:"at"`
	Amount     int64     `json:"amount_sat"`
	ToSeller   int64     `json:"to_seller_sat"`
	ToBuyer    int64     `json:"to_buyer_sat"`
	SpendFee   int64     `json:"spend_fee_sat"`
	FundingFee int64     `json:"funding_fee_sat,omitempty"`
	ArbiterFee int64     `json:"arbiter_fee_sat,omitempty"`
	Earned     int64     `json:"earned_sat"`
	FeesPaid   int64     `json:"fees_paid_sat"`
	Spent      int64     `json:"spent_sat,omitempty"`
}
