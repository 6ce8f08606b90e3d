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
package payment
