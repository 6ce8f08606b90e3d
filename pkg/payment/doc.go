// Package payment owns the money side of blackbox: Bitcoin keys and the
// buyer's hot wallet, the channel and escrow scripts, the payment-channel
// state machine that lets a buyer pay a seller per billing interval with one
// signature and two on-chain transactions per channel, and the chain backend
// (btcd's RPC) that broadcasts, counts confirmations and watches spends.
//
// It knows nothing about jobs. The node's contract engines reach it through
// two small adapters: the buyer's Payer (EnsureChannel sizes a channel for a
// contract, reusing one with room or funding one at a time; Pay signs a
// contract's cumulative total) and the seller's Manager (SellerTerms, whose
// encoding travels in a contract acceptance; AcceptOpen; AcceptUpdateInOrder,
// which holds back an update that overtook its predecessor on another
// stream). Every peer message is size-capped and decoded by a fuzzed decoder
// (DecodeSellerTerms, DecodeOpenRequest, DecodeUpdate).
//
// Nothing is acknowledged before it is persisted through the ChannelStore
// interface (implemented on the node's database by internal/store), and, with
// a BackupStore around it, written to the static channel backup: a file
// outside the database holding every open channel's parameters and latest
// signed update, from which RestoreChannelBackup rebuilds a lost database.
//
// The seller's close policy (ClosePolicy, closepolicy.go) settles channels
// without the operator: at payment.close_at, after payment.close_idle, and
// before expiry, to the payout address or a fresh child of the payout xpub
// per channel, and only when the close pays the seller at least its fee
// (before expiry: above dust, else the buyer's refund takes it back). With
// payment.payout_sweep (the default) those closes pay a per-channel key of
// the node and batched sweeps forward them (sweep.go), so that the node can
// fee-bump both. Holdings says where the money is: in channels (with what
// closing and sweeping them would cost and leave), closing, sweeping,
// settled, lost.
//
// Tick also keeps money from getting stuck (bump.go, fundwatch.go): a close
// or refund of ours that stays unconfirmed is fee-bumped (a close by a
// child spending the seller's payout output, a refund by replacement),
// within the fee bounds and before the channel's expiry; a pending
// channel whose funding is double-spent, or stays out of the chain for
// FundingTimeout blocks, fails with the reason (ManagerConfig.OnFail), and
// one failed for never confirming comes back if its funding confirms after
// all.
//
// The EscrowManager (2-of-3 outputs whose arbiter key counts only after a
// CLTV delay, for long, high-value contracts: OpenEscrow / AcceptEscrow,
// Release or Refund signatures completed by AddSignature, Dispute and
// Arbitrate) pays the market's escrowed jobs (`submit --escrow ARBITER`;
// internal/node/escrow.go and docs/escrow.md); other jobs pay through
// channels.
package payment
