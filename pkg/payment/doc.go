// Package payment owns the money side of blackbox: Bitcoin keys and the
// buyer's hot wallet, the channel and escrow scripts, the payment-channel
// state machine that lets a buyer pay a seller per billing interval with one
// signature and two on-chain transactions per channel, and the chain backend
// (btcd's RPC) that broadcasts, counts confirmations and watches spends.
//
// It knows nothing about jobs: the node drives it through the Manager on the
// contract engine's behalf (open, pay, accept an update, close, refund). It
// persists nothing itself; persistence goes through the ChannelStore
// interface, implemented on the node's database by internal/store.
//
// The escrow subsystem (EscrowManager, escrow*.go) is a library with no
// caller yet: no node builds an EscrowManager, no contract is settled
// through one, no stream protocol carries its messages and no arbiter role
// exists in the market; only its tests (in-memory, internal/store's and a
// btcd regtest) drive it. Wiring it into the market is the payments issue's
// work. What it does when driven: a buyer calls OpenEscrow with a seller's
// and an arbiter's EscrowTerms, and each of them AcceptEscrow on the
// EscrowOffer; the amount sits in a 2-of-3 output whose arbiter key counts
// only after a CLTV delay. Buyer and seller settle alone with a Release or
// a Refund (one signs, the other's AddSignature completes and broadcasts);
// if they disagree, Dispute, then the arbiter signs an Arbitrate for one
// side, which completes the payout once the delay has passed. Every
// signature and state change is in the EscrowStore before it is
// acknowledged, and Tick on each block carries an escrow through
// confirmations, spends by anyone and reorgs, after a restart as before it.
package payment
