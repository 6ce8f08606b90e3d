// Package evidence owns contract evidence: the bytes an attestation carries
// so that any node can check "this contract was signed by both parties and
// paid" without trusting the attester. It encodes and decodes the format,
// builds the evidence for a contract this node bought (ForBuyer) and checks
// anyone's (Verifier, the reputation book's ContractEvidence). What it needs
// from the chain and the node's stores it gets through the small interfaces
// below.
package evidence

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/chaincfg/chainhash"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/blackbox-market/blackbox/pkg/wire"
)

// Format (version 1): the byte 0x01, then three fields, each a minimal
// uvarint length and the bytes, nothing after them:
//
//  1. the contract: contract.Contract.Marshal(), the buyer's signed
//     proposal and the seller's signed acceptance, envelopes byte for byte;
//  2. the channel: payment.OpenRequest.Encode(), the channel's keys,
//     expiry, close fee, payout scripts and funding transaction (without
//     witnesses) and output index;
//  3. the payment: payment.Update.Encode(), the channel's latest update
//     labelled with this contract (its cumulative amount for the contract
//     and the buyer's signature of the close paying the channel's total).
const Version = 1

// MaxSize caps encoded evidence: the version byte and three fields, each
// at its own cap with a uvarint length of at most 3 bytes.
const MaxSize = 1 + 3*3 + contract.MaxContractSize + payment.MaxOpenSize + payment.MaxUpdateSize

// MinFundingConfs is how deep the channel's funding must be for its
// payments to count.
const MinFundingConfs = 1

// ErrNoEvidence says this node has no paid contract to attest.
var ErrNoEvidence = errors.New("no paid contract")

// Evidence is decoded contract evidence: the three fields of the format,
// each still encoded as its own package encodes it.
type Evidence struct {
	Contract, Open, Update []byte
}

// Encode serializes e in the format above.
func (e *Evidence) Encode() []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(e.Contract)+len(e.Open)+len(e.Update))
	return wire.AppendFields(b, Version, e.Contract, e.Open, e.Update)
}

// Decode parses evidence from a peer: a known version, three fields each
// within its package's size cap, lengths as minimal uvarints (so that an
// encoding has one meaning), nothing after them. It checks the framing
// only; Verifier checks the contents.
func Decode(b []byte) (*Evidence, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("evidence: %d bytes exceeds %d", len(b), MaxSize)
	}
	fs, err := wire.SplitFields(b, Version, contract.MaxContractSize, payment.MaxOpenSize, payment.MaxUpdateSize)
	if err != nil {
		return nil, fmt.Errorf("evidence (contract, channel, update): %w", err)
	}
	e := Evidence{Contract: bytes.Clone(fs[0]), Open: bytes.Clone(fs[1]), Update: bytes.Clone(fs[2])}
	return &e, nil
}

// Chain is what the Verifier asks the node's chain: how deep a
// transaction is (>= 1 in a block of the best chain, 0 in the mempool, -1
// unknown). payment.Chain satisfies it.
type Chain interface {
	Confirmations(ctx context.Context, txid chainhash.Hash) (int32, error)
}

// Verifier checks contract evidence; it is the reputation book's
// reputation.ContractEvidence.
type Verifier struct {
	// Chain sees that a channel's funding is real. Without one (payments
	// off) nothing verifies and attestations count for nothing.
	Chain Chain
}

var _ reputation.ContractEvidence = (*Verifier)(nil)

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
// the script engine; and the funding has at least MinFundingConfs
// confirmations on this node's chain. PaidSats is the contract's cumulative
// amount, which the signed close covers (it pays the seller at least that
// much in total). Failures wrap reputation.ErrUnverifiable, or
// reputation.ErrUnpaid when the evidence is sound but shows no payment.
func (v *Verifier) VerifyContract(ctx context.Context, contractID string, evidence []byte) (reputation.PaidContract, error) {
	var none reputation.PaidContract
	ev, err := Decode(evidence)
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
	terms, err := payment.DecodeSellerTerms(ct.Acceptance.PaymentTerms)
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
	if v.Chain == nil {
		return none, unverifiable("no chain to check funding %s on", ch.ID)
	}
	// A light client finds the funding through its script, from the
	// height the channel was opened at (or, when the evidence does not
	// say, two default lifetimes before its expiry).
	hint := ch.OpenHeight - 6
	if ch.OpenHeight == 0 {
		hint = int32(ch.Expiry) - 2*payment.DefaultConfig().ChannelLifetime
	}
	pk, _ := ch.PkScript()
	var confs int32
	if pc, ok := v.Chain.(payment.Chain); ok {
		confs, err = payment.TxConfirmations(ctx, pc, ch.FundingTxid(), pk, hint)
	} else {
		confs, err = v.Chain.Confirmations(ctx, ch.FundingTxid())
	}
	if err != nil {
		return none, unverifiable("funding %s: %v", ch.ID, err)
	}
	if confs < MinFundingConfs {
		return none, fmt.Errorf("%w: funding %s has %d confirmations", reputation.ErrUnpaid, ch.ID, confs)
	}
	return reputation.PaidContract{
		Buyer: ct.Proposal.Buyer, Seller: ct.Proposal.Seller, PaidSats: uint64(u.ContractAmount),
	}, nil
}

// Contracts is where ForBuyer finds the buyer's record of a contract
// (contract.Machine satisfies it).
type Contracts interface {
	Get(role contract.Role, id string) (*contract.Record, error)
}

// Channels is where ForBuyer finds the channel that paid a contract and
// its latest update for it (payment.Manager satisfies it).
type Channels interface {
	Channels() []*payment.Channel
	LatestUpdate(channelID, contractID string) (*payment.Update, error)
}

// ForBuyer builds the evidence for a contract this node bought: the
// contract record from contracts, the buyer's channel that carries the
// contract and its latest update labelled with it. It returns the encoded
// evidence and the contract's cumulative amount paid, or an error wrapping
// ErrNoEvidence when the contract was never accepted or never paid.
func ForBuyer(channels Channels, contracts Contracts, contractID string) ([]byte, int64, error) {
	rec, err := contracts.Get(contract.RoleBuyer, contractID)
	if err != nil {
		return nil, 0, fmt.Errorf("evidence for %s: %w", contractID, err)
	}
	if len(rec.Contract) == 0 {
		return nil, 0, fmt.Errorf("%w: contract %s was not accepted", ErrNoEvidence, contractID)
	}
	var ch *payment.Channel
	for _, c := range channels.Channels() {
		if c.Role == payment.RoleBuyer && c.Contracts[contractID] > 0 {
			ch = c
			break
		}
	}
	if ch == nil {
		return nil, 0, fmt.Errorf("%w: no channel paid contract %s", ErrNoEvidence, contractID)
	}
	u, err := channels.LatestUpdate(ch.ID, contractID)
	if err != nil {
		return nil, 0, fmt.Errorf("evidence for %s: latest update on %s: %w", contractID, ch.ID, err)
	}
	if u == nil {
		return nil, 0, fmt.Errorf("%w: channel %s has no update", ErrNoEvidence, ch.ID)
	}
	ev := &Evidence{Contract: rec.Contract, Open: ch.OpenRequest().Encode(), Update: u.Encode()}
	return ev.Encode(), u.ContractAmount, nil
}
