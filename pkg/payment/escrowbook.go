package payment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/wire"
)

// RoleArbiter is the third party of an escrow. Stored by number, after the
// channel roles.
const RoleArbiter Role = 3

// EscrowState is an escrow's persisted lifecycle state. The numbers are
// stored: new states are appended, never renumbered.
//
//	OpenEscrow /       confs >= Confirmations
//	AcceptEscrow ─▶ Pending ─────────────────────────▶ Funded
//	                 │    ▲  reorg: confs drop below N  │
//	         Abandon │    └─────────────────────────────┤
//	                 ▼                                  │
//	               Failed        ┌──────────────────────┼───────────────────────┐
//	                             │ Release (buyer +     │ Refund (buyer +       │ Dispute, or an
//	                             │ seller signatures),  │ seller), or such a    │ arbitrated payout
//	                             │ or such a spend seen │ spend seen            │ signed or seen
//	                             ▼                      ▼                       ▼
//	                         Releasing ◀──────────▶ Refunding ◀──────────▶ Disputed
//	                             │      (and Releasing ◀─▶ Disputed:        │  Arbitrate
//	                             │       the spend that confirms decides)   │  (arbiter + one
//	                             │                      │                   │  party, after Delay)
//	                             ▼                      ▼                   ▼
//	                         Released               Refunded            Arbitrated
//	                                (our or their spend has Confirmations confs)
//
// Released, Refunded, Arbitrated and Failed are final. Staying in a state
// (a signature added, a spend recorded) is always allowed, so every step can
// be re-run after a crash.
type EscrowState uint8

// Escrow states.
const (
	EscrowPending    EscrowState = 1
	EscrowFunded     EscrowState = 2
	EscrowReleasing  EscrowState = 3
	EscrowReleased   EscrowState = 4
	EscrowRefunding  EscrowState = 5
	EscrowRefunded   EscrowState = 6
	EscrowDisputed   EscrowState = 7
	EscrowArbitrated EscrowState = 8
	EscrowFailed     EscrowState = 9
)

func (s EscrowState) String() string {
	switch s {
	case EscrowPending:
		return "pending"
	case EscrowFunded:
		return "funded"
	case EscrowReleasing:
		return "releasing"
	case EscrowReleased:
		return "released"
	case EscrowRefunding:
		return "refunding"
	case EscrowRefunded:
		return "refunded"
	case EscrowDisputed:
		return "disputed"
	case EscrowArbitrated:
		return "arbitrated"
	case EscrowFailed:
		return "failed"
	}
	return fmt.Sprintf("escrow_state(%d)", s)
}

// escrowMoves is the transition map above, as data: every persisted
// change of state goes through CanMove.
var escrowMoves = map[EscrowState][]EscrowState{
	EscrowPending:   {EscrowFunded, EscrowFailed},
	EscrowFunded:    {EscrowPending, EscrowReleasing, EscrowRefunding, EscrowDisputed},
	EscrowReleasing: {EscrowReleased, EscrowRefunding, EscrowDisputed},
	EscrowRefunding: {EscrowRefunded, EscrowReleasing, EscrowDisputed},
	EscrowDisputed:  {EscrowArbitrated, EscrowReleasing, EscrowRefunding},
}

// CanMove reports whether s may become to. Staying put is always allowed
// (a signature added, a spend recorded).
func (s EscrowState) CanMove(to EscrowState) bool {
	return s == to || slices.Contains(escrowMoves[s], to)
}

// Final reports whether nothing can happen to the escrow any more.
func (s EscrowState) Final() bool {
	return s == EscrowReleased || s == EscrowRefunded || s == EscrowArbitrated || s == EscrowFailed
}

// ErrIllegalMove is a state change the transition map does not allow.
var ErrIllegalMove = errors.New("illegal escrow state change")

// SpendKind says which escrow spend a signature is for. Stored and sent by
// number: never renumber.
type SpendKind uint8

// Spend kinds: the cooperative branch (buyer and seller, any time) pays the
// seller (release) or the buyer (refund); the arbiter's branch (two of the
// three, after Delay) pays either.
const (
	SpendRelease      SpendKind = 1
	SpendRefund       SpendKind = 2
	SpendPayoutSeller SpendKind = 3
	SpendPayoutBuyer  SpendKind = 4
	// SpendPayoutSplit is the arbiter's branch paying the seller the
	// record's Split and the buyer the rest, less the fee.
	SpendPayoutSplit SpendKind = 5
)

func (k SpendKind) String() string {
	switch k {
	case SpendRelease:
		return "release"
	case SpendRefund:
		return "refund"
	case SpendPayoutSeller:
		return "payout_seller"
	case SpendPayoutBuyer:
		return "payout_buyer"
	case SpendPayoutSplit:
		return "payout_split"
	}
	return fmt.Sprintf("spend_kind(%d)", k)
}

// Arbitrated reports whether k spends through the arbiter's branch.
func (k SpendKind) Arbitrated() bool {
	return k == SpendPayoutSeller || k == SpendPayoutBuyer || k == SpendPayoutSplit
}

func (k SpendKind) valid() bool { return k >= SpendRelease && k <= SpendPayoutSplit }

// toSeller reports whether k pays the seller.
func (k SpendKind) toSeller() bool { return k == SpendRelease || k == SpendPayoutSeller }

// state is where broadcasting (or seeing) a spend of kind k moves an escrow.
func (k SpendKind) state() EscrowState {
	switch k {
	case SpendRelease:
		return EscrowReleasing
	case SpendRefund:
		return EscrowRefunding
	}
	return EscrowDisputed
}

// EscrowSigRecord is one party's signature of one escrow spend: the spend
// transaction is rebuilt from the record, the kind and the fee.
type EscrowSigRecord struct {
	Kind SpendKind `json:"kind"`
	Fee  int64     `json:"fee"`
	Key  []byte    `json:"key"`
	Sig  []byte    `json:"sig"`
}

// EscrowRecord is one escrow as persisted, by each of the three parties.
type EscrowRecord struct {
	// ID is the funding outpoint, "txid:vout".
	ID    string      `json:"id"`
	Role  Role        `json:"role"`
	State EscrowState `json:"state"`
	// Peer is who sent or received the offer (opaque here).
	Peer string `json:"peer"`

	BuyerKey   []byte `json:"buyer_key"`
	SellerKey  []byte `json:"seller_key"`
	ArbiterKey []byte `json:"arbiter_key"`
	// KeyIndex is our key's index in FamilyEscrow.
	KeyIndex uint32 `json:"key_index"`
	// Delay is the absolute height from which the arbiter's key counts.
	Delay  uint32 `json:"delay"`
	Amount int64  `json:"amount"`
	// SellerScript and BuyerScript are where releases and refunds pay.
	SellerScript []byte `json:"seller_script"`
	BuyerScript  []byte `json:"buyer_script"`
	FundingTx    []byte `json:"funding_tx"`
	OpenHeight   int32  `json:"open_height"`

	// Sigs are the signatures collected (ours and the peers'), at most one
	// per kind and key: a newer one replaces the older.
	Sigs []EscrowSigRecord `json:"sigs,omitempty"`
	// SpendKind, SpendTx and SpendTxid describe the spend of the funding
	// output: the one we broadcast (SpendTx, kept to rebroadcast) or the
	// one we saw (SpendTxid only).
	SpendKind SpendKind `json:"spend_kind,omitempty"`
	SpendTx   []byte    `json:"spend_tx,omitempty"`
	SpendTxid string    `json:"spend_txid,omitempty"`
	// Split is the seller's share, in sats, of a split payout (the
	// arbiter's decision; SetSplit), the buyer's the rest less the fee.
	Split int64 `json:"split,omitempty"`
	// Release is the seller's share, in sats, of a release: what the
	// signed receipt billed (SetRelease). The seller pays the release's
	// fee from it and the buyer gets the rest of the escrow back in the
	// same transaction; 0 (or the whole amount) releases everything.
	Release int64 `json:"release,omitempty"`
	// Paid is where the spend of the escrow (ours or one seen) paid.
	Paid *EscrowPaid `json:"paid,omitempty"`

	FailReason string `json:"fail_reason,omitempty"`
	// Market is what the market knows of the escrow (who the parties
	// are, which contract it pays, a dispute's evidence); set through
	// EscrowManager.SetMarket, opaque to this package.
	Market  *EscrowMarket `json:"market,omitempty"`
	Created time.Time     `json:"created"`
	Updated time.Time     `json:"updated"`
}

// EncodeEscrow is the stored form of an escrow record (JSON, as channels).
func EncodeEscrow(e *EscrowRecord) ([]byte, error) { return json.Marshal(e) }

// DecodeEscrow reads a stored escrow record.
func DecodeEscrow(b []byte) (*EscrowRecord, error) {
	var e EscrowRecord
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decode escrow record: %w", err)
	}
	return &e, nil
}

// clone deep-copies the record: a change is made on a clone, persisted,
// and only then adopted.
func (e *EscrowRecord) clone() *EscrowRecord {
	d := *e
	d.Sigs = slices.Clone(e.Sigs)
	d.SpendTx = bytes.Clone(e.SpendTx)
	if e.Paid != nil {
		p := *e.Paid
		d.Paid = &p
	}
	if e.Market != nil {
		m := *e.Market
		d.Market = &m
	}
	return &d
}

// move is the only way a record's state changes.
func (e *EscrowRecord) move(to EscrowState) error {
	if !e.State.CanMove(to) {
		return fmt.Errorf("escrow %s: %w: %s → %s", e.ID, ErrIllegalMove, e.State, to)
	}
	e.State = to
	return nil
}

// Escrow is the record's script-level escrow.
func (e *EscrowRecord) Escrow() (*Escrow, error) {
	op, err := wire.NewOutPointFromString(e.ID)
	if err != nil {
		return nil, fmt.Errorf("escrow id %q: %w", e.ID, err)
	}
	var keys [3]*btcec.PublicKey
	for i, raw := range [][]byte{e.BuyerKey, e.SellerKey, e.ArbiterKey} {
		if keys[i], err = btcec.ParsePubKey(raw); err != nil {
			return nil, fmt.Errorf("escrow %s: %w: %v", e.ID, ErrWrongKey, err)
		}
	}
	return &Escrow{Buyer: keys[0], Seller: keys[1], Arbiter: keys[2], Delay: e.Delay, Outpoint: *op, Amount: e.Amount}, nil
}

// BuildSpend is the unsigned spend of kind paying fee; every party builds the
// same one from its record.
func (e *EscrowRecord) BuildSpend(kind SpendKind, fee int64) (*wire.MsgTx, error) {
	es, err := e.Escrow()
	if err != nil {
		return nil, err
	}
	if kind == SpendPayoutSplit {
		return es.SplitTx(e.SellerScript, e.Split, e.BuyerScript, fee)
	}
	if kind == SpendRelease {
		return es.ReleaseTx(e.SellerScript, e.Release, e.BuyerScript, fee)
	}
	to := e.BuyerScript
	if kind.toSeller() {
		to = e.SellerScript
	}
	return es.SpendTx(to, fee, kind.Arbitrated())
}

// keyRole is which party key belongs to, or 0.
func (e *EscrowRecord) keyRole(key []byte) Role {
	switch {
	case bytes.Equal(key, e.BuyerKey):
		return RoleBuyer
	case bytes.Equal(key, e.SellerKey):
		return RoleSeller
	case bytes.Equal(key, e.ArbiterKey):
		return RoleArbiter
	}
	return 0
}

// ourKey is our public key in this escrow.
func (e *EscrowRecord) ourKey() []byte {
	switch e.Role {
	case RoleBuyer:
		return e.BuyerKey
	case RoleSeller:
		return e.SellerKey
	}
	return e.ArbiterKey
}

// mayAuthorize reports whether role r's key can sign a spend of kind k:
// the cooperative branch knows only buyer and seller.
func mayAuthorize(r Role, k SpendKind) bool {
	if r == RoleArbiter {
		return k.Arbitrated()
	}
	return r == RoleBuyer || r == RoleSeller
}

// addSig records s, replacing an older signature of the same kind and key.
func (e *EscrowRecord) addSig(s EscrowSigRecord) {
	e.Sigs = slices.DeleteFunc(e.Sigs, func(o EscrowSigRecord) bool {
		return o.Kind == s.Kind && bytes.Equal(o.Key, s.Key)
	})
	e.Sigs = append(e.Sigs, s)
}

// sig returns the signature of kind by key, if held.
func (e *EscrowRecord) sig(kind SpendKind, key []byte) (EscrowSigRecord, bool) {
	for _, s := range e.Sigs {
		if s.Kind == kind && bytes.Equal(s.Key, key) {
			return s, true
		}
	}
	return EscrowSigRecord{}, false
}

// peerSig returns a peer's signature of kind (any key but ours).
func (e *EscrowRecord) peerSig(kind SpendKind) (EscrowSigRecord, bool) {
	own := e.ourKey()
	for _, s := range e.Sigs {
		if s.Kind == kind && !bytes.Equal(s.Key, own) {
			return s, true
		}
	}
	return EscrowSigRecord{}, false
}

// classifySpend says which kind of spend tx is, from its witness branch
// selector and where its first output pays; ok is false when tx does not
// look like any (then it is recorded with its txid only).
func (e *EscrowRecord) classifySpend(tx *wire.MsgTx, op wire.OutPoint) (SpendKind, bool) {
	for _, in := range tx.TxIn {
		if in.PreviousOutPoint != op || len(in.Witness) != 5 || len(tx.TxOut) == 0 {
			continue
		}
		toSeller := bytes.Equal(tx.TxOut[0].PkScript, e.SellerScript)
		coop := len(in.Witness[3]) > 0
		switch {
		case !coop && len(tx.TxOut) == 2:
			return SpendPayoutSplit, true
		case coop && toSeller:
			return SpendRelease, true
		case coop:
			return SpendRefund, true
		case toSeller:
			return SpendPayoutSeller, true
		default:
			return SpendPayoutBuyer, true
		}
	}
	return 0, false
}

// EscrowStore persists escrow records. PutEscrow must be durable (fsynced)
// when it returns nil: the EscrowManager acknowledges nothing before that,
// and adopts a change in memory only after it. It is never called twice at
// once for the same escrow.
type EscrowStore interface {
	PutEscrow(e *EscrowRecord) error
	LoadEscrows() ([]*EscrowRecord, error)
	// NextIndex is ChannelStore's durable counter (escrow keys use
	// "escrow_key"; seller payouts share "payout" with channels).
	NextIndex(name string) (uint32, error)
}
