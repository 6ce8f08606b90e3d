package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// ErrEscrowState is an escrow operation its current state does not allow
// (funding unconfirmed, already settled, no dispute yet).
var ErrEscrowState = errors.New("escrow not in a state for this")

// ErrEscrowDelay is an escrow whose CLTV delay is too short for its job or
// longer than this node lets its money wait.
var ErrEscrowDelay = errors.New("escrow delay out of bounds")

// ErrUnknownEscrow is an escrow ID this node does not hold.
var ErrUnknownEscrow = errors.New("unknown escrow")

// EscrowManagerConfig is what an EscrowManager is built from; the fields
// mean what they mean in ManagerConfig.
type EscrowManagerConfig struct {
	Config Config
	// Chain answers every chain question; required.
	Chain Chain
	// Store persists every change before it is acknowledged; required.
	Store EscrowStore
	// Keys derives our escrow keys (FamilyEscrow); required.
	Keys *Keyring
	// Funder funds escrows we buy through; nil on a seller or arbiter.
	Funder Funder
	Log    *slog.Logger
	// AfterPersist, if set, runs after a change is durable and before it
	// is acknowledged (crash tests stop the process there).
	AfterPersist func(e *EscrowRecord)
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// EscrowManager runs 2-of-3 escrows, as buyer, seller or arbiter:
// OpenEscrow / AcceptEscrow, Release, Refund, Dispute, Arbitrate,
// AddSignature for a peer's signature, and Tick on every new block. Every
// change is persisted before it is acknowledged or broadcast. Every node
// with payments builds one (internal/node/escrow.go).
//
// Locking is the channel Manager's: one lock per escrow (see records).
type EscrowManager struct {
	cfg   Config
	chain Chain
	store EscrowStore
	keys  *Keyring
	fund  Funder
	log   *slog.Logger
	after func(*EscrowRecord)
	now   func() time.Time

	escrows *records[EscrowRecord, struct{}]
}

type escState = row[EscrowRecord, struct{}]

// NewEscrowManager loads the persisted escrows.
func NewEscrowManager(mc EscrowManagerConfig) (*EscrowManager, error) {
	if mc.Chain == nil || mc.Store == nil || mc.Keys == nil {
		return nil, errors.New("escrow manager: chain, store and keys are required")
	}
	if err := mc.Config.Validate(); err != nil {
		return nil, fmt.Errorf("escrow manager: config: %w", err)
	}
	m := &EscrowManager{
		cfg: mc.Config, chain: mc.Chain, store: mc.Store, keys: mc.Keys, fund: mc.Funder,
		log: mc.Log, after: mc.AfterPersist, now: mc.Now, escrows: newRecords[EscrowRecord, struct{}](),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	list, err := m.store.LoadEscrows()
	if err != nil {
		return nil, fmt.Errorf("escrow manager: load escrows: %w", err)
	}
	for _, e := range list {
		m.escrows.load(e.ID, e)
	}
	return m, nil
}

// persist writes next and adopts it only once the store accepted it; a
// failed write changes nothing. es.mu is held.
func (m *EscrowManager) persist(es *escState, next *EscrowRecord) error {
	if es.rec != nil && !es.rec.State.CanMove(next.State) {
		return fmt.Errorf("escrow %s: %w: %s → %s", next.ID, ErrIllegalMove, es.rec.State, next.State)
	}
	next.Updated = m.now().UTC()
	if err := m.store.PutEscrow(next); err != nil {
		return fmt.Errorf("persist escrow %s: %w", next.ID, err)
	}
	m.escrows.adopt(es, next)
	if m.after != nil {
		m.after(next.clone())
	}
	return nil
}

// Escrows returns copies of every escrow, oldest first.
func (m *EscrowManager) Escrows() []*EscrowRecord {
	var out []*EscrowRecord
	m.escrows.each(func(_ string, e *EscrowRecord) { out = append(out, e.clone()) })
	slices.SortFunc(out, func(a, b *EscrowRecord) int { return a.Created.Compare(b.Created) })
	return out
}

// Escrow returns a copy of one escrow.
func (m *EscrowManager) Escrow(id string) (*EscrowRecord, error) {
	e := m.escrows.get(id)
	if e == nil {
		return nil, fmt.Errorf("escrow %s: %w", id, ErrUnknownEscrow)
	}
	return e.clone(), nil
}

// EscrowTerms is what a seller or an arbiter gives the buyer before it
// funds an escrow: a fresh escrow key, its index (echoed in the offer) and,
// for a seller, the script releases pay.
type EscrowTerms struct {
	Key          []byte
	KeyIndex     uint32
	PayoutScript []byte
}

// Terms returns fresh terms for one escrow in role (RoleSeller or
// RoleArbiter).
func (m *EscrowManager) Terms(role Role) (EscrowTerms, error) {
	if role != RoleSeller && role != RoleArbiter {
		return EscrowTerms{}, fmt.Errorf("escrow terms: %w: %s", ErrWrongRole, role)
	}
	idx, err := m.store.NextIndex("escrow_key")
	if err != nil {
		return EscrowTerms{}, fmt.Errorf("escrow terms: key index: %w", err)
	}
	k, err := m.keys.Key(FamilyEscrow, idx)
	if err != nil {
		return EscrowTerms{}, fmt.Errorf("escrow terms: %w", err)
	}
	t := EscrowTerms{Key: k.PubKey().SerializeCompressed(), KeyIndex: idx}
	if role == RoleSeller {
		pi := uint32(0)
		if m.cfg.PayoutXpub != "" {
			if pi, err = m.store.NextIndex("payout"); err != nil {
				return EscrowTerms{}, fmt.Errorf("escrow terms: %w", err)
			}
		}
		if t.PayoutScript, err = m.cfg.PayoutScript(pi); err != nil {
			return EscrowTerms{}, fmt.Errorf("escrow terms: %w", err)
		}
	}
	return t, nil
}

// EscrowParams describes an escrow a buyer funds.
type EscrowParams struct {
	// Peer is the seller's node ID.
	Peer    string
	Seller  EscrowTerms
	Arbiter EscrowTerms
	// Amount is the escrowed value in satoshis.
	Amount int64
	// Delay in blocks from the tip until the arbiter's key counts;
	// 0 = ChannelLifetime.
	Delay int32
	// FeeRate in sat/vB for the funding; 0 = the chain's estimate.
	FeeRate int64
	// Extra are further outputs of the funding transaction (an
	// arbiter's fee).
	Extra []*wire.TxOut
	// BeforePublish, if set, runs once the escrow is persisted and before
	// its funding is broadcast (the market registers it with the
	// arbiter); an error abandons the escrow (Failed) unpublished.
	BeforePublish func(rec *EscrowRecord, offer *EscrowOffer) error
}

// OpenEscrow funds a new escrow: it builds the script, has the wallet fund
// it, persists the escrow (Pending) before broadcasting, and returns the
// offer to send to the seller and the arbiter. Tick until it is Funded.
func (m *EscrowManager) OpenEscrow(ctx context.Context, p EscrowParams) (*EscrowRecord, *EscrowOffer, error) {
	if m.fund == nil {
		return nil, nil, errors.New("open escrow: no wallet configured")
	}
	seller, err := btcec.ParsePubKey(p.Seller.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w: seller key: %v", ErrWrongKey, err)
	}
	arbiter, err := btcec.ParsePubKey(p.Arbiter.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w: arbiter key: %v", ErrWrongKey, err)
	}
	if len(p.Seller.PayoutScript) == 0 || len(p.Seller.PayoutScript) > maxScriptLen {
		return nil, nil, fmt.Errorf("open escrow: %w: seller payout script of %d bytes", ErrWrongScript, len(p.Seller.PayoutScript))
	}
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w", err)
	}
	delay := p.Delay
	if delay == 0 {
		delay = m.cfg.ChannelLifetime
	}
	if delay <= m.cfg.Confirmations {
		return nil, nil, fmt.Errorf("open escrow: delay %d blocks ends before the funding confirms", delay)
	}
	rate := p.FeeRate
	if rate == 0 {
		rate = m.cfg.FeeRate(ctx, m.chain, 6)
	}
	if rate > m.cfg.MaxFeeRate {
		return nil, nil, fmt.Errorf("open escrow: %w: %d sat/vB > max_fee_rate %d", ErrFeeBound, rate, m.cfg.MaxFeeRate)
	}
	idx, err := m.store.NextIndex("escrow_key")
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: key index: %w", err)
	}
	key, err := m.keys.Key(FamilyEscrow, idx)
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w", err)
	}
	refund, err := m.fund.NewScript(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: refund script: %w", err)
	}
	es := &Escrow{Buyer: key.PubKey(), Seller: seller, Arbiter: arbiter, Delay: uint32(tip + delay), Amount: p.Amount}
	pk, err := es.PkScript()
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w", err)
	}
	// The release must be able to pay its fee, should the rate rise, and
	// leave more than dust.
	if floor, fee := EscrowFloor(rate); p.Amount < floor {
		return nil, nil, fmt.Errorf("open escrow: %w: %d sats is below the smallest escrow worth funding at %d sat/vB, %d sats (a release costs about %d sats now, and must still leave the seller more than dust at %d times the rate)",
			ErrNotWorth, p.Amount, rate, floor, fee, EscrowFeeHeadroom)
	}
	tx, err := m.fund.FundTx(ctx, append([]*wire.TxOut{wire.NewTxOut(p.Amount, pk)}, p.Extra...), rate)
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w", err)
	}
	vout := slices.IndexFunc(tx.TxOut, func(o *wire.TxOut) bool { return bytes.Equal(o.PkScript, pk) && o.Value == p.Amount })
	if vout < 0 {
		return nil, nil, fmt.Errorf("open escrow: %w: wallet transaction lacks the escrow output", ErrBadFunding)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return nil, nil, err
	}
	rec := &EscrowRecord{
		ID:   wire.NewOutPoint(ptr(tx.TxHash()), uint32(vout)).String(),
		Role: RoleBuyer, State: EscrowPending, Peer: p.Peer,
		BuyerKey: key.PubKey().SerializeCompressed(), SellerKey: seller.SerializeCompressed(),
		ArbiterKey: arbiter.SerializeCompressed(), KeyIndex: idx, Delay: es.Delay, Amount: p.Amount,
		SellerScript: p.Seller.PayoutScript, BuyerScript: refund, FundingTx: raw.Bytes(),
		OpenHeight: tip, Created: m.now().UTC(),
	}
	st := m.escrows.create(rec.ID)
	if st.rec != nil {
		err = fmt.Errorf("escrow %s exists", rec.ID)
	} else {
		err = m.persist(st, rec)
	}
	st.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("open escrow: %w", err)
	}
	offer := &EscrowOffer{
		BuyerKey: rec.BuyerKey, SellerKey: rec.SellerKey, ArbiterKey: rec.ArbiterKey,
		SellerIndex: p.Seller.KeyIndex, ArbiterIndex: p.Arbiter.KeyIndex, Delay: rec.Delay,
		SellerScript: rec.SellerScript, BuyerScript: rec.BuyerScript, FundingTx: rec.FundingTx, Vout: uint32(vout),
	}
	if p.BeforePublish != nil {
		if err := p.BeforePublish(rec.clone(), offer); err != nil {
			// Never sent: the wallet holds no lease on its inputs.
			if _, aerr := m.Abandon(ctx, rec.ID, "not published: "+err.Error()); aerr != nil {
				m.log.Warn("abandon unpublished escrow", "escrow", rec.ID, "err", aerr)
			}
			return nil, nil, fmt.Errorf("open escrow %s: %w", rec.ID, err)
		}
	}
	if err := m.fund.PublishTx(ctx, tx); err != nil {
		// Kept: Tick rebroadcasts the funding.
		return nil, nil, fmt.Errorf("open escrow %s: %w", rec.ID, err)
	}
	m.log.Info("escrow funded", "escrow", rec.ID, "peer", p.Peer, "amount", p.Amount, "delay", es.Delay)
	return rec.clone(), offer, nil
}

// AcceptEscrow is the seller's or the arbiter's side of an open: the offer
// must name a key of ours (at the index it echoes), pay a seller's releases
// to our payout script, leave the delay ahead of the tip, and be funded by
// the transaction it carries. The escrow is persisted Pending. Accepting the
// same escrow again returns it unchanged.
func (m *EscrowManager) AcceptEscrow(ctx context.Context, peer string, msg []byte) (*EscrowRecord, error) {
	return m.AcceptEscrowWithin(ctx, peer, msg, 0, 0)
}

// AcceptEscrowWithin is AcceptEscrow refusing, before anything is
// persisted, an escrow whose delay is not between minDelay and maxDelay
// blocks ahead of our tip (0: no such bound; the delay must always be
// beyond the funding's confirmations).
func (m *EscrowManager) AcceptEscrowWithin(ctx context.Context, peer string, msg []byte, minDelay, maxDelay int32) (*EscrowRecord, error) {
	o, err := DecodeEscrowOffer(msg)
	if err != nil {
		return nil, err
	}
	role, idx := Role(0), uint32(0)
	for _, c := range []struct {
		r   Role
		key []byte
		idx uint32
	}{{RoleSeller, o.SellerKey, o.SellerIndex}, {RoleArbiter, o.ArbiterKey, o.ArbiterIndex}} {
		if c.idx >= 1<<31 {
			continue
		}
		if k, err := m.keys.Key(FamilyEscrow, c.idx); err == nil && bytes.Equal(k.PubKey().SerializeCompressed(), c.key) {
			role, idx = c.r, c.idx
			break
		}
	}
	if role == 0 {
		return nil, fmt.Errorf("accept escrow: %w: names none of our escrow keys", ErrWrongKey)
	}
	// Only the payout check needs the channel Manager's view of config.
	if role == RoleSeller && !(&Manager{cfg: m.cfg}).ownPayoutScript(o.SellerScript) {
		return nil, fmt.Errorf("accept escrow: %w: releases would not pay our payout address", ErrWrongScript)
	}
	if len(o.BuyerScript) == 0 || len(o.SellerScript) == 0 {
		return nil, fmt.Errorf("accept escrow: %w: empty payout script", ErrMalformed)
	}
	var keys [3]*btcec.PublicKey
	for i, raw := range [][]byte{o.BuyerKey, o.SellerKey, o.ArbiterKey} {
		if keys[i], err = btcec.ParsePubKey(raw); err != nil {
			return nil, fmt.Errorf("accept escrow: %w: %v", ErrWrongKey, err)
		}
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(o.FundingTx)); err != nil {
		return nil, fmt.Errorf("accept escrow: %w: funding tx: %v", ErrMalformed, err)
	}
	if int(o.Vout) >= len(tx.TxOut) {
		return nil, fmt.Errorf("accept escrow: %w: no output %d", ErrBadFunding, o.Vout)
	}
	es := &Escrow{Buyer: keys[0], Seller: keys[1], Arbiter: keys[2], Delay: o.Delay, Amount: tx.TxOut[o.Vout].Value}
	pk, err := es.PkScript()
	if err != nil {
		return nil, fmt.Errorf("accept escrow: %w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(tx.TxOut[o.Vout].PkScript, pk) {
		return nil, fmt.Errorf("accept escrow: %w: output %d does not pay the escrow script", ErrBadFunding, o.Vout)
	}
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept escrow: %w", err)
	}
	if int64(o.Delay) <= int64(tip)+int64(m.cfg.Confirmations) {
		return nil, fmt.Errorf("accept escrow: %w: delay %d, tip %d", ErrTooLate, o.Delay, tip)
	}
	switch blocks := int64(o.Delay) - int64(tip); {
	case minDelay > 0 && blocks < int64(minDelay):
		return nil, fmt.Errorf("accept escrow: %w: the arbiter's key would count in %d blocks (at %d), before the %d the job needs to end and be released", ErrEscrowDelay, blocks, o.Delay, minDelay)
	case maxDelay > 0 && blocks > int64(maxDelay):
		return nil, fmt.Errorf("accept escrow: %w: the arbiter's key would count only in %d blocks (at %d), beyond this node's %d (arbiter.max_delay)", ErrEscrowDelay, blocks, o.Delay, maxDelay)
	}
	rec := &EscrowRecord{
		ID:   wire.NewOutPoint(ptr(tx.TxHash()), o.Vout).String(),
		Role: role, State: EscrowPending, Peer: peer,
		BuyerKey: bytes.Clone(o.BuyerKey), SellerKey: bytes.Clone(o.SellerKey), ArbiterKey: bytes.Clone(o.ArbiterKey),
		KeyIndex: idx, Delay: o.Delay, Amount: es.Amount,
		SellerScript: o.SellerScript, BuyerScript: o.BuyerScript, FundingTx: o.FundingTx,
		OpenHeight: tip, Created: m.now().UTC(),
	}
	st := m.escrows.create(rec.ID)
	defer st.mu.Unlock()
	if st.rec != nil {
		return st.rec.clone(), nil
	}
	if err := m.persist(st, rec); err != nil {
		return nil, fmt.Errorf("accept escrow: %w", err)
	}
	m.log.Info("escrow accepted", "escrow", rec.ID, "peer", peer, "role", role.String(), "amount", rec.Amount)
	return rec.clone(), nil
}

// Release is buyer or seller settling the escrow to the seller through the
// cooperative branch. Without the other party's signature it signs,
// persists its signature and returns it to send (tx nil); with it, it
// completes the transaction, checks it with the script engine and the fee
// bounds, persists it (Releasing) and broadcasts it. Repeating a Release
// that was broadcast rebroadcasts.
func (m *EscrowManager) Release(ctx context.Context, id string) (*EscrowSig, *wire.MsgTx, error) {
	return m.settle(ctx, id, SpendRelease)
}

// Refund is Release paying the buyer instead (state Refunding).
func (m *EscrowManager) Refund(ctx context.Context, id string) (*EscrowSig, *wire.MsgTx, error) {
	return m.settle(ctx, id, SpendRefund)
}

// Arbitrate is the arbiter's decision, or a party's consent to it: the
// arbiter's branch paying the seller (toSeller) or the buyer, signed like
// Release. It completes only once the tip has reached the delay
// (ErrNotExpired before); signing ahead of it is allowed. The escrow moves
// to Disputed, and to Arbitrated when the payout confirms.
func (m *EscrowManager) Arbitrate(ctx context.Context, id string, toSeller bool) (*EscrowSig, *wire.MsgTx, error) {
	if toSeller {
		return m.settle(ctx, id, SpendPayoutSeller)
	}
	return m.settle(ctx, id, SpendPayoutBuyer)
}

// spendFee is the fee of rec's spend of kind at the chain's rate now (the
// fee the first signer signs).
func (m *EscrowManager) spendFee(ctx context.Context, rec *EscrowRecord, e *Escrow, kind SpendKind) (int64, error) {
	to := rec.BuyerScript
	if kind.toSeller() {
		to = rec.SellerScript
	}
	vs, err := e.SpendVSize(to)
	if err != nil {
		return 0, err
	}
	if kind == SpendPayoutSplit || kind == SpendRelease && releaseSplits(rec.Amount, rec.Release, rec.BuyerScript) {
		vs += int64(8 + 1 + len(rec.BuyerScript)) // the second output
	}
	fee := m.cfg.FeeRate(ctx, m.chain, 6) * vs
	if err := m.cfg.checkFee(fee, vs); err != nil {
		return 0, err
	}
	return fee, nil
}

func (m *EscrowManager) settle(ctx context.Context, id string, kind SpendKind) (*EscrowSig, *wire.MsgTx, error) {
	es, rec := m.escrows.lock(id)
	if es == nil {
		return nil, nil, fmt.Errorf("%s escrow %s: %w", kind, id, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	fail := func(err error) (*EscrowSig, *wire.MsgTx, error) {
		return nil, nil, fmt.Errorf("%s escrow %s: %w", kind, id, err)
	}
	if !mayAuthorize(rec.Role, kind) {
		return fail(fmt.Errorf("%w: %s cannot sign it", ErrWrongRole, rec.Role))
	}
	if rec.SpendKind == kind && len(rec.SpendTx) > 0 && !rec.State.Final() {
		tx, err := m.rebroadcast(ctx, rec)
		if err != nil {
			return fail(err)
		}
		own, _ := rec.sig(kind, rec.ourKey())
		return m.sigMsg(rec, own), tx, nil
	}
	if (rec.State != EscrowFunded && rec.State != EscrowDisputed) || rec.SpendTxid != "" {
		return fail(fmt.Errorf("%w (state %s)", ErrEscrowState, rec.State))
	}
	e, err := rec.Escrow()
	if err != nil {
		return fail(err)
	}
	peer, havePeer := rec.peerSig(kind)
	if havePeer && kind.Arbitrated() {
		tip, err := m.chain.Tip(ctx)
		if err != nil {
			return fail(err)
		}
		if int64(tip) < int64(rec.Delay) {
			return fail(fmt.Errorf("%w: tip %d < delay %d", ErrNotExpired, tip, rec.Delay))
		}
	}
	fee := peer.Fee
	if !havePeer {
		if fee, err = m.spendFee(ctx, rec, e, kind); err != nil {
			return fail(err)
		}
	}
	tx, err := rec.BuildSpend(kind, fee)
	if err != nil {
		return fail(err)
	}
	own, ok := rec.sig(kind, rec.ourKey())
	if !ok || own.Fee != fee {
		key, err := m.keys.Key(FamilyEscrow, rec.KeyIndex)
		if err != nil {
			return fail(err)
		}
		ks, err := e.Sign(tx, key)
		if err != nil {
			return fail(err)
		}
		own = EscrowSigRecord{Kind: kind, Fee: fee, Key: rec.ourKey(), Sig: ks.Sig}
	}
	next := rec.clone()
	next.addSig(own)
	if kind.Arbitrated() {
		if err := next.move(EscrowDisputed); err != nil {
			return fail(err)
		}
	}
	if !havePeer {
		if err := m.persist(es, next); err != nil {
			return fail(err)
		}
		m.log.Info("escrow spend signed", "escrow", id, "kind", kind.String(), "fee", fee)
		return m.sigMsg(next, own), nil, nil
	}
	pub, err := btcec.ParsePubKey(peer.Key)
	if err != nil {
		return fail(err)
	}
	ownPub, _ := btcec.ParsePubKey(own.Key)
	if err := e.Finalize(&m.cfg, tx, kind.Arbitrated(), KeySig{Key: ownPub, Sig: own.Sig}, KeySig{Key: pub, Sig: peer.Sig}); err != nil {
		return fail(err)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return fail(err)
	}
	next.SpendKind, next.SpendTx, next.SpendTxid = kind, raw.Bytes(), tx.TxHash().String()
	next.Paid = next.paidBy(tx)
	if err := next.move(kind.state()); err != nil {
		return fail(err)
	}
	// Persisted before it is sent: a crash in between rebroadcasts from Tick.
	if err := m.persist(es, next); err != nil {
		return fail(err)
	}
	if err := m.chain.Broadcast(ctx, tx); err != nil {
		return fail(err)
	}
	m.log.Info("escrow spend broadcast", "escrow", id, "kind", kind.String(), "txid", next.SpendTxid, "fee", fee)
	return m.sigMsg(next, own), tx, nil
}

func (m *EscrowManager) sigMsg(rec *EscrowRecord, s EscrowSigRecord) *EscrowSig {
	op, _ := wire.NewOutPointFromString(rec.ID)
	if op == nil {
		op = &wire.OutPoint{}
	}
	return &EscrowSig{EscrowID: *op, Kind: s.Kind, Fee: s.Fee, Key: bytes.Clone(s.Key), Sig: bytes.Clone(s.Sig)}
}

func (m *EscrowManager) rebroadcast(ctx context.Context, rec *EscrowRecord) (*wire.MsgTx, error) {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(rec.SpendTx)); err != nil {
		return nil, fmt.Errorf("stored spend of %s: %w", rec.ID, err)
	}
	if err := m.chain.Broadcast(ctx, &tx); err != nil {
		return nil, fmt.Errorf("rebroadcast spend of %s: %w", rec.ID, err)
	}
	return &tx, nil
}

// AddSignature takes a peer's signature of one spend: the signer must be a
// party whose key counts on that branch, the fee within our bounds, and the
// signature must verify against the spend rebuilt from our record. It is
// persisted before AddSignature returns (the acknowledgement); any refusal
// names its reason and changes nothing. A peer's signed arbitrated payout
// moves a Funded escrow to Disputed. The same signature twice is accepted
// twice.
func (m *EscrowManager) AddSignature(ctx context.Context, peer string, msg []byte) (*EscrowRecord, error) {
	s, err := DecodeEscrowSig(msg)
	if err != nil {
		return nil, err
	}
	id := s.EscrowID.String()
	es, rec := m.escrows.lock(id)
	if es == nil {
		return nil, fmt.Errorf("escrow signature for %s from %s: %w", id, peer, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	fail := func(err error) (*EscrowRecord, error) {
		return nil, fmt.Errorf("escrow signature for %s from %s: %w", id, peer, err)
	}
	signer := rec.keyRole(s.Key)
	if signer == 0 || signer == rec.Role || !mayAuthorize(signer, s.Kind) {
		return fail(fmt.Errorf("%w: key cannot sign a %s", ErrWrongKey, s.Kind))
	}
	if held, ok := rec.sig(s.Kind, s.Key); ok && held.Fee == s.Fee && bytes.Equal(held.Sig, s.Sig) {
		return rec.clone(), nil // a resend of what we hold
	}
	switch rec.State {
	case EscrowPending, EscrowFunded, EscrowDisputed:
	default:
		return fail(fmt.Errorf("%w (state %s)", ErrEscrowState, rec.State))
	}
	if rec.SpendTxid != "" {
		return fail(fmt.Errorf("%w: already spent by %s", ErrEscrowState, rec.SpendTxid))
	}
	e, err := rec.Escrow()
	if err != nil {
		return fail(err)
	}
	tx, err := rec.BuildSpend(s.Kind, s.Fee)
	if err != nil {
		return fail(err)
	}
	if err := m.cfg.checkFee(s.Fee, VSize(tx)+escrowWitnessVBytes); err != nil {
		return fail(err)
	}
	if err := verifyEscrowSig(e, tx, s.Key, s.Sig); err != nil {
		return fail(err)
	}
	next := rec.clone()
	next.addSig(EscrowSigRecord{Kind: s.Kind, Fee: s.Fee, Key: s.Key, Sig: s.Sig})
	if s.Kind.Arbitrated() && next.State == EscrowFunded {
		if err := next.move(EscrowDisputed); err != nil {
			return fail(err)
		}
	}
	if err := m.persist(es, next); err != nil {
		return fail(err)
	}
	m.log.Info("escrow signature accepted", "escrow", id, "peer", peer, "kind", s.Kind.String(), "signer", signer.String())
	return next.clone(), nil
}

// escrowWitnessVBytes bounds the witness an unsigned escrow spend lacks, so
// the fee-rate check of a peer's signature errs towards accepting it (the
// completed transaction is checked exactly before it is sent).
const escrowWitnessVBytes = (1 + 1 + 2*(1+maxSigLen) + 2 + 1 + 150 + 3) / 4

// verifyEscrowSig checks sig (DER plus SIGHASH_ALL) by key over input 0 of
// tx, which spends e.
func verifyEscrowSig(e *Escrow, tx *wire.MsgTx, key, sig []byte) error {
	pub, err := btcec.ParsePubKey(key)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrWrongKey, err)
	}
	ws, err := e.Script()
	if err != nil {
		return err
	}
	pk, _ := P2WSH(ws)
	fetcher := txscript.NewCannedPrevOutputFetcher(pk, e.Amount)
	digest, err := txscript.CalcWitnessSigHash(ws, txscript.NewTxSigHashes(tx, fetcher), txscript.SigHashAll, tx, 0, e.Amount)
	if err != nil {
		return fmt.Errorf("escrow sighash: %w", err)
	}
	if err := verifySigAll(pub, digest, sig); err != nil {
		return fmt.Errorf("%w: escrow spend: %v", ErrBadSignature, err)
	}
	return nil
}

// Dispute marks a funded escrow disputed (buyer, seller or arbiter, when
// told of the dispute): from then on the arbiter's branch may be signed.
// Disputing a disputed escrow succeeds.
func (m *EscrowManager) Dispute(ctx context.Context, id, reason string) (*EscrowRecord, error) {
	return m.change(id, "dispute", func(e *EscrowRecord) error {
		if e.State == EscrowDisputed {
			return nil
		}
		e.FailReason = reason
		return e.move(EscrowDisputed)
	})
}

// Abandon gives up a pending escrow whose funding will never confirm (its
// inputs spent elsewhere, the offer refused), with the reason: Failed.
func (m *EscrowManager) Abandon(ctx context.Context, id, reason string) (*EscrowRecord, error) {
	return m.change(id, "abandon", func(e *EscrowRecord) error {
		e.FailReason = reason
		return e.move(EscrowFailed)
	})
}

// change applies f to a clone of escrow id and persists the result.
func (m *EscrowManager) change(id, what string, f func(*EscrowRecord) error) (*EscrowRecord, error) {
	es, rec := m.escrows.lock(id)
	if es == nil {
		return nil, fmt.Errorf("%s escrow %s: %w", what, id, ErrUnknownEscrow)
	}
	defer es.mu.Unlock()
	next := rec.clone()
	if err := f(next); err != nil {
		return nil, fmt.Errorf("%s escrow %s: %w", what, id, err)
	}
	if next.State == rec.State && next.FailReason == rec.FailReason && next.SpendTxid == rec.SpendTxid {
		return rec.clone(), nil
	}
	old := rec.State
	if err := m.persist(es, next); err != nil {
		return nil, fmt.Errorf("%s escrow %s: %w", what, id, err)
	}
	if old != next.State {
		m.log.Info("escrow "+what, "escrow", id, "from", old.String(), "to", next.State.String())
	}
	return next.clone(), nil
}

// Tick advances every escrow against the chain: funding confirmations (and
// reorgs that undo them), spends of the escrow output by anyone (classified
// by branch and payee), rebroadcasts of our spend, and final confirmation.
// Every step is idempotent and persisted, so Tick after a crash picks up
// where it was. Call it on every new block.
func (m *EscrowManager) Tick(ctx context.Context) error {
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return fmt.Errorf("escrow tick: %w", err)
	}
	var ids []string
	m.escrows.each(func(id string, e *EscrowRecord) {
		if !e.State.Final() {
			ids = append(ids, id)
		}
	})
	var errs []error
	for _, id := range ids {
		for range 5 {
			before := m.escrows.get(id)
			if err := m.step(ctx, id, tip); err != nil {
				m.log.Warn("escrow step", "escrow", id, "err", err)
				errs = append(errs, err)
				break
			}
			if m.escrows.get(id) == before {
				break
			}
		}
	}
	return errors.Join(errs...)
}

func (m *EscrowManager) step(ctx context.Context, id string, tip int32) error {
	e := m.escrows.get(id)
	if e.State.Final() {
		return nil
	}
	n := m.cfg.Confirmations
	op, err := wire.NewOutPointFromString(e.ID)
	if err != nil {
		return fmt.Errorf("escrow id %q: %w", e.ID, err)
	}
	setState := func(s EscrowState, why string) error {
		_, err := m.change(id, why, func(r *EscrowRecord) error { return r.move(s) })
		return err
	}
	switch {
	case e.State == EscrowPending:
		confs, err := TxConfirmations(ctx, m.chain, op.Hash, escrowScript(e, *op), e.OpenHeight-6)
		if err != nil {
			return err
		}
		if confs < 0 {
			var tx wire.MsgTx
			if err := tx.Deserialize(bytes.NewReader(e.FundingTx)); err == nil {
				if err := m.chain.Broadcast(ctx, &tx); err != nil {
					m.log.Warn("escrow funding rebroadcast refused", "escrow", id, "err", err)
				}
			}
			return nil
		}
		if confs >= n {
			return setState(EscrowFunded, "funding confirmed")
		}
	case e.SpendTxid == "" && (e.State == EscrowFunded || e.State == EscrowDisputed):
		if e.State == EscrowFunded {
			confs, err := TxConfirmations(ctx, m.chain, op.Hash, escrowScript(e, *op), e.OpenHeight-6)
			if err != nil {
				return err
			}
			if confs < n {
				return setState(EscrowPending, "funding lost confirmations (reorg)")
			}
		}
		return m.checkSpent(ctx, e, *op)
	case e.SpendTxid != "":
		h, err := chainHash(e.SpendTxid)
		if err != nil {
			return err
		}
		confs, err := TxConfirmations(ctx, m.chain, h, escrowScript(e, *op), e.OpenHeight-6)
		if err != nil {
			return err
		}
		if confs >= n {
			final := map[EscrowState]EscrowState{
				EscrowReleasing: EscrowReleased, EscrowRefunding: EscrowRefunded, EscrowDisputed: EscrowArbitrated,
			}[e.State]
			if final == 0 {
				return fmt.Errorf("escrow %s: %w: spend confirmed in state %s", id, ErrIllegalMove, e.State)
			}
			return setState(final, "spend confirmed")
		}
		if confs < 0 {
			// Ours: rebroadcast. Theirs, or ours refused: look again
			// (a reorg may have put another spend in its place).
			if len(e.SpendTx) > 0 {
				if _, err := m.rebroadcast(ctx, e); err == nil {
					return nil
				}
			}
			return m.checkSpent(ctx, e, *op)
		}
	}
	return nil
}

// checkSpent looks for a spend of the escrow output and records it, with
// the state its branch and payee mean.
func (m *EscrowManager) checkSpent(ctx context.Context, e *EscrowRecord, op wire.OutPoint) error {
	spend, err := SpendOfScript(ctx, m.chain, op, escrowScript(e, op), e.OpenHeight-6)
	if err != nil || spend == nil {
		return err
	}
	txid := spend.TxHash().String()
	if e.SpendTxid == txid {
		return nil
	}
	kind, ok := e.classifySpend(spend, op)
	if !ok {
		return fmt.Errorf("escrow %s: spend %s has an unknown witness", e.ID, txid)
	}
	_, err = m.change(e.ID, "output spent by "+txid+" ("+kind.String()+")", func(r *EscrowRecord) error {
		if r.SpendTxid == txid {
			return nil
		}
		if len(r.SpendTx) > 0 {
			var own wire.MsgTx
			if own.Deserialize(bytes.NewReader(r.SpendTx)) != nil || own.TxHash().String() != txid {
				r.SpendTx = nil // ours lost to another spend
			}
		}
		r.SpendKind, r.SpendTxid = kind, txid
		r.Paid = r.paidBy(spend)
		return r.move(kind.state())
	})
	return err
}
