package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The arbiter's side of escrowed jobs, and the API's escrow calls.

var _ api.EscrowBackend = (*Node)(nil)

// errNotArbiter is what a node with arbiter.enabled off answers.
var errNotArbiter = errors.New("this node is not an arbiter (arbiter.enabled is off)")

// arbiterTerms is the signed ArbiterOffer for one new escrow.
func (e *escrowNode) arbiterTerms() ([]byte, error) {
	cfg := e.n.cfg.Arbiter
	if !cfg.Enabled {
		return nil, errNotArbiter
	}
	t, err := e.m.Terms(payment.RoleArbiter)
	if err != nil {
		return nil, err
	}
	o := &contract.ArbiterOffer{Arbiter: e.n.host.ID(), FeeSat: uint64(cfg.FeeSat), Key: t.Key, KeyIndex: t.KeyIndex,
		Issued: time.Now(), Expiry: time.Now().Add(5 * time.Minute), Delay: uint32(cfg.Delay), MaxDelay: uint32(cfg.MaxDelay)}
	if cfg.FeeSat > 0 {
		if o.PayoutScript, err = e.n.payCfg.PayoutScript(0); err != nil {
			return nil, err
		}
		if payment.IsDust(o.PayoutScript, cfg.FeeSat) {
			return nil, fmt.Errorf("arbiter.fee_sat %d is dust for this arbiter's payout address: no funding could pay it", cfg.FeeSat)
		}
	}
	return contract.SignArbiterOffer(o, e.n.key)
}

// register takes a buyer's escrow for a contract naming this arbiter:
// the funding must pay our fee, the offer name our key.
func (e *escrowNode) register(ctx context.Context, from peer.ID, n *contract.EscrowNote) error {
	cfg := e.n.cfg.Arbiter
	if !cfg.Enabled {
		return errNotArbiter
	}
	ct, err := contract.OpenContract(n.Contract)
	if err != nil {
		return err
	}
	if ct.ID != n.ContractID || ct.Proposal.Buyer != from || ct.Proposal.Request.Escrow != e.n.host.ID().String() {
		return errors.New("the contract is not the sender's, or names another arbiter")
	}
	o, err := payment.DecodeEscrowOffer(n.Payload)
	if err != nil {
		return err
	}
	if cfg.FeeSat > 0 {
		script, err := e.n.payCfg.PayoutScript(0)
		if err != nil {
			return err
		}
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(o.FundingTx)); err != nil {
			return fmt.Errorf("%w: funding tx: %v", payment.ErrMalformed, err)
		}
		paid := int64(0)
		for _, out := range tx.TxOut {
			if bytes.Equal(out.PkScript, script) {
				paid += out.Value
			}
		}
		if paid < cfg.FeeSat {
			return fmt.Errorf("the funding pays the arbiter %d sats, its fee is %d", paid, cfg.FeeSat)
		}
	}
	// The delay its offer asked for, at the least; its max_delay at most.
	rec, err := e.m.AcceptEscrowWithin(ctx, from.String(), n.Payload, max(cfg.Delay-escrowDelaySlack, 1), cfg.MaxDelay+escrowDelaySlack)
	if err != nil {
		return err
	}
	if rec.Role != payment.RoleArbiter {
		return errors.New("the escrow does not name our arbiter key")
	}
	if rec.Market != nil && rec.Market.Contract != "" && rec.Market.Contract != ct.ID {
		return fmt.Errorf("escrow %s is registered for another contract", rec.ID)
	}
	if _, err := e.m.SetMarket(rec.ID, func(mk *payment.EscrowMarket) error {
		*mk = payment.EscrowMarket{Contract: ct.ID, Buyer: from.String(), Seller: ct.Proposal.Seller.String(),
			Arbiter: e.n.host.ID().String(), ArbiterFee: cfg.FeeSat}
		return nil
	}); err != nil {
		return err
	}
	e.bind(ct.ID, rec.ID)
	e.poke()
	e.n.log.Info("arbiter: escrow registered", "escrow", rec.ID, "contract", ct.ID, "peer", from, "seller", ct.Proposal.Seller, "amount_sats", rec.Amount)
	return nil
}

// check vouches to the seller that we hold the escrow for its contract.
func (e *escrowNode) check(from peer.ID, n *contract.EscrowNote) error {
	r, err := e.m.Escrow(n.EscrowID)
	if err != nil || r.Role != payment.RoleArbiter || r.Market == nil || r.Market.Contract != n.ContractID || r.Market.Seller != from.String() {
		return fmt.Errorf("no escrow %s for contract %s with seller %s here", n.EscrowID, n.ContractID, from)
	}
	return nil
}

// takeDispute records a party's case.
func (e *escrowNode) takeDispute(ctx context.Context, from peer.ID, b []byte) error {
	if !e.n.cfg.Arbiter.Enabled {
		return errNotArbiter
	}
	d, err := contract.OpenDispute(b, time.Now())
	if err != nil {
		return err
	}
	if d.From != from {
		return errors.New("the dispute is not the sender's")
	}
	r, err := e.m.Escrow(d.EscrowID)
	if err != nil {
		return err
	}
	if r.Role != payment.RoleArbiter || r.Market == nil || r.Market.Contract != d.ContractID() {
		return fmt.Errorf("escrow %s does not pay contract %s here", d.EscrowID, d.ContractID())
	}
	if r.Market.Decision != "" {
		return fmt.Errorf("escrow %s is decided already (%s)", r.ID, r.Market.Decision)
	}
	ev := disputeCase(d)
	if _, err := e.m.SetMarket(r.ID, func(mk *payment.EscrowMarket) error {
		mk.DisputedBy, mk.Reason, mk.Evidence = from.String(), d.Reason, ev
		return nil
	}); err != nil {
		return err
	}
	if _, err := e.dispute(ctx, r.ID, d.Reason); err != nil {
		return err
	}
	e.n.log.Info("arbiter: dispute received", "escrow", r.ID, "contract", d.ContractID(), "peer", from, "reason", d.Reason)
	return nil
}

// disputeCase summarises a dispute's case for `arbitrate show`.
func disputeCase(d *contract.Dispute) string {
	var b strings.Builder
	ct, _ := contract.OpenContract(d.Contract)
	if ct != nil {
		p := ct.Proposal
		fmt.Fprintf(&b, "contract %s: buyer %s, seller %s, image %s, %s, total %d sats\n", ct.ID, p.Buyer, p.Seller, p.Request.Image, p.Request.Duration, p.Total())
	}
	if len(d.Receipt) == 0 {
		b.WriteString("receipt: none (no delivery receipt was issued)\n")
	} else if rc, err := contract.OpenReceiptAny(d.Receipt); err == nil {
		fmt.Fprintf(&b, "receipt (signed by the seller): reason %s, exit %d, %d interval(s), billed %d sats\n", rc.Reason, rc.ExitCode, rc.Intervals, rc.Billed)
		for _, o := range rc.Outputs {
			fmt.Fprintf(&b, "  receipt output %s=%s (%d bytes)\n", o.Name, o.SHA256, o.Size)
		}
	}
	for _, dg := range d.Digests {
		fmt.Fprintf(&b, "  sender holds %s\n", dg)
	}
	return b.String()
}

// decisionKind is the payout a decision ("seller", "buyer", "split:N")
// means, with the seller's share of a split.
func decisionKind(d string) (payment.SpendKind, int64, error) {
	switch {
	case d == "seller":
		return payment.SpendPayoutSeller, 0, nil
	case d == "buyer":
		return payment.SpendPayoutBuyer, 0, nil
	case strings.HasPrefix(d, "split:"):
		n, err := strconv.ParseInt(strings.TrimPrefix(d, "split:"), 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, fmt.Errorf("%w: split:N takes the seller's share in sats, not %q", api.ErrBadRequest, d)
		}
		return payment.SpendPayoutSplit, n, nil
	}
	return 0, 0, fmt.Errorf("%w: --pay seller, buyer or split:N (N: the seller's share in sats), not %q", api.ErrBadRequest, d)
}

// tellDecision sends the arbiter's payout signature to the party paid (to
// both for a split: either completes it).
func (e *escrowNode) tellDecision(ctx context.Context, r *payment.EscrowRecord) error {
	kind, share, err := decisionKind(r.Market.Decision)
	if err != nil {
		return err
	}
	to := []string{r.Market.Seller}
	switch kind {
	case payment.SpendPayoutBuyer:
		to = []string{r.Market.Buyer}
	case payment.SpendPayoutSplit:
		to = []string{r.Market.Seller, r.Market.Buyer}
	}
	sig, _, err := e.m.ArbitrateKind(ctx, r.ID, kind)
	if err != nil {
		return err
	}
	note := &contract.EscrowNote{ContractID: r.Market.Contract, EscrowID: r.ID, Payload: sig.Encode(), Split: uint64(share)}
	var errs []error
	told := false
	for _, s := range to {
		p, err := peer.Decode(s)
		if err == nil {
			_, err = contract.CallEscrow(ctx, e.n.host, p, contract.EscrowDecision, note.Marshal())
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			told = true
		}
	}
	if told {
		return nil // one party is enough to complete it
	}
	return errors.Join(errs...)
}

func (n *Node) needEscrow() (*escrowNode, error) {
	if n.escrow == nil {
		return nil, fmt.Errorf("%w: payments are off: %s", api.ErrUnavailable, n.noBuy)
	}
	return n.escrow, nil
}

// Escrows implements api.EscrowBackend.
func (n *Node) Escrows(ctx context.Context) ([]*payment.EscrowRecord, error) {
	e, err := n.needEscrow()
	if err != nil {
		return nil, err
	}
	return e.m.Escrows(), nil
}

// Escrow implements api.EscrowBackend: one escrow by its ID, a unique
// prefix of it, or the contract it pays.
func (n *Node) Escrow(ctx context.Context, id string) (*payment.EscrowRecord, error) {
	e, err := n.needEscrow()
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, fmt.Errorf("%w: escrow ID required", api.ErrBadRequest)
	}
	if byC := e.escrowOf(id); byC != "" {
		id = byC
	}
	var found *payment.EscrowRecord
	for _, r := range e.m.Escrows() {
		if strings.HasPrefix(r.ID, id) {
			if found != nil {
				return nil, fmt.Errorf("%w: %q names more than one escrow", api.ErrBadRequest, id)
			}
			found = r
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no escrow %s", api.ErrNotFound, id)
	}
	return found, nil
}

// escrowOfJob finds the escrow of a job this node bought (its ID) or a
// contract it bought or sold (its ID), and that contract's record.
func (n *Node) escrowOfJob(job string) (*payment.EscrowRecord, *contract.Record, error) {
	e, err := n.needEscrow()
	if err != nil {
		return nil, nil, err
	}
	cid, role := job, contract.RoleSeller
	if n.buyer != nil {
		if j, err := n.buyer.Job(job); err == nil {
			cid, role = j.ContractID, contract.RoleBuyer
		} else if _, err := n.buyer.Machine().Get(contract.RoleBuyer, job); err == nil {
			role = contract.RoleBuyer
		}
	}
	id := e.escrowOf(cid)
	if cid == "" || id == "" {
		return nil, nil, fmt.Errorf("%w: no escrowed job or contract %s here", api.ErrNotFound, job)
	}
	var m *contract.Machine
	if role == contract.RoleBuyer {
		m = n.buyer.Machine()
	} else if n.seller != nil {
		m = n.seller.Machine()
	}
	if m == nil {
		return nil, nil, fmt.Errorf("%w: no contract %s here", api.ErrNotFound, cid)
	}
	rec, err := m.Get(role, cid)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	r, err := e.m.Escrow(id)
	return r, rec, err
}

// Dispute implements api.EscrowBackend: this node (buyer or seller of
// job) sends its case to the escrow's arbiter.
func (n *Node) Dispute(ctx context.Context, job, reason string) (*payment.EscrowRecord, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, fmt.Errorf("%w: a dispute needs a reason (--reason)", api.ErrBadRequest)
	}
	r, rec, err := n.escrowOfJob(job)
	if err != nil {
		return nil, err
	}
	if r.State.Final() || r.SpendTxid != "" {
		return nil, fmt.Errorf("%w: escrow %s is %s: nothing to dispute", api.ErrRefused, r.ID, r.State)
	}
	arb, err := peer.Decode(r.Market.Arbiter)
	if err != nil {
		return nil, err
	}
	digests := n.resultDigests(rec.ID)
	now := time.Now()
	d := &contract.Dispute{From: n.host.ID(), EscrowID: r.ID, Contract: rec.Contract, Receipt: rec.Receipt, Digests: digests,
		Reason: reason, Issued: now, Expiry: now.Add(5 * time.Minute)}
	env, err := contract.SignDispute(d, n.key)
	if err != nil {
		return nil, err
	}
	if _, err := contract.CallEscrow(ctx, n.host, arb, contract.EscrowDisputeMsg, env); err != nil {
		return nil, fmt.Errorf("%w: the arbiter did not take the dispute: %v", api.ErrRefused, err)
	}
	e := n.escrow
	if _, err := e.m.SetMarket(r.ID, func(mk *payment.EscrowMarket) error {
		mk.DisputedBy, mk.Reason = n.host.ID().String(), reason
		return nil
	}); err != nil {
		return nil, err
	}
	n.log.Info("escrow disputed", "escrow", r.ID, "contract", rec.ID, "arbiter", arb, "reason", reason)
	return e.dispute(ctx, r.ID, reason)
}

// dispute marks escrow id disputed. An escrow still pending here may have
// confirmed since the last block's tick (a dispute comes as soon as a
// party sees a fault): look at the chain first.
func (e *escrowNode) dispute(ctx context.Context, id, reason string) (*payment.EscrowRecord, error) {
	if r, err := e.m.Escrow(id); err == nil && r.State == payment.EscrowPending {
		if err := e.m.Tick(ctx); err != nil {
			e.n.log.Debug("escrow tick before a dispute", "escrow", id, "err", err)
		}
	}
	return e.m.Dispute(ctx, id, reason)
}

// Decide implements api.EscrowBackend: the arbiter's decision of a
// disputed escrow, signed and sent to the party paid.
func (n *Node) Decide(ctx context.Context, id, pay string) (*payment.EscrowRecord, error) {
	if !n.cfg.Arbiter.Enabled {
		return nil, fmt.Errorf("%w: %v", api.ErrRefused, errNotArbiter)
	}
	r, err := n.Escrow(ctx, id)
	if err != nil {
		return nil, err
	}
	kind, share, err := decisionKind(pay)
	if err != nil {
		return nil, err
	}
	switch {
	case r.Role != payment.RoleArbiter || r.Market == nil:
		return nil, fmt.Errorf("%w: this node is not the arbiter of escrow %s", api.ErrRefused, r.ID)
	case r.Market.Decision != "":
		return nil, fmt.Errorf("%w: escrow %s is decided already: pay %s", api.ErrRefused, r.ID, r.Market.Decision)
	case r.Market.DisputedBy == "" || r.State != payment.EscrowDisputed:
		return nil, fmt.Errorf("%w: escrow %s is %s: no dispute to decide", api.ErrRefused, r.ID, r.State)
	}
	e := n.escrow
	if kind == payment.SpendPayoutSplit {
		// Both outputs must carry money after the fee, as in a release:
		// checked before anything is recorded.
		lo, hi, fee, err := e.m.SplitRange(ctx, r.ID)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: decide --pay seller or buyer", api.ErrRefused, err)
		}
		if share < lo || share > hi {
			return nil, fmt.Errorf("%w: split:%d: the seller's share of escrow %s (%d sats) is between %d and %d sats now (the split's fee is %d, and each side's output must be above dust); to pay one side everything, --pay seller or --pay buyer",
				api.ErrBadRequest, share, r.ID, r.Amount, lo, hi, fee)
		}
		if _, err := e.m.SetSplit(r.ID, share); err != nil {
			return nil, fmt.Errorf("%w: %v", api.ErrRefused, err)
		}
	}
	if _, _, err := e.m.ArbitrateKind(ctx, r.ID, kind); err != nil {
		if kind == payment.SpendPayoutSplit {
			if cerr := e.m.ClearSplit(r.ID); cerr != nil {
				n.log.Warn("arbiter: a failed split decision left its split", "escrow", r.ID, "err", cerr)
			}
		}
		return nil, err
	}
	r, err = e.m.SetMarket(r.ID, func(mk *payment.EscrowMarket) error {
		if mk.Decision != "" {
			return fmt.Errorf("%w: escrow %s is decided already: pay %s", api.ErrRefused, r.ID, mk.Decision)
		}
		mk.Decision = pay
		return nil
	})
	if err != nil {
		return nil, err
	}
	n.log.Info("arbiter: escrow decided", "escrow", r.ID, "contract", r.Market.Contract, "pay", pay, "delay", r.Delay)
	if err := e.tellDecision(ctx, r); err != nil {
		n.log.Warn("arbiter: decision not delivered yet (retried on every block)", "escrow", r.ID, "err", err)
	}
	return r, nil
}

// Release implements api.EscrowBackend: the buyer releases a held escrow.
func (n *Node) Release(ctx context.Context, job string) (*payment.EscrowRecord, error) {
	r, _, err := n.escrowOfJob(job)
	if err != nil {
		return nil, err
	}
	if r.Role != payment.RoleBuyer {
		return nil, fmt.Errorf("%w: only the buyer releases an escrow", api.ErrRefused)
	}
	if r.State != payment.EscrowFunded {
		return nil, fmt.Errorf("%w: escrow %s is %s, not funded", api.ErrRefused, r.ID, r.State)
	}
	if err := n.escrow.release(ctx, r); err != nil {
		return nil, err
	}
	return n.escrow.m.Escrow(r.ID)
}

// checkEscrowRequest refuses, before anything is recorded, a job whose
// arbiter is no arbiter this node can use.
func (n *Node) checkEscrowRequest(ctx context.Context, req contract.Request) error {
	if req.Escrow == "" {
		return nil
	}
	e, err := n.needEscrow()
	if err != nil {
		return err
	}
	arb, err := peer.Decode(req.Escrow)
	if err != nil {
		return fmt.Errorf("%w: --escrow %q is not a peer ID", api.ErrBadRequest, req.Escrow)
	}
	if arb == n.host.ID() {
		return fmt.Errorf("%w: the arbiter must be a third party, not this node", api.ErrRefused)
	}
	_, err = e.arbiterOffer(ctx, arb)
	return err
}

// precheckEscrow is precheck's wallet check for an escrowed job: the
// cheapest contract's price, the arbiter's fee and a funding fee.
func (n *Node) precheckEscrow(ctx context.Context, req contract.Request, job int64) error {
	e, err := n.needEscrow()
	if err != nil {
		return err
	}
	fee := n.cfg.Arbiter.MaxFeeSat
	if f, ok := e.fees.Load(req.Escrow); ok {
		fee = f.(int64)
	}
	if err := n.checkEscrowFloor(ctx, job); err != nil {
		return err
	}
	need := job + fee + n.payments.FundingFee(ctx)
	spendable, _, err := n.wallet.Balance(1)
	if err != nil {
		return fmt.Errorf("check the wallet: %w", err)
	}
	if int64(spendable) < need {
		return fmt.Errorf("%w: the wallet has %d sat spendable; this escrowed job needs about %d sat (the job's price %d + the arbiter's fee %d + the funding fee): send at least %d sat to the wallet (`blackbox wallet address`) and wait for a confirmation",
			api.ErrRefused, spendable, need, job, fee, need-int64(spendable))
	}
	return nil
}
