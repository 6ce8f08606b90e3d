package reputation

import (
	"context"
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"
)

// PaidContract is what ContractEvidence confirms about a contract.
type PaidContract struct {
	Buyer  peer.ID
	Seller peer.ID
	// PaidSats is the amount actually paid to the seller for this contract
	// (channel updates or settlement), as verified, not as claimed.
	PaidSats uint64
}

// ContractEvidence answers, for an attestation, "is this contract signed by
// both parties and paid, and for how much?". The contract and payment code
// implement it: evidence is the opaque proof the attester put in the
// attestation (the contract envelope with both signatures and the payment
// update or settlement); an implementation may also consult its own records
// when this node was a party.
//
// It must return ErrUnpaid when the contract is genuine but nothing (or not
// enough to count) was paid, and ErrUnverifiable (or any other error) when it
// cannot establish that the contract exists with both signatures. It must
// not block on the network for long: callers pass a context with a deadline.
type ContractEvidence interface {
	VerifyContract(ctx context.Context, contractID string, evidence []byte) (PaidContract, error)
}

// Verification errors a ContractEvidence returns.
var (
	ErrUnpaid       = errors.New("contract not paid")
	ErrUnverifiable = errors.New("contract cannot be verified")
)

// EvidenceFunc adapts a function to ContractEvidence.
type EvidenceFunc func(ctx context.Context, contractID string, evidence []byte) (PaidContract, error)

// VerifyContract implements ContractEvidence.
func (f EvidenceFunc) VerifyContract(ctx context.Context, id string, ev []byte) (PaidContract, error) {
	return f(ctx, id, ev)
}

// noEvidence refuses everything: with no verifier, no attestation counts.
type noEvidence struct{}

func (noEvidence) VerifyContract(context.Context, string, []byte) (PaidContract, error) {
	return PaidContract{}, ErrUnverifiable
}
