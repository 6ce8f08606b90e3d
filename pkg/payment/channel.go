package payment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Role is which side of a channel this node is.
type Role uint8

// Roles, stored by number.
const (
	RoleBuyer  Role = 1
	RoleSeller Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleBuyer:
		return "buyer"
	case RoleSeller:
		return "seller"
	case RoleArbiter:
		return "arbiter"
	}
	return fmt.Sprintf("role(%d)", r)
}

// State is a channel's persisted lifecycle state. The numbers are stored:
// new states are appended, never renumbered.
//
//	                       confs >= Confirmations
//	OpenChannel/AcceptOpen ─▶ Pending ─────────────────────▶ Open ◀─┐ Pay / AcceptUpdate
//	                          │  ▲   reorg: confs drop below N │  └──┘ (stays Open)
//	                          │  └─────────────────────────────┤
//	        funding conflicted│                                │ Close (seller, auto at
//	                          ▼                                │ expiry-SafetyMargin),
//	                        Failed                             │ Refund (buyer, after
//	                                                           │ expiry), or any spend
//	                                                           ▼ of the funding seen
//	                                                        Closing ──▶ Closed
//	                                                      (spend has Confirmations confs)
type State uint8

// Channel states.
const (
	StatePending State = 1
	StateOpen    State = 2
	StateClosing State = 3
	StateClosed  State = 4
	StateFailed  State = 5
)

func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateOpen:
		return "open"
	case StateClosing:
		return "closing"
	case StateClosed:
		return "closed"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", s)
}

// Channel is one payment channel as persisted: its fixed parameters (agreed
// at open), the latest payment, and where it is in its lifecycle.
type Channel struct {
	// ID is the funding outpoint, "txid:vout".
	ID    string `json:"id"`
	Role  Role   `json:"role"`
	State State  `json:"state"`
	// Peer is the other side's node ID (opaque here).
	Peer string `json:"peer"`

	BuyerKey  []byte `json:"buyer_key"`
	SellerKey []byte `json:"seller_key"`
	// KeyIndex is our key's index in its family (FamilyChannelBuyer for a
	// buyer, FamilySeller for a seller).
	KeyIndex uint32 `json:"key_index"`
	// Expiry is the absolute block height after which the buyer can refund.
	Expiry uint32 `json:"expiry"`
	// Capacity is the funding output's value.
	Capacity int64 `json:"capacity"`
	// CloseFee is the fee of the cooperative close transaction, fixed at
	// open and paid out of the seller's share.
	CloseFee     int64  `json:"close_fee"`
	SellerScript []byte `json:"seller_script"`
	BuyerScript  []byte `json:"buyer_script"`
	FundingTx    []byte `json:"funding_tx"`
	Vout         uint32 `json:"vout"`
	// OpenHeight is the tip when the channel was opened: spends of the
	// funding output are searched from there.
	OpenHeight int32 `json:"open_height"`

	// Seq, Paid and BuyerSig are the latest update: its sequence number,
	// the cumulative amount due to the seller and (on the seller's side)
	// the buyer's signature of the close transaction paying it.
	Seq      uint64 `json:"seq"`
	Paid     int64  `json:"paid"`
	BuyerSig []byte `json:"buyer_sig,omitempty"`
	// Contracts is the cumulative amount paid per contract ID.
	Contracts map[string]int64 `json:"contracts,omitempty"`
	// Unattributed (seller) is what updates paid beyond their contracts
	// because updates between them never arrived: ours, for no contract
	// we know of.
	Unattributed int64 `json:"unattributed,omitempty"`
	// LastContract and LastDelta are the latest update's contract and
	// what it added to the channel (reestablish.go): a seller sends them
	// back with a refusal (its held update), a buyer undoes its own
	// latest update with them when the seller never took it. Empty in
	// records written before them.
	LastContract string `json:"last_contract,omitempty"`
	LastDelta    int64  `json:"last_delta,omitempty"`

	// SpendTx is the close or refund transaction we broadcast (kept to
	// rebroadcast after a restart or a reorg); SpendTxid is whatever spent
	// the funding output, ours or the peer's.
	SpendTx   []byte `json:"spend_tx,omitempty"`
	SpendTxid string `json:"spend_txid,omitempty"`
	// Bump is the fee bumping of our unconfirmed close or refund
	// (bump.go); nil until it is first seen unconfirmed.
	Bump *Bump `json:"bump,omitempty"`
	// HoldIndex (seller, payouts swept) is the FamilyPayoutHold key the
	// close pays (SellerScript), and Sweep the transaction forwarding
	// that output to the payout address (sweep.go).
	HoldIndex *uint32    `json:"hold_index,omitempty"`
	Sweep     *SweepInfo `json:"sweep,omitempty"`
	// Recovered (seller) says the record was rebuilt from the chain by a
	// scan of the hold keys after a restore from the seed alone
	// (holdscan.go): ID is what the close spent, Paid what its output
	// holds, and the close's own fee is unknown.
	Recovered bool `json:"recovered,omitempty"`
	// PendingSince is the height from which the funding has been out of
	// the chain (new, or reorged out); 0 once it is in a block
	// (fundwatch.go).
	PendingSince int32 `json:"pending_since,omitempty"`
	// FailReason says why a channel failed.
	FailReason string    `json:"fail_reason,omitempty"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`

	// ZeroConf (seller) says the funding passed the checks for working on
	// it unconfirmed when the channel was accepted (zeroconf.go);
	// ZeroConfWhy says why it did not.
	ZeroConf    bool   `json:"zero_conf,omitempty"`
	ZeroConfWhy string `json:"zero_conf_why,omitempty"`
}

// EncodeChannel is the stored form of a channel record (JSON: small,
// readable with standard tools, and versioned by its field names).
func EncodeChannel(c *Channel) ([]byte, error) { return json.Marshal(c) }

// DecodeChannel reads a stored channel record.
func DecodeChannel(b []byte) (*Channel, error) {
	var c Channel
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode channel record: %w", err)
	}
	return &c, nil
}

// clone deep-copies the record so a change can be persisted first and
// adopted only when the store accepted it.
func (c *Channel) clone() *Channel {
	d := *c
	d.BuyerSig = bytes.Clone(c.BuyerSig)
	d.SpendTx = bytes.Clone(c.SpendTx)
	d.Contracts = maps.Clone(c.Contracts)
	d.Bump = c.Bump.clone()
	d.Sweep = c.Sweep.clone()
	if c.HoldIndex != nil {
		d.HoldIndex = ptr(*c.HoldIndex)
	}
	return &d
}

// Outpoint is the funding outpoint.
func (c *Channel) Outpoint() (wire.OutPoint, error) {
	op, err := wire.NewOutPointFromString(c.ID)
	if err != nil {
		return wire.OutPoint{}, fmt.Errorf("channel id %q: %w", c.ID, err)
	}
	return *op, nil
}

// FundingTxid is the funding transaction's hash.
func (c *Channel) FundingTxid() chainhash.Hash {
	op, _ := c.Outpoint()
	return op.Hash
}

// Keys parses the two public keys.
func (c *Channel) Keys() (seller, buyer *btcec.PublicKey, err error) {
	if seller, err = btcec.ParsePubKey(c.SellerKey); err != nil {
		return nil, nil, fmt.Errorf("seller key: %w", err)
	}
	if buyer, err = btcec.ParsePubKey(c.BuyerKey); err != nil {
		return nil, nil, fmt.Errorf("buyer key: %w", err)
	}
	return seller, buyer, nil
}

// Script is the channel's witness script.
func (c *Channel) Script() ([]byte, error) {
	s, b, err := c.Keys()
	if err != nil {
		return nil, err
	}
	return ChannelScript(s, b, c.Expiry)
}

// PkScript is the funding output's script (P2WSH of Script).
func (c *Channel) PkScript() ([]byte, error) {
	ws, err := c.Script()
	if err != nil {
		return nil, err
	}
	return P2WSH(ws)
}

// CloseTx is the deterministic cooperative close for a cumulative payment
// paid: output 0 pays the seller paid-CloseFee, output 1 returns the rest to
// the buyer unless it is dust, in which case it is folded into the fee. Both
// sides build it from the same fields, so an update only carries a signature.
func (c *Channel) CloseTx(paid int64) (*wire.MsgTx, error) {
	op, err := c.Outpoint()
	if err != nil {
		return nil, err
	}
	if paid < 0 || paid > c.Capacity {
		return nil, fmt.Errorf("%w: %d not in [0, %d]", ErrOverCapacity, paid, c.Capacity)
	}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&op, nil, nil))
	tx.AddTxOut(wire.NewTxOut(paid-c.CloseFee, c.SellerScript))
	if back := c.Capacity - paid; !IsDust(c.BuyerScript, back) {
		tx.AddTxOut(wire.NewTxOut(back, c.BuyerScript))
	}
	return tx, nil
}

// CloseWorth reports whether closing now pays the seller a relayable
// output: paid minus the close fee is above dust.
func (c *Channel) CloseWorth() bool {
	return !IsDust(c.SellerScript, c.Paid-c.CloseFee)
}

// Exhausted reports whether the buyer's remaining balance is below dust:
// the channel can carry no meaningful payment any more.
func (c *Channel) Exhausted() bool {
	return IsDust(c.BuyerScript, c.Capacity-c.Paid)
}

// closeVSize is the close transaction's virtual size with maximal
// signatures, used to price CloseFee at open.
func closeVSize(script, sellerScript, buyerScript []byte) int64 {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, ChannelCloseWitness(script, placeholderSig, placeholderSig)))
	tx.AddTxOut(wire.NewTxOut(0, sellerScript))
	tx.AddTxOut(wire.NewTxOut(0, buyerScript))
	return VSize(tx)
}

// refundTx spends the funding output back to the buyer through the CLTV
// branch, paying fee.
func (c *Channel) refundTx(fee int64) (*wire.MsgTx, error) {
	op, err := c.Outpoint()
	if err != nil {
		return nil, err
	}
	tx := wire.NewMsgTx(2)
	tx.LockTime = c.Expiry
	in := wire.NewTxIn(&op, nil, nil)
	in.Sequence = refundSequence
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(c.Capacity-fee, c.BuyerScript))
	return tx, nil
}

func refundVSize(script, buyerScript []byte) int64 {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, ChannelRefundWitness(script, placeholderSig)))
	tx.AddTxOut(wire.NewTxOut(0, buyerScript))
	return VSize(tx)
}

// Errors an update or an open can be refused with. Each is wrapped with the
// details; callers branch with errors.Is and send the reason to the peer.
var (
	ErrMalformed      = errors.New("malformed message")
	ErrUnknownChannel = errors.New("unknown channel")
	ErrNotOpen        = errors.New("channel not open")
	ErrWrongRole      = errors.New("wrong role for this operation")
	ErrStale          = errors.New("stale update")
	ErrLowerAmount    = errors.New("amount does not increase")
	ErrOverCapacity   = errors.New("amount exceeds capacity")
	ErrWrongScript    = errors.New("update pays the wrong script")
	ErrBadSignature   = errors.New("signature does not verify")
	ErrContractAmount = errors.New("contract amounts inconsistent")
	ErrTooLate        = errors.New("channel too close to expiry")
	ErrWrongKey       = errors.New("wrong key")
	ErrBadFunding     = errors.New("funding output does not match")
	ErrFeeBound       = errors.New("fee above configured bound")
	ErrNotWorth       = errors.New("close would pay the seller only dust")
	ErrNotExpired     = errors.New("channel not expired yet")
)

// SpendFee is what this node paid for the close or refund it broadcast of
// c: a seller its close fee (out of its share; a buyer's change too small to
// pay out is the buyer's loss, not the seller's fee), a buyer the whole fee
// of its refund (what the funding output held minus what the transaction
// pays out). 0 when it broadcast none, or when the peer's spend confirmed
// instead.
func (c *Channel) SpendFee() int64 {
	if len(c.SpendTx) == 0 {
		return 0
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(c.SpendTx)); err != nil {
		return 0
	}
	if c.SpendTxid != "" && c.SpendTxid != tx.TxHash().String() {
		return 0
	}
	if c.Role == RoleSeller {
		return c.CloseFee
	}
	out := int64(0)
	for _, o := range tx.TxOut {
		out += o.Value
	}
	return max(c.Capacity-out, 0)
}
