package contract

import "github.com/libp2p/go-libp2p/core/peer"

// CapacityRestorer is what a seller's PaymentReceiver or a buyer's Payer
// may also do: reserve again, after a restart, the worst case of a
// contract it resumes on the channel the contract pays on. Reservations
// (each contract's worst case on its channel, so that contracts running at
// once never promise more than the channel holds) live in memory; each
// side rebuilds them from the contracts it resumes before it takes or
// makes a new one. The seller's FundingGate.Release or the buyer's
// ContractPayer.Release frees it when the contract ends.
type CapacityRestorer interface {
	RestoreCapacity(p peer.ID, contractID string, amount int64)
}

// restoreCapacity reserves again, on payments, the worst case of the
// contract of rec, resumed after a restart (nothing for an escrowed one:
// it pays on no channel).
func restoreCapacity(payments any, rec *Record) {
	cr, ok := payments.(CapacityRestorer)
	if !ok || rec == nil || rec.Proposal == nil || rec.Proposal.Request.Escrow != "" {
		return
	}
	cr.RestoreCapacity(rec.Peer, rec.ID, rec.Proposal.Total())
}
