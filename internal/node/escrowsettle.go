package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// How an escrowed job settles: the delay the buyer funds with, the share a
// release pays (the signed receipt's bill), the smallest escrow worth
// funding, and the payouts recorded in the history.

// delayFor is the CLTV delay (blocks from the tip) the buyer funds p's
// escrow with: the arbiter's, this node's arbiter.delay, or what the job
// needs, whichever is longest; refused, before anything is funded, when
// that is beyond what the buyer, the arbiter or the seller allows.
func (e *escrowNode) delayFor(p *contract.Proposal, ao *contract.ArbiterOffer, st *contract.SellerEscrowTerms) (int32, error) {
	cfg := e.n.cfg.Arbiter
	need := escrowNeeds(p.Request.Duration, e.n.payCfg.Confirmations)
	delay := max(int32(ao.Delay), cfg.Delay, need)
	limit, who := cfg.MaxDelay, "this node's arbiter.max_delay"
	if m := int32(ao.MaxDelay); m > 0 && m < limit {
		limit, who = m, "the arbiter's max delay"
	}
	if m := int32(st.MaxDelay); m > 0 && m < limit {
		limit, who = m, "the seller's max delay"
	}
	if delay > limit {
		return 0, fmt.Errorf("%w: the escrow's delay would be %d blocks (the arbiter asks %d, the job needs %d), beyond %s of %d", api.ErrRefused, delay, ao.Delay, need, who, limit)
	}
	return delay, nil
}

// releaseShare is what the release of ct's escrow of amount pays the
// seller: the signed receipt's bill, which must be within the contract's
// terms (no more intervals than it has, no more than they and the bytes
// moved cost, no more than the job's cap).
func releaseShare(ct *contract.Contract, env []byte, amount int64) (int64, error) {
	if len(env) == 0 {
		return 0, errors.New("no receipt: nothing to release on")
	}
	rc, err := contract.OpenReceiptAny(env)
	if err != nil {
		return 0, err
	}
	p := ct.Proposal
	switch {
	case rc.ContractID != ct.ID || rc.Seller != p.Seller || rc.Buyer != p.Buyer:
		return 0, fmt.Errorf("%w: the receipt is not this contract's", contract.ErrInvalid)
	case rc.Intervals > p.Intervals() || rc.Billed < 0 || rc.Egress < 0 || rc.Billed > p.Owed(rc.Intervals)+rc.Egress:
		return 0, fmt.Errorf("%w: the receipt bills %d sats for %d interval(s), beyond the contract's terms", contract.ErrInvalid, rc.Billed, rc.Intervals)
	}
	share := min(rc.Billed, amount)
	if limit := p.Request.MaxPrice; limit > 0 && uint64(share) > limit {
		share = int64(limit)
	}
	return share, nil
}

// shareOf is the release share of contract id's escrow as this node, in
// role, holds its contract and receipt.
func (e *escrowNode) shareOf(role contract.Role, id string, amount int64) (int64, error) {
	var m *contract.Machine
	switch {
	case role == contract.RoleBuyer:
		m = e.n.buyerMachine()
	case e.n.seller != nil:
		m = e.n.seller.Machine()
	}
	if m == nil {
		return 0, fmt.Errorf("no %s of contract %s here", role, id)
	}
	r, err := m.Get(role, id)
	if err != nil {
		return 0, err
	}
	ct, err := contract.OpenContract(r.Contract)
	if err != nil {
		return 0, err
	}
	return releaseShare(ct, r.Receipt, amount)
}

// release is the buyer's: its signature of the release of what the
// receipt billed (or of a refund, when that is too little to pay a
// release's fee and leave the seller more than dust) to the seller, who
// completes and broadcasts it and answers with its own (so both hold the
// transaction).
func (e *escrowNode) release(ctx context.Context, r *payment.EscrowRecord) error {
	seller, err := peer.Decode(r.Market.Seller)
	if err != nil {
		return err
	}
	share, err := e.shareOf(contract.RoleBuyer, r.Market.Contract, r.Amount)
	if err != nil {
		return fmt.Errorf("release escrow %s: %w", r.ID, err)
	}
	kind := payment.SpendRelease
	var sig *payment.EscrowSig
	if share > 0 {
		if _, err = e.m.SetRelease(r.ID, share); err == nil {
			sig, _, err = e.m.Release(ctx, r.ID)
		}
	}
	if share == 0 || errors.Is(err, payment.ErrNotWorth) {
		kind = payment.SpendRefund
		sig, _, err = e.m.Refund(ctx, r.ID)
	}
	if err != nil {
		return err
	}
	note := &contract.EscrowNote{ContractID: r.Market.Contract, EscrowID: r.ID, Payload: sig.Encode(), Split: uint64(share)}
	b, err := contract.CallEscrow(ctx, e.n.host, seller, contract.EscrowRelease, note.Marshal())
	if err != nil {
		return fmt.Errorf("release escrow %s: %w", r.ID, err)
	}
	if _, err := e.m.AddSignature(ctx, seller.String(), b); err != nil {
		return fmt.Errorf("release escrow %s: seller's signature: %w", r.ID, err)
	}
	if kind == payment.SpendRefund {
		_, t, err := e.m.Refund(ctx, r.ID)
		if err != nil {
			return err
		}
		e.n.log.Info("escrow refunded: the receipt's bill cannot pay a release", "escrow", r.ID, "contract", r.Market.Contract, "peer", seller, "billed_sats", share, "txid", t.TxHash().String())
		return nil
	}
	_, t, err := e.m.Release(ctx, r.ID)
	if err != nil {
		return err
	}
	e.n.log.Info("escrow released to the seller", "escrow", r.ID, "contract", r.Market.Contract, "peer", seller,
		"share_sats", share, "back_to_buyer_sats", r.Amount-share, "txid", t.TxHash().String())
	return nil
}

// takeRelease is the seller's side of a release: it signs only the release
// of what its own receipt billed (or a refund, when that cannot pay the
// release's fee and leave more than dust).
func (e *escrowNode) takeRelease(ctx context.Context, from peer.ID, n *contract.EscrowNote) ([]byte, error) {
	id := e.escrowOf(n.ContractID)
	if id == "" || id != n.EscrowID {
		return nil, fmt.Errorf("no escrow %s for contract %s here", n.EscrowID, n.ContractID)
	}
	r, err := e.m.Escrow(id)
	if err != nil {
		return nil, err
	}
	if r.Role != payment.RoleSeller || r.Market == nil || r.Market.Buyer != from.String() {
		return nil, errors.New("only the escrow's buyer releases it to this seller")
	}
	share, err := e.shareOf(contract.RoleSeller, n.ContractID, r.Amount)
	if err != nil {
		return nil, err
	}
	if n.Split != 0 && int64(n.Split) != share {
		return nil, fmt.Errorf("the buyer releases %d sats, the receipt bills %d", n.Split, share)
	}
	s, err := payment.DecodeEscrowSig(n.Payload)
	if err != nil {
		return nil, err
	}
	if share > 0 {
		if r, err = e.m.SetRelease(id, share); err != nil {
			return nil, err
		}
	}
	switch s.Kind {
	case payment.SpendRelease:
		if share == 0 {
			return nil, errors.New("the receipt bills nothing: no release to sign")
		}
	case payment.SpendRefund:
		// Only what a release could not pay.
		if _, err := r.BuildSpend(payment.SpendRelease, s.Fee); share > 0 && !errors.Is(err, payment.ErrNotWorth) {
			return nil, fmt.Errorf("a refund instead of the release of %d sats the receipt bills", share)
		}
	default:
		return nil, fmt.Errorf("a %s is no release", s.Kind)
	}
	if _, err := e.m.AddSignature(ctx, from.String(), n.Payload); err != nil {
		return nil, err
	}
	settle := e.m.Release
	if s.Kind == payment.SpendRefund {
		settle = e.m.Refund
	}
	sig, tx, err := settle(ctx, id)
	if err != nil {
		return nil, err
	}
	if tx != nil {
		e.n.log.Info("escrow settled: payout broadcast", "escrow", id, "contract", n.ContractID, "peer", from, "kind", s.Kind.String(),
			"share_sats", share, "txid", tx.TxHash().String())
	}
	return sig.Encode(), nil
}

// checkEscrowFloor refuses, before anything is funded, a job whose price is
// below the smallest escrow worth funding at the fee source's rate now.
func (n *Node) checkEscrowFloor(ctx context.Context, price int64) error {
	rate, src := n.payCfg.FeeRateSource(ctx, n.chain, 6)
	floor, fee := payment.EscrowFloor(rate)
	if price >= floor {
		return nil
	}
	return fmt.Errorf("%w: this job costs %d sat, below the smallest escrow worth funding now, %d sat: at %d sat/vB (fee source: %s) a release costs about %d sat, and must still leave the seller more than the 330-sat dust if the rate grows %dx before it; the funding (about %d sat) and the arbiter's fee come on top. Submit without --escrow (a payment channel), or a longer --time",
		api.ErrRefused, price, floor, rate, src, fee, payment.EscrowFeeHeadroom, rate*escrowFundingVBytes)
}

// escrowFundingVBytes is about the size of an escrow's funding (one input,
// the escrow, the arbiter's fee, change).
const escrowFundingVBytes = 184

// recordPayouts records each settled escrow once in the history: what it
// paid whom, its fees, and what this node earned or spent by it.
func (e *escrowNode) recordPayouts() {
	if e.n.history == nil {
		return
	}
	for _, r := range e.m.Escrows() {
		if r.Market == nil || r.Paid == nil || !r.State.Final() || r.State == payment.EscrowFailed {
			continue
		}
		e.mu.Lock()
		done := e.recorded[r.ID]
		e.mu.Unlock()
		if done {
			continue
		}
		p := escrowPayout(r, r.Updated)
		if _, err := e.n.history.st.RecordEscrowPayout(p); err != nil {
			e.n.log.Warn("history: escrow payout", "escrow", r.ID, "err", err)
			continue
		}
		e.mu.Lock()
		e.recorded[r.ID] = true
		e.mu.Unlock()
	}
}

// escrowPayout is r's settlement as the history records it.
func escrowPayout(r *payment.EscrowRecord, at time.Time) store.EscrowPayout {
	p := store.EscrowPayout{Escrow: r.ID, Contract: r.Market.Contract, Role: r.Role.String(), Kind: r.SpendKind.String(),
		Txid: r.SpendTxid, At: at, Amount: r.Amount, ToSeller: r.Paid.ToSeller, ToBuyer: r.Paid.ToBuyer, SpendFee: r.Paid.Fee}
	// The seller pays the fee of what pays it alone or its share first
	// (a release, a payout to it); the buyer that of a refund or a split.
	sellerFee := r.SpendKind == payment.SpendRelease || r.SpendKind == payment.SpendPayoutSeller
	gross := r.Paid.ToSeller
	if sellerFee {
		gross += r.Paid.Fee
	}
	switch r.Role {
	case payment.RoleSeller:
		p.Earned = gross
		if sellerFee {
			p.FeesPaid = r.Paid.Fee
		}
	case payment.RoleBuyer:
		p.Spent, p.ArbiterFee, p.FundingFee = gross, r.Market.ArbiterFee, r.Market.FundingFee
		if !sellerFee {
			p.FeesPaid = r.Paid.Fee
		}
	case payment.RoleArbiter:
		p.Earned, p.ArbiterFee = r.Market.ArbiterFee, r.Market.ArbiterFee
	}
	return p
}

// escrowEarnings sums the payouts recorded since from.
func escrowEarnings(st *store.HistoryStore, from time.Time) (api.EscrowEarnings, error) {
	var out api.EscrowEarnings
	list, err := st.EscrowPayouts(from)
	if err != nil {
		return out, err
	}
	for _, p := range list {
		out.EarnedSat += p.Earned
		out.SpentSat += p.Spent
		out.FeesSat += p.FeesPaid
		if p.Role == payment.RoleBuyer.String() {
			out.RefundedSat += p.ToBuyer
			out.ArbiterFeesSat += p.ArbiterFee
			out.FundingFeesSat += p.FundingFee
		}
		out.Payouts = append(out.Payouts, api.EscrowPayout(p))
	}
	return out, nil
}
