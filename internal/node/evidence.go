package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// Contract evidence: what an attestation carries so that any node can check
// "this contract was signed by both parties and paid" without trusting the
// attester.
//
// Format (version 1): the byte 0x01, then three fields, each a uvarint
// length and the bytes, nothing after them:
//
//  1. the contract: contract.Contract.Marshal(), the buyer's signed
//     proposal and the seller's signed acceptance, envelopes byte for byte;
//  2. the channel: payment.OpenRequest.Encode(), the channel's keys,
//     expiry, close fee, payout scripts and funding transaction (without
//     witnesses) and output index;
//  3. the payment: payment.Update.Encode(), the channel's latest update
//     labelled with this contract (its cumulative amount for the contract
//     and the buyer's signature of the close paying the channel's total).
const evidenceVersion = 1

// minFundingConfs is how deep the channel's funding must be for its
// payments to count.
const minFundingConfs = 1

// errNoEvidence says this node has no paid contract to attest.
var errNoEvidence = errors.New("no paid contract")

// paymentEvidence is the decoded evidence.
type paymentEvidence struct {
	Contract, Open, Update []byte
}

func (e *paymentEvidence) encode() []byte {
	b := []byte{evidenceVersion}
	for _, f := range [][]byte{e.Contract, e.Open, e.Update} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

func decodeEvidence(b []byte) (*paymentEvidence, error) {
	if len(b) < 1 || b[0] != evidenceVersion {
		return nil, errors.New("evidence: unknown version")
	}
	b = b[1:]
	field := func(max int) ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errors.New("evidence: truncated")
		}
		if n > uint64(max) {
			return nil, fmt.Errorf("evidence: field of %d bytes exceeds %d", n, max)
		}
		v := bytes.Clone(b[k : k+int(n)])
		b = b[k+int(n):]
		return v, nil
	}
	var e paymentEvidence
	var err error
	if e.Contract, err = field(contract.MaxContractSize); err != nil {
		return nil, err
	}
	if e.Open, err = field(payment.MaxOpenSize); err != nil {
		return nil, err
	}
	if e.Update, err = field(payment.MaxUpdateSize); err != nil {
		return nil, err
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("evidence: %d trailing bytes", len(b))
	}
	return &e, nil
}

// evidenceVerifier implements reputation.ContractEvidence for the evidence
// above. It needs the node's chain to see that the funding is real; without
// one (payments off) nothing verifies and attestations count for nothing.
type evidenceVerifier struct {
	chain payment.Chain
}

var _ reputation.ContractEvidence = (*evidenceVerifier)(nil)

func unverifiable(format string, a ...any) error {
	return fmt.Errorf("%w: %s", reputation.ErrUnverifiable, fmt.Sprintf(format, a...))
}

// VerifyContract checks, in order: the contract opens with both signatures
// and is contractID; the seller's acceptance names a payment key, and the
// channel pays that key (the channel's buyer key is a fresh per-channel key
// that no contract names, so the buyer side is bound through the update:
// it is labelled with this contract and gives it a positive amount); the
// funding transaction pays the P2WSH of the channel script rebuilt from the
// request's keys and expiry; the buyer's signature of the close verifies in
// the script engine; and the funding has at least one confirmation on this
// node's chain. PaidSats is the contract's cumulative amount, which the
// signed close covers (it pays the seller at least that much in total).
func (v *evidenceVerifier) VerifyContract(ctx context.Context, contractID string, evidence []byte) (reputation.PaidContract, error) {
	var none reputation.PaidContract
	ev, err := decodeEvidence(evidence)
	if err != nil {
		return none, unverifiable("%v", err)
	}
	ct, err := contract.OpenContract(ev.Contract)
	if err != nil {
		return none, unverifiable("contract: %v", err)
	}
	if ct.ID != contractID {
		return none, unverifiable("evidence is contract %s, not %s", ct.ID, contractID)
	}
	terms, err := decodeTerms(ct.Acceptance.PaymentTerms)
	if err != nil {
		return none, unverifiable("acceptance of %s: %v", contractID, err)
	}
	open, err := payment.DecodeOpenRequest(ev.Open)
	if err != nil {
		return none, unverifiable("channel: %v", err)
	}
	if !bytes.Equal(open.SellerKey, terms.Key) {
		return none, unverifiable("channel does not pay the payment key the seller accepted %s with", contractID)
	}
	ch, err := payment.ChannelFromOpen(open)
	if err != nil {
		return none, unverifiable("channel: %v", err)
	}
	u, err := payment.DecodeUpdate(ev.Update)
	if err != nil {
		return none, unverifiable("update: %v", err)
	}
	if u.ContractID != ct.ID {
		return none, unverifiable("update is for contract %q, not %s", u.ContractID, ct.ID)
	}
	if err := ch.VerifyUpdate(u); err != nil {
		return none, unverifiable("update on %s: %v", ch.ID, err)
	}
	if u.ContractAmount <= 0 {
		return none, fmt.Errorf("%w: contract %s has no payment on %s", reputation.ErrUnpaid, ct.ID, ch.ID)
	}
	if v.chain == nil {
		return none, unverifiable("no chain to check funding %s on", ch.ID)
	}
	confs, err := v.chain.Confirmations(ctx, ch.FundingTxid())
	if err != nil {
		return none, unverifiable("funding %s: %v", ch.ID, err)
	}
	if confs < minFundingConfs {
		return none, fmt.Errorf("%w: funding %s has %d confirmations", reputation.ErrUnpaid, ch.ID, confs)
	}
	return reputation.PaidContract{
		Buyer: ct.Proposal.Buyer, Seller: ct.Proposal.Seller, PaidSats: uint64(u.ContractAmount),
	}, nil
}

// buyerEvidence builds the evidence for a contract this node bought: the
// contract record from the store, the channel that carries the contract
// and its latest update labelled with it. It returns errNoEvidence when the
// contract was never accepted or never paid.
func buyerEvidence(m *payment.Manager, machine *contract.Machine, contractID string) ([]byte, int64, error) {
	rec, err := machine.Get(contract.RoleBuyer, contractID)
	if err != nil {
		return nil, 0, err
	}
	if len(rec.Contract) == 0 {
		return nil, 0, fmt.Errorf("%w: contract %s was not accepted", errNoEvidence, contractID)
	}
	var ch *payment.Channel
	for _, c := range m.Channels() {
		if c.Role == payment.RoleBuyer && c.Contracts[contractID] > 0 {
			ch = c
			break
		}
	}
	if ch == nil {
		return nil, 0, fmt.Errorf("%w: no channel paid contract %s", errNoEvidence, contractID)
	}
	u, err := m.LatestUpdate(ch.ID, contractID)
	if err != nil {
		return nil, 0, err
	}
	if u == nil {
		return nil, 0, fmt.Errorf("%w: channel %s has no update", errNoEvidence, ch.ID)
	}
	ev := &paymentEvidence{Contract: rec.Contract, Open: ch.OpenRequest().Encode(), Update: u.Encode()}
	return ev.encode(), u.ContractAmount, nil
}
