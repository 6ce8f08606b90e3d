// Package payment owns the money side of blackbox: Bitcoin keys and the
// buyer's hot wallet, the channel and escrow scripts, the payment-channel
// state machine that lets a buyer pay a seller per billing interval with one
// signature and two on-chain transactions per channel, and the chain backend
// (btcd's RPC) that broadcasts, counts confirmations and watches spends.
//
// It knows nothing about jobs: the contract package calls it through the
// Manager (open, pay, accept an update, close, refund) and persists nothing
// itself; persistence goes through the ChannelStore interface, implemented on
// the node's database by internal/store.
//
// Long, high-value contracts go through the EscrowManager instead of a
// channel: the buyer calls OpenEscrow with the seller's and an arbiter's
// EscrowTerms and sends the offer to both (AcceptEscrow); the amount sits in
// a 2-of-3 output whose arbiter key counts only after a CLTV delay chosen
// beyond the contract's end plus a dispute window. When the job is done the
// contract code has the buyer sign a Release (or the seller a Refund, on
// cancellation) and passes the signature to the other side's AddSignature;
// that side completes it and broadcasts. If they disagree, both call
// Dispute, the arbiter signs an Arbitrate for the side it finds for, and
// that side completes the payout once the delay has passed. Every signature
// and state change is in the EscrowStore (the same bbolt database) before it
// is acknowledged, and Tick on each block carries an escrow through
// confirmations, spends by anyone and reorgs, after a restart as before it.
package payment
