package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// ChannelStore persists channel records. PutChannel must be durable
// (fsynced) when it returns nil: the Manager acknowledges nothing before
// that, and adopts a change in memory only after it. The Manager calls
// PutChannel concurrently for different channels (a store may let them
// share a commit), never twice at once for the same channel.
type ChannelStore interface {
	PutChannel(c *Channel) error
	LoadChannels() ([]*Channel, error)
	// NextIndex returns the next value (0 first) of the durable counter
	// name; a value is never handed out twice.
	NextIndex(name string) (uint32, error)
}

// Funder is the buyer's wallet as the channel code sees it.
type Funder interface {
	// FundTx returns a signed, unbroadcast transaction paying outs plus
	// change back to the wallet at about feeRate sat/vB; it refuses a fee
	// above the configured bounds.
	FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error)
	// NewScript returns a fresh output script of the wallet (refunds and
	// change of the buyer go there).
	NewScript(ctx context.Context) ([]byte, error)
	// PublishTx broadcasts a transaction FundTx made, recording it in the
	// wallet (so its inputs are spent and its change is known at once).
	PublishTx(ctx context.Context, tx *wire.MsgTx) error
}

// ManagerConfig is what a Manager is built from.
type ManagerConfig struct {
	Config Config
	// Chain answers every chain question; required.
	Chain Chain
	// Store persists every change before it is acknowledged; required.
	Store ChannelStore
	// Keys derives our channel keys; required.
	Keys *Keyring
	// Funder funds channels we buy through; nil on a node that only sells.
	Funder Funder
	Log    *slog.Logger
	// AfterPersist, if set, runs after an accepted update is durable and
	// before it is acknowledged (a crash test stops the process there).
	AfterPersist func(c *Channel)
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Signer signs the seller's CPFP child of a close (bump.go); nil: a
	// close is not bumped.
	Signer OutputSigner
	// Coins lends wallet coins to a CPFP child whose parent output is too
	// small to pay it (bump.go); nil: such a close is not bumped.
	Coins CoinSource
	// OnFail, if set, is told of every channel that failed (its funding
	// double-spent or never confirmed, fundwatch.go), after it is
	// persisted; it must not block.
	OnFail func(c *Channel)
	// HoldScanFrom, if set, is the height from which the chain is scanned
	// once per seed for outputs waiting at hold keys that no record holds
	// (a restore from the seed alone, holdscan.go): the wallet's birthday.
	HoldScanFrom func(ctx context.Context) (int32, error)
	// NewSeed: the seed was made at this start, so no output can wait at
	// its hold keys: the scan is recorded as done without reading blocks
	// (from a fresh wallet's birthday that was a day or more of blocks,
	// fetched whole through btcd's RPC, at every new node's start).
	NewSeed bool
}

// Manager runs the node's payment channels, as buyer and as seller. It is
// the API the contract code calls: OpenChannel / AcceptOpen, Pay /
// AcceptUpdate, Close, Refund, and Tick on every new block.
type Manager struct {
	cfg   Config
	chain Chain
	store ChannelStore
	keys  *Keyring
	fund  Funder
	log   *slog.Logger
	after func(*Channel)
	now   func() time.Time
	// signer and onFail: see ManagerConfig.
	signer OutputSigner
	coins  CoinSource
	onFail func(*Channel)

	// chans holds the channels, one lock each (see records). mu guards
	// only tip and changed.
	chans *records[Channel, chanCache]
	mu    sync.Mutex
	tip   int32
	// changed is closed (and cleared) when a channel change is persisted;
	// nil while nobody waits (see changes).
	changed chan struct{}
	// warned holds the channels the close policy warned are unclaimable.
	warned map[string]bool
	// payout caches the payout xpub's children (payoutxpub.go).
	payout payoutChildren
	// zc holds the contracts admitted on unconfirmed fundings (zeroconf.go).
	zc zeroConf
	// capacity holds the seller's reservations of its channels' capacity
	// by running contracts (reserve.go).
	capacity book
	// holdFrom and holdScan: the hold-key scan (holdscan.go).
	holdFrom func(ctx context.Context) (int32, error)
	holdScan holdScanState
}

// chanState is one channel as the Manager holds it.
type chanState = row[Channel, chanCache]

// chanCache is what a channel's row caches (its lock held).
type chanCache struct {
	// ws and pk are the witness and P2WSH output scripts: parsing the two
	// keys costs more than hashing a payment.
	ws, pk []byte
	// sellerPub is our seller public key, compressed: deriving it from the
	// private key is a point multiplication.
	sellerPub []byte
	// buyerPub is the buyer's key, parsed once the script engine has
	// accepted an update of the channel (closeTx): later updates are
	// checked by verifySigAll.
	buyerPub *btcec.PublicKey
}

// scriptOf returns the channel's witness script and P2WSH output script
// (the row's lock held).
func (cs *chanCache) scriptOf(c *Channel) (ws, pk []byte, err error) {
	if cs.ws != nil {
		return cs.ws, cs.pk, nil
	}
	if ws, err = c.Script(); err != nil {
		return nil, nil, err
	}
	if pk, err = P2WSH(ws); err != nil {
		return nil, nil, err
	}
	cs.ws, cs.pk = ws, pk
	return ws, pk, nil
}

// NewManager loads the persisted channels.
func NewManager(mc ManagerConfig) (*Manager, error) {
	if mc.Chain == nil || mc.Store == nil || mc.Keys == nil {
		return nil, errors.New("payment manager: chain, store and keys are required")
	}
	if err := mc.Config.Validate(); err != nil {
		return nil, fmt.Errorf("payment manager: config: %w", err)
	}
	m := &Manager{
		cfg: mc.Config, chain: mc.Chain, store: mc.Store, keys: mc.Keys, fund: mc.Funder,
		log: mc.Log, after: mc.AfterPersist, now: mc.Now, chans: newRecords[Channel, chanCache](),
		signer: mc.Signer, coins: mc.Coins, onFail: mc.OnFail, holdFrom: mc.HoldScanFrom,
	}
	m.holdScan.newSeed.Store(mc.NewSeed)
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	list, err := m.store.LoadChannels()
	if err != nil {
		return nil, fmt.Errorf("payment manager: load channels: %w", err)
	}
	for _, c := range list {
		m.chans.load(c.ID, c)
	}
	return m, nil
}

// persist writes next to the store and adopts it only when that succeeded,
// so a failed write leaves the in-memory state as it was. cs.mu is held:
// the store write runs outside the table lock, so writes of different channels
// overlap (and share an fsync in a store that batches).
func (m *Manager) persist(cs *chanState, next *Channel) error {
	next.Updated = m.now().UTC()
	if err := m.store.PutChannel(next); err != nil {
		return fmt.Errorf("persist channel %s: %w", next.ID, err)
	}
	m.chans.adopt(cs, next)
	m.notify()
	return nil
}

// Channels returns copies of every channel, oldest first.
func (m *Manager) Channels() []*Channel {
	var out []*Channel
	m.chans.each(func(_ string, c *Channel) { out = append(out, c.clone()) })
	slices.SortFunc(out, func(a, b *Channel) int { return a.Created.Compare(b.Created) })
	return out
}

// Channel returns a copy of one channel.
func (m *Manager) Channel(id string) (*Channel, error) {
	c := m.chans.get(id)
	if c == nil {
		return nil, fmt.Errorf("channel %s: %w", id, ErrUnknownChannel)
	}
	return c.clone(), nil
}

// SellerKey is the node's payment key, published in its offers.
func (m *Manager) SellerKey() (*btcec.PrivateKey, error) {
	return m.keys.Key(FamilySeller, 0)
}

// SellerTerms is what a seller gives a buyer before the buyer funds a
// channel: the seller's payment key and the script its closes pay.
type SellerTerms struct {
	Key          []byte
	PayoutScript []byte
}

// SellerTerms returns this node's terms as a seller.
func (m *Manager) SellerTerms() (SellerTerms, error) {
	k, err := m.SellerKey()
	if err != nil {
		return SellerTerms{}, err
	}
	if m.sweeping() {
		// Closes pay a key of ours; a sweep forwards them (sweep.go).
		s, err := m.holdScript(m.nextHold())
		if err != nil {
			return SellerTerms{}, fmt.Errorf("seller terms: %w", err)
		}
		return SellerTerms{Key: k.PubKey().SerializeCompressed(), PayoutScript: s}, nil
	}
	idx := uint32(0)
	if m.cfg.PayoutXpub != "" {
		if idx, err = m.payoutIndex(); err != nil {
			return SellerTerms{}, fmt.Errorf("seller terms: %w", err)
		}
	}
	s, err := m.cfg.PayoutScript(idx)
	if err != nil {
		return SellerTerms{}, fmt.Errorf("seller terms: %w", err)
	}
	return SellerTerms{Key: k.PubKey().SerializeCompressed(), PayoutScript: s}, nil
}

// ownsKey reports whether pub (compressed) is one of this node's payment
// keys: its seller key, its published buyer key, or the buyer key of any
// channel it funded.
func (m *Manager) ownsKey(pub []byte) bool {
	for _, k := range []struct {
		f KeyFamily
		i uint32
	}{{FamilySeller, 0}, {FamilyChannelBuyer, 0}} {
		if own, err := m.keys.Key(k.f, k.i); err == nil && bytes.Equal(own.PubKey().SerializeCompressed(), pub) {
			return true
		}
	}
	owned := false
	m.chans.each(func(_ string, c *Channel) {
		if c.Role == RoleBuyer && bytes.Equal(c.BuyerKey, pub) {
			owned = true
		}
	})
	return owned
}

// ownPayoutScript reports whether s is a script our closes may pay.
func (m *Manager) ownPayoutScript(s []byte) bool {
	if m.cfg.PayoutAddress != "" {
		own, err := m.cfg.PayoutScript(0)
		return err == nil && bytes.Equal(own, s)
	}
	return m.ownXpubScript(s)
}

// OpenParams describes a channel a buyer opens.
type OpenParams struct {
	// Peer is the seller's node ID.
	Peer   string
	Seller SellerTerms
	// Capacity is how much the channel can ever pay, in satoshis.
	Capacity int64
	// Lifetime in blocks until the buyer may refund; 0 = ChannelLifetime.
	Lifetime int32
	// FeeRate in sat/vB for funding and close; 0 = the chain's estimate.
	FeeRate int64
}

// OpenChannel funds a new channel to a seller: it builds the script, has the
// wallet fund it, persists the channel (Pending) before broadcasting, and
// returns the request to send to the seller. Call Tick until it is Open.
func (m *Manager) OpenChannel(ctx context.Context, p OpenParams) (*Channel, *OpenRequest, error) {
	if m.fund == nil {
		return nil, nil, errors.New("open channel: no wallet configured")
	}
	seller, err := btcec.ParsePubKey(p.Seller.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: seller key: %w", err)
	}
	if len(p.Seller.PayoutScript) == 0 || len(p.Seller.PayoutScript) > maxScriptLen {
		return nil, nil, fmt.Errorf("open channel: %w: seller payout script of %d bytes", ErrWrongScript, len(p.Seller.PayoutScript))
	}
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	life := p.Lifetime
	if life == 0 {
		life = m.cfg.ChannelLifetime
	}
	if life <= m.cfg.SafetyMargin+m.cfg.Confirmations {
		return nil, nil, fmt.Errorf("open channel: lifetime %d blocks leaves no time after confirmations and safety margin", life)
	}
	rate := p.FeeRate
	if rate == 0 {
		rate = m.cfg.FeeRate(ctx, m.chain, 6)
	}
	if rate > m.cfg.MaxFeeRate {
		return nil, nil, fmt.Errorf("open channel: %w: %d sat/vB > max_fee_rate %d", ErrFeeBound, rate, m.cfg.MaxFeeRate)
	}
	idx, err := m.store.NextIndex("buyer_key")
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: key index: %w", err)
	}
	key, err := m.keys.Key(FamilyChannelBuyer, idx)
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	refund, err := m.fund.NewScript(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: refund script: %w", err)
	}
	expiry := uint32(tip + life)
	ws, err := ChannelScript(seller, key.PubKey(), expiry)
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	pk, err := P2WSH(ws)
	if err != nil {
		return nil, nil, err
	}
	vs := closeVSize(ws, p.Seller.PayoutScript, refund)
	closeFee := rate * vs
	if err := m.cfg.checkFee(closeFee, vs); err != nil {
		return nil, nil, fmt.Errorf("open channel: close fee: %w", err)
	}
	if p.Capacity < closeFee+DustP2WSH || IsDust(pk, p.Capacity) {
		return nil, nil, fmt.Errorf("open channel: capacity %d too small for close fee %d", p.Capacity, closeFee)
	}
	tx, err := m.fund.FundTx(ctx, []*wire.TxOut{wire.NewTxOut(p.Capacity, pk)}, rate)
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	vout := -1
	for i, o := range tx.TxOut {
		if bytes.Equal(o.PkScript, pk) && o.Value == p.Capacity {
			vout = i
		}
	}
	if vout < 0 {
		return nil, nil, fmt.Errorf("open channel: %w: wallet transaction lacks the channel output", ErrBadFunding)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return nil, nil, err
	}
	now := m.now().UTC()
	c := &Channel{
		ID:   wire.NewOutPoint(ptr(tx.TxHash()), uint32(vout)).String(),
		Role: RoleBuyer, State: StatePending, Peer: p.Peer,
		BuyerKey: key.PubKey().SerializeCompressed(), SellerKey: seller.SerializeCompressed(),
		KeyIndex: idx, Expiry: expiry, Capacity: p.Capacity, CloseFee: closeFee,
		SellerScript: p.Seller.PayoutScript, BuyerScript: refund,
		FundingTx: raw.Bytes(), Vout: uint32(vout), OpenHeight: tip, PendingSince: tip, Created: now,
		Contracts: map[string]int64{},
	}
	cs := m.chans.create(c.ID)
	if cs.rec != nil {
		err = fmt.Errorf("channel %s exists", c.ID)
	} else {
		err = m.persist(cs, c)
	}
	cs.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	if err := m.fund.PublishTx(ctx, tx); err != nil {
		// The record is kept: Tick rebroadcasts, and the refund path
		// stays available if the funding ever confirms.
		return nil, nil, fmt.Errorf("open channel %s: %w", c.ID, err)
	}
	m.log.Info("channel funded", "channel", c.ID, "peer", p.Peer, "capacity", p.Capacity, "expiry", expiry)
	return c.clone(), &OpenRequest{
		BuyerKey: c.BuyerKey, SellerKey: c.SellerKey, Expiry: expiry, CloseFee: closeFee,
		SellerScript: c.SellerScript, BuyerScript: c.BuyerScript, FundingTx: c.FundingTx, Vout: c.Vout,
	}, nil
}

func ptr[T any](v T) *T { return &v }

// AcceptOpen is the seller's side of an open: it checks that the channel pays
// our key and payout script, expires late enough, prices its close within our
// fee bounds and is funded by the given transaction, then persists it as
// Pending. Accepting the same channel again returns it unchanged.
func (m *Manager) AcceptOpen(ctx context.Context, peer string, msg []byte) (*Channel, error) {
	o, err := DecodeOpenRequest(msg)
	if err != nil {
		return nil, err
	}
	own, err := m.SellerKey()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(o.SellerKey, own.PubKey().SerializeCompressed()) {
		return nil, fmt.Errorf("accept open: %w: channel is not for our payment key", ErrWrongKey)
	}
	buyer, err := btcec.ParsePubKey(o.BuyerKey)
	if err != nil {
		return nil, fmt.Errorf("accept open: %w: buyer key: %v", ErrWrongKey, err)
	}
	if m.ownsKey(buyer.SerializeCompressed()) {
		// A buyer key of ours signs nothing the buyer controls: every
		// update would be ours to forge, and the close would not verify.
		return nil, fmt.Errorf("accept open: %w: the buyer key is one of our own keys", ErrWrongKey)
	}
	hold, isHold := m.holdIndexOf(o.SellerScript)
	if !isHold && !m.ownPayoutScript(o.SellerScript) {
		return nil, fmt.Errorf("accept open: %w: closes would not pay our payout address", ErrWrongScript)
	}
	if len(o.BuyerScript) == 0 {
		return nil, fmt.Errorf("accept open: %w: empty buyer script", ErrMalformed)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(o.FundingTx)); err != nil {
		return nil, fmt.Errorf("accept open: %w: funding tx: %v", ErrMalformed, err)
	}
	if int(o.Vout) >= len(tx.TxOut) {
		return nil, fmt.Errorf("accept open: %w: no output %d", ErrBadFunding, o.Vout)
	}
	ws, err := ChannelScript(own.PubKey(), buyer, o.Expiry)
	if err != nil {
		return nil, fmt.Errorf("accept open: %w: %v", ErrMalformed, err)
	}
	pk, _ := P2WSH(ws)
	out := tx.TxOut[o.Vout]
	if !bytes.Equal(out.PkScript, pk) {
		return nil, fmt.Errorf("accept open: %w: output %d is not the channel script", ErrBadFunding, o.Vout)
	}
	vs := closeVSize(ws, o.SellerScript, o.BuyerScript)
	if err := m.cfg.checkFee(o.CloseFee, vs); err != nil {
		return nil, fmt.Errorf("accept open: close fee: %w", err)
	}
	if o.CloseFee < m.cfg.MinFeeRate*vs {
		return nil, fmt.Errorf("accept open: %w: close fee %d below min_fee_rate for %d vB", ErrFeeBound, o.CloseFee, vs)
	}
	if out.Value < o.CloseFee+DustP2WSH {
		return nil, fmt.Errorf("accept open: %w: capacity %d too small", ErrBadFunding, out.Value)
	}
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept open: %w", err)
	}
	if int64(o.Expiry) <= int64(tip+m.cfg.SafetyMargin+m.cfg.Confirmations) {
		return nil, fmt.Errorf("accept open: %w: expiry %d, tip %d", ErrTooLate, o.Expiry, tip)
	}
	id := wire.NewOutPoint(ptr(tx.TxHash()), o.Vout).String()
	cs := m.chans.create(id)
	defer cs.mu.Unlock()
	if cs.rec != nil {
		return cs.rec.clone(), nil
	}
	c := &Channel{
		ID: id, Role: RoleSeller, State: StatePending, Peer: peer,
		BuyerKey: o.BuyerKey, SellerKey: o.SellerKey, Expiry: o.Expiry, Capacity: out.Value,
		CloseFee: o.CloseFee, SellerScript: o.SellerScript, BuyerScript: o.BuyerScript,
		FundingTx: o.FundingTx, Vout: o.Vout, OpenHeight: tip, PendingSince: tip, Created: m.now().UTC(), Contracts: map[string]int64{},
	}
	if isHold {
		c.HoldIndex = &hold
	}
	if err := m.checkZeroConf(ctx, peer, &tx, o.InputHeights); err != nil {
		c.ZeroConfWhy = err.Error()
	} else {
		c.ZeroConf = true
	}
	if err := m.persist(cs, c); err != nil {
		return nil, fmt.Errorf("accept open: %w", err)
	}
	m.mu.Lock()
	m.tip = tip
	m.mu.Unlock()
	m.log.Info("channel accepted", "channel", id, "peer", peer, "capacity", out.Value, "expiry", o.Expiry, "zero_conf", c.ZeroConf, "zero_conf_why", c.ZeroConfWhy)
	return c.clone(), nil
}

// Pay signs a payment of amount more satoshis to the seller for contractID,
// persists it, and returns the update to send. Resending the latest update
// after a lost acknowledgement is LatestUpdate's job, not Pay's.
func (m *Manager) Pay(ctx context.Context, id, contractID string, amount int64) (*Update, error) {
	cs, next, u, err := m.signPayment(id, contractID, amount)
	if err != nil {
		return nil, err
	}
	defer cs.mu.Unlock()
	if err := m.persist(cs, next); err != nil {
		return nil, fmt.Errorf("pay %s: %w", id, err)
	}
	return u, nil
}

// PayAsync is Pay returning the update while it is still being persisted,
// so that the buyer sends it while its own write runs (the write and the
// seller's check and write overlap instead of following each other). The
// update only pays the seller more than the last durable one, so the
// seller may hold it before we do. durable returns the write's result once
// it is done (every call the same); until then the channel takes no other
// change (the next Pay waits for it), and the caller counts the update as
// paid only once durable returned nil and the seller acknowledged it.
//
// A crash before durable returned loses the update on our side only: the
// seller may hold it with our signature (it pays the seller no more than
// we signed). The next payment on the channel after the restart reuses its
// sequence number: when it is the same payment (the contract's next
// interval, as a resumed job pays it), it is the same update (the
// signature is deterministic, RFC 6979) and the seller acknowledges it as
// a resend; a different one (another contract on the channel paying
// first) is refused with the update the seller holds, which the buyer
// adopts and pays on top of (reestablish.go).
func (m *Manager) PayAsync(ctx context.Context, id, contractID string, amount int64) (u *Update, durable func() error, err error) {
	cs, next, u, err := m.signPayment(id, contractID, amount)
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		defer cs.mu.Unlock()
		if err := m.persist(cs, next); err != nil {
			done <- fmt.Errorf("pay %s: %w", id, err)
			return
		}
		done <- nil
	}()
	return u, sync.OnceValue(func() error { return <-done }), nil
}

// signPayment checks and signs a payment of amount more satoshis for
// contractID on channel id: the channel's next record and the update. It
// returns with the channel's lock held (the caller persists next and
// unlocks); on error the lock is released.
func (m *Manager) signPayment(id, contractID string, amount int64) (*chanState, *Channel, *Update, error) {
	if amount <= 0 {
		return nil, nil, nil, fmt.Errorf("pay %s: %w: amount %d", id, ErrLowerAmount, amount)
	}
	if len(contractID) > maxContractID {
		return nil, nil, nil, fmt.Errorf("pay %s: contract id longer than %d bytes", id, maxContractID)
	}
	cs, c := m.chans.lock(id)
	if cs == nil {
		return nil, nil, nil, fmt.Errorf("pay %s: %w", id, ErrUnknownChannel)
	}
	fail := func(err error) (*chanState, *Channel, *Update, error) {
		cs.mu.Unlock()
		return nil, nil, nil, fmt.Errorf("pay %s: %w", id, err)
	}
	if c.Role != RoleBuyer {
		return fail(ErrWrongRole)
	}
	// A buyer pays on its own unconfirmed funding too (the seller decides
	// whether it works on it unconfirmed): its updates are worth nothing
	// unless the funding confirms.
	if c.State != StateOpen && c.State != StatePending {
		return fail(Unusable(c))
	}
	paid := c.Paid + amount
	if paid > c.Capacity {
		return fail(fmt.Errorf("%w: %d > %d", ErrOverCapacity, paid, c.Capacity))
	}
	next := c.clone()
	next.Seq++
	next.Paid = paid
	if next.Contracts == nil {
		next.Contracts = map[string]int64{}
	}
	next.Contracts[contractID] += amount
	next.LastContract, next.LastDelta = contractID, amount
	u, err := m.signUpdate(cs, next, contractID)
	if err != nil {
		return fail(err)
	}
	next.BuyerSig = u.Sig
	return cs, next, u, nil
}

// LatestUpdate rebuilds the buyer's latest update (to resend after a lost
// acknowledgement or a reconnect); nil before the first payment.
func (m *Manager) LatestUpdate(id, contractID string) (*Update, error) {
	c := m.chans.get(id)
	if c == nil {
		return nil, fmt.Errorf("latest update %s: %w", id, ErrUnknownChannel)
	}
	if c.Seq == 0 {
		return nil, nil
	}
	op, _ := c.Outpoint()
	return &Update{ChannelID: op, Seq: c.Seq, Amount: c.Paid, ContractID: contractID,
		ContractAmount: c.Contracts[contractID], PayScript: c.SellerScript, Sig: c.BuyerSig}, nil
}

// signUpdate signs the close paying c.Paid (cs.mu held).
func (m *Manager) signUpdate(cs *chanState, c *Channel, contractID string) (*Update, error) {
	key, err := m.keys.Key(FamilyChannelBuyer, c.KeyIndex)
	if err != nil {
		return nil, err
	}
	ws, _, err := cs.x.scriptOf(c)
	if err != nil {
		return nil, err
	}
	tx, err := c.CloseTx(c.Paid)
	if err != nil {
		return nil, err
	}
	sig, err := SignInput(tx, 0, ws, c.Capacity, key)
	if err != nil {
		return nil, err
	}
	op, _ := c.Outpoint()
	return &Update{ChannelID: op, Seq: c.Seq, Amount: c.Paid, ContractID: contractID,
		ContractAmount: c.Contracts[contractID], PayScript: c.SellerScript, Sig: sig}, nil
}

// AcceptUpdate is the seller's side of a payment: it decodes the update,
// checks it against the channel (peer, sequence, increasing amount, capacity,
// payout script, contract totals, time left), verifies the buyer's signature
// by running the script engine on the fully signed close transaction,
// persists it, and only then returns it as acknowledged. Any refusal names
// its reason and changes nothing. The same update received twice is
// acknowledged twice.
func (m *Manager) AcceptUpdate(ctx context.Context, peer string, msg []byte) (*Update, error) {
	return m.acceptUpdate(ctx, peer, msg, false)
}

// acceptUpdate is AcceptUpdate; with gap, an update that skips sequence
// numbers may move the channel by more than its contract: the buyer signed
// updates that never reached us (a stream that ended as it paid). The
// surplus is ours, paid for no contract we know of (Channel.Unattributed):
// refusing it would refuse every later payment on the channel.
func (m *Manager) acceptUpdate(ctx context.Context, peer string, msg []byte, gap bool) (*Update, error) {
	u, err := DecodeUpdate(msg)
	if err != nil {
		return nil, err
	}
	id := u.ChannelID.String()
	cs, c := m.chans.lock(id)
	if cs == nil {
		return nil, fmt.Errorf("update for %s from %s: %w", id, peer, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if c.Peer != peer {
		return nil, fmt.Errorf("update for %s from %s: %w", id, peer, ErrUnknownChannel)
	}
	if c.Role != RoleSeller {
		return nil, fmt.Errorf("update for %s: %w", id, ErrWrongRole)
	}
	if c.State == StatePending {
		if err := m.pendingUsable(c, u); err != nil {
			return nil, fmt.Errorf("update for %s: %w", id, err)
		}
	} else if c.State != StateOpen {
		return nil, fmt.Errorf("update for %s: %w (state %s) %s", id, ErrNotOpen, c.State, c.FailReason)
	}
	if u.Seq == c.Seq && u.Amount == c.Paid && bytes.Equal(u.Sig, c.BuyerSig) && c.resendOf(u) {
		return u, nil // a resend of what we already hold
	}
	if u.Seq <= c.Seq {
		return nil, m.refuseStale(c, fmt.Errorf("update for %s: %w: seq %d, have %d", id, ErrStale, u.Seq, c.Seq))
	}
	if u.Amount <= c.Paid {
		return nil, m.refuseStale(c, fmt.Errorf("update for %s: %w: %d, have %d", id, ErrLowerAmount, u.Amount, c.Paid))
	}
	if u.Amount > c.Capacity {
		return nil, fmt.Errorf("update for %s: %w: %d > %d", id, ErrOverCapacity, u.Amount, c.Capacity)
	}
	if !bytes.Equal(u.PayScript, c.SellerScript) {
		return nil, fmt.Errorf("update for %s: %w", id, ErrWrongScript)
	}
	contractDelta, channelDelta := u.ContractAmount-c.Contracts[u.ContractID], u.Amount-c.Paid
	skipped := gap && u.Seq > c.Seq+1 && contractDelta >= 0 && contractDelta < channelDelta
	if contractDelta != channelDelta && !skipped {
		return nil, m.refuseStale(c, fmt.Errorf("update for %s: %w: contract %q goes %d→%d but channel %d→%d",
			id, ErrContractAmount, u.ContractID, c.Contracts[u.ContractID], u.ContractAmount, c.Paid, u.Amount))
	}
	m.mu.Lock()
	tip := m.tip
	m.mu.Unlock()
	if tip == 0 {
		// Not ticked since start: ask once, then Tick keeps it fresh.
		if tip, err = m.chain.Tip(ctx); err != nil {
			return nil, fmt.Errorf("update for %s: %w", id, err)
		}
		m.mu.Lock()
		if m.tip == 0 {
			m.tip = tip
		}
		m.mu.Unlock()
	}
	if int64(tip) >= int64(c.Expiry)-int64(m.cfg.SafetyMargin) {
		return nil, fmt.Errorf("update for %s: %w: tip %d, expiry %d", id, ErrTooLate, tip, c.Expiry)
	}
	next := c.clone()
	next.Seq, next.Paid, next.BuyerSig = u.Seq, u.Amount, u.Sig
	if next.Contracts == nil {
		next.Contracts = map[string]int64{}
	}
	next.Contracts[u.ContractID] = u.ContractAmount
	next.LastContract, next.LastDelta = u.ContractID, channelDelta
	if skipped {
		next.Unattributed += channelDelta - contractDelta
	}
	// The signature check (c: the fields the close is built from, which
	// the update does not change) runs while the store writes next, with a
	// store that can (CheckedStore); next is adopted only when both are done.
	checkErr, err := m.persistChecked(cs, next, func() error { return m.checkUpdate(cs, c, u.Amount, u.Sig) })
	if checkErr != nil {
		return nil, fmt.Errorf("update for %s: %w", id, checkErr)
	}
	if err != nil {
		return nil, fmt.Errorf("update for %s: %w", id, err)
	}
	if skipped {
		m.log.Info("payment update skips updates never received; their amount is kept unattributed",
			"channel", id, "contract", u.ContractID, "seq", u.Seq, "had_seq", c.Seq, "unattributed_sat", channelDelta-contractDelta)
	}
	if m.after != nil {
		m.after(next.clone())
	}
	return u, nil
}

// checkSig stands in for our (seller) signature while an update is checked:
// a minimal strict-DER signature (r = s = 1) that signs nothing. It is never
// broadcast; Close makes the real signature.
var checkSig = []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}

// checkUpdate builds the close paying paid with the buyer's signature and
// runs the script engine on the whole witness: branch, both CHECKSIGs, key
// order. A failure is ErrBadSignature. The seller does not sign an update
// (only the close it broadcasts): our slot holds checkSig, which the
// engine's signature cache vouches for under our key and this sighash; the
// engine verifies the buyer's signature for real (one ECDSA verification,
// ~150 µs) under the channel's buyer key, which is refused when it is our
// own key (the cache would then vouch for checkSig in the buyer's slot
// too). cs.mu is held.
func (m *Manager) checkUpdate(cs *chanState, c *Channel, paid int64, buyerSig []byte) error {
	_, err := m.closeTx(cs, c, paid, buyerSig, false)
	return err
}

// signedClose is the close paying paid, with the buyer's signature and
// ours, checked in full by the script engine (both signatures verified):
// what Close broadcasts. cs.mu is held.
func (m *Manager) signedClose(cs *chanState, c *Channel, paid int64, buyerSig []byte) (*wire.MsgTx, error) {
	return m.closeTx(cs, c, paid, buyerSig, true)
}

func (m *Manager) closeTx(cs *chanState, c *Channel, paid int64, buyerSig []byte, sign bool) (*wire.MsgTx, error) {
	ws, pk, err := cs.x.scriptOf(c)
	if err != nil {
		return nil, err
	}
	tx, err := c.CloseTx(paid)
	if err != nil {
		return nil, err
	}
	fetcher := txscript.NewCannedPrevOutputFetcher(pk, c.Capacity)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	digest, err := txscript.CalcWitnessSigHash(ws, hashes, txscript.SigHashAll, tx, 0, c.Capacity)
	if err != nil {
		return nil, fmt.Errorf("close sighash: %w", err)
	}
	var ours []byte
	var cache *txscript.SigCache
	if sign {
		key, err := m.keys.Key(FamilySeller, c.KeyIndex)
		if err != nil {
			return nil, err
		}
		ours = ecdsa.Sign(key, digest).Serialize()
	} else {
		if cs.x.sellerPub == nil {
			key, err := m.keys.Key(FamilySeller, c.KeyIndex)
			if err != nil {
				return nil, err
			}
			cs.x.sellerPub = key.PubKey().SerializeCompressed()
		}
		if bytes.Equal(c.BuyerKey, cs.x.sellerPub) {
			// The cache below would then vouch for checkSig as the
			// buyer's signature too.
			return nil, fmt.Errorf("%w: %w: the buyer key is our own", ErrBadSignature, ErrWrongKey)
		}
		if cs.x.buyerPub != nil {
			if err := verifySigAll(cs.x.buyerPub, digest, buyerSig); err != nil {
				return nil, fmt.Errorf("%w: %w: %v", ErrBadSignature, ErrScript, err)
			}
			return nil, nil
		}
		// Vouched for under our own key only: the cache (one entry per
		// sighash) holds nothing for the buyer's key, which differs from
		// ours, so the engine verifies the buyer's signature for real.
		ours = checkSig
		cache = txscript.NewSigCache(2)
		var h chainhash.Hash
		copy(h[:], digest)
		cache.Add(h, ours, cs.x.sellerPub)
	}
	tx.TxIn[0].Witness = ChannelCloseWitness(ws, buyerSig, append(slices.Clip(ours), byte(txscript.SigHashAll)))
	vm, err := txscript.NewEngine(pk, tx, 0, txscript.StandardVerifyFlags, cache, hashes, c.Capacity, fetcher)
	if err == nil {
		err = vm.Execute()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %v", ErrBadSignature, ErrScript, err)
	}
	if !sign {
		// The engine accepted the channel's script, its keys and this
		// witness: what it checks of the next updates' is their buyer
		// signature alone (verifySigAll).
		if pub, err := btcec.ParsePubKey(c.BuyerKey); err == nil {
			cs.x.buyerPub = pub
		}
		return nil, nil
	}
	return tx, nil
}

// Close is the seller settling a channel with the latest update: the close
// transaction is signed, checked by the script engine and the fee bound,
// persisted (Closing) and broadcast. Closing a channel already closing
// rebroadcasts.
func (m *Manager) Close(ctx context.Context, id string) (*wire.MsgTx, error) {
	cs, c := m.chans.lock(id)
	if cs == nil {
		return nil, fmt.Errorf("close %s: %w", id, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if c.Role != RoleSeller {
		return nil, fmt.Errorf("close %s: %w: only the seller closes; the buyer refunds", id, ErrWrongRole)
	}
	if c.State == StateClosing && len(c.SpendTx) > 0 {
		return m.rebroadcast(ctx, c)
	}
	if c.State != StateOpen && c.State != StatePending {
		return nil, fmt.Errorf("close %s: %w (state %s)", id, ErrNotOpen, c.State)
	}
	if !c.CloseWorth() {
		return nil, fmt.Errorf("close %s: %w: paid %d, fee %d", id, ErrNotWorth, c.Paid, c.CloseFee)
	}
	tx, err := m.signedClose(cs, c, c.Paid, c.BuyerSig)
	if err != nil {
		return nil, fmt.Errorf("close %s: %w", id, err)
	}
	if err := m.cfg.checkFee(c.Capacity-sumOut(tx), VSize(tx)); err != nil {
		return nil, fmt.Errorf("close %s: %w", id, err)
	}
	return m.sendSpend(ctx, cs, c, tx, "close")
}

// Refund is the buyer taking back everything unpaid through the timelock
// branch, once the tip has reached the channel's expiry.
func (m *Manager) Refund(ctx context.Context, id string) (*wire.MsgTx, error) {
	cs, c := m.chans.lock(id)
	if cs == nil {
		return nil, fmt.Errorf("refund %s: %w", id, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if c.Role != RoleBuyer {
		return nil, fmt.Errorf("refund %s: %w", id, ErrWrongRole)
	}
	if c.State == StateClosing && len(c.SpendTx) > 0 {
		return m.rebroadcast(ctx, c)
	}
	if c.State != StateOpen && c.State != StatePending {
		return nil, fmt.Errorf("refund %s: %w (state %s)", id, ErrNotOpen, c.State)
	}
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return nil, fmt.Errorf("refund %s: %w", id, err)
	}
	if int64(tip) < int64(c.Expiry) {
		return nil, fmt.Errorf("refund %s: %w: tip %d < expiry %d", id, ErrNotExpired, tip, c.Expiry)
	}
	ws, err := c.Script()
	if err != nil {
		return nil, err
	}
	pk, _ := P2WSH(ws)
	vs := refundVSize(ws, c.BuyerScript)
	fee := m.cfg.FeeRate(ctx, m.chain, 6) * vs
	if err := m.cfg.checkFee(fee, vs); err != nil {
		return nil, fmt.Errorf("refund %s: %w", id, err)
	}
	tx, err := c.refundTx(fee)
	if err != nil {
		return nil, err
	}
	key, err := m.keys.Key(FamilyChannelBuyer, c.KeyIndex)
	if err != nil {
		return nil, err
	}
	sig, err := SignInput(tx, 0, ws, c.Capacity, key)
	if err != nil {
		return nil, fmt.Errorf("refund %s: %w", id, err)
	}
	tx.TxIn[0].Witness = ChannelRefundWitness(ws, sig)
	if err := VerifyInput(tx, 0, pk, c.Capacity); err != nil {
		return nil, fmt.Errorf("refund %s: %w", id, err)
	}
	return m.sendSpend(ctx, cs, c, tx, "refund")
}

// sendSpend persists tx as the channel's spend (state Closing) and then
// broadcasts it; a crash in between rebroadcasts from Tick. cs.mu is held.
func (m *Manager) sendSpend(ctx context.Context, cs *chanState, c *Channel, tx *wire.MsgTx, what string) (*wire.MsgTx, error) {
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return nil, err
	}
	next := c.clone()
	next.State = StateClosing
	next.SpendTx = raw.Bytes()
	next.SpendTxid = tx.TxHash().String()
	if err := m.persist(cs, next); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, c.ID, err)
	}
	if err := m.chain.Broadcast(ctx, tx); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, c.ID, err)
	}
	m.log.Info("channel "+what+" broadcast", "channel", c.ID, "txid", next.SpendTxid, "paid", c.Paid)
	return tx, nil
}

func (m *Manager) rebroadcast(ctx context.Context, c *Channel) (*wire.MsgTx, error) {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(c.SpendTx)); err != nil {
		return nil, fmt.Errorf("stored spend of %s: %w", c.ID, err)
	}
	if err := m.chain.Broadcast(ctx, &tx); err != nil {
		return nil, fmt.Errorf("rebroadcast spend of %s: %w", c.ID, err)
	}
	return &tx, nil
}

func sumOut(tx *wire.MsgTx) int64 {
	var s int64
	for _, o := range tx.TxOut {
		s += o.Value
	}
	return s
}

// Tick advances every channel against the chain: funding confirmations (and
// reorgs that undo them), spends of the funding output, the seller's
// automatic close at expiry minus the safety margin, the buyer's automatic
// refund after expiry, rebroadcasts, and final confirmation. Every step is
// idempotent and persisted, so Tick after a crash picks up where it was.
// Call it on every new block (or on a timer).
func (m *Manager) Tick(ctx context.Context) error {
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return fmt.Errorf("tick: %w", err)
	}
	m.mu.Lock()
	m.tip = tip
	m.mu.Unlock()
	m.ObserveTip(tip)
	var ids []string
	m.chans.each(func(id string, c *Channel) {
		if c.State != StateClosed && c.State != StateFailed || c.revivable() {
			ids = append(ids, id)
		}
	})
	var errs []error
	for _, id := range ids {
		// Step until the state stops changing (as lnd's advanceState): each
		// step is persisted, so a crash re-runs at most one, idempotently.
		for i := 0; i < 5; i++ {
			before := m.state(id)
			if err := m.step(ctx, id, tip); err != nil {
				m.log.Warn("channel step", "channel", id, "err", err)
				errs = append(errs, err)
				break
			}
			if m.state(id) == before {
				break
			}
		}
	}
	m.maybeRecoverHolds(ctx)
	if err := m.Sweeps(ctx, tip); err != nil {
		m.log.Warn("sweep", "err", err)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Manager) state(id string) State {
	return m.chans.get(id).State
}

// step advances one channel by one state. It holds no lock while it asks
// the chain; each change (setState, checkSpent, Close, Refund) takes the
// channel's lock and re-reads the record.
func (m *Manager) step(ctx context.Context, id string, tip int32) error {
	c := m.chans.get(id)
	n := m.cfg.Confirmations
	switch c.State {
	case StateFailed:
		if c.revivable() {
			return m.revive(ctx, c)
		}
	case StatePending:
		confs, err := TxConfirmations(ctx, m.chain, c.FundingTxid(), fundingScript(c), c.OpenHeight-6)
		if err != nil {
			return err
		}
		if failed, err := m.watchFunding(ctx, c, tip, confs); failed || err != nil {
			return err
		}
		if confs < 0 {
			// Reorged out and not back in the mempool, or never seen:
			// (re)broadcast; either side holds the funding tx.
			var tx wire.MsgTx
			if err := tx.Deserialize(bytes.NewReader(c.FundingTx)); err == nil {
				if err := m.chain.Broadcast(ctx, &tx); err != nil {
					m.log.Warn("funding rebroadcast refused", "channel", id, "err", err)
				}
			}
			return nil
		}
		if confs >= n {
			return m.setState(c, StateOpen, "funding confirmed", "confs", confs)
		}
	case StateOpen:
		confs, err := TxConfirmations(ctx, m.chain, c.FundingTxid(), fundingScript(c), c.OpenHeight-6)
		if err != nil {
			return err
		}
		if confs < n {
			return m.setState(c, StatePending, "funding lost confirmations (reorg)", "confs", confs)
		}
		if spent, err := m.checkSpent(ctx, c, tip); err != nil || spent {
			return err
		}
		switch {
		case c.Role == RoleSeller && c.Exhausted() && c.CloseWorth():
			// Nothing more can be paid through it: settle now, and
			// the buyer opens a new channel for further contracts.
			_, err := m.Close(ctx, id)
			return err
		case c.Role == RoleSeller && int64(tip) >= int64(c.Expiry)-int64(m.cfg.SafetyMargin) && c.CloseWorth():
			_, err := m.Close(ctx, id)
			return err
		case c.Role == RoleBuyer && int64(tip) >= int64(c.Expiry):
			_, err := m.Refund(ctx, id)
			return err
		}
	case StateClosing:
		if c.SpendTxid == "" {
			_, err := m.checkSpent(ctx, c, tip)
			return err
		}
		h, err := chainHash(c.SpendTxid)
		if err != nil {
			return err
		}
		confs, err := TxConfirmations(ctx, m.chain, h, fundingScript(c), c.OpenHeight-6)
		if err != nil {
			return err
		}
		if confs >= n {
			return m.setState(c, StateClosed, "spend confirmed", "txid", c.SpendTxid)
		}
		if confs == 0 {
			return m.bumpSpend(ctx, id, tip)
		}
		if confs < 0 {
			// Ours: rebroadcast. Theirs: it vanished (reorg); look again.
			if len(c.SpendTx) > 0 {
				var tx wire.MsgTx
				if err := tx.Deserialize(bytes.NewReader(c.SpendTx)); err == nil && tx.TxHash().String() == c.SpendTxid {
					if err := m.chain.Broadcast(ctx, &tx); err == nil {
						return nil
					}
				}
			}
			_, err := m.checkSpent(ctx, c, tip)
			return err
		}
	}
	return nil
}

// checkSpent looks for a spend of the funding output and records it.
func (m *Manager) checkSpent(ctx context.Context, c *Channel, tip int32) (bool, error) {
	op, err := c.Outpoint()
	if err != nil {
		return false, err
	}
	hint := c.OpenHeight - 6 // a reorg may have moved the funding down
	spend, err := SpendOfScript(ctx, m.chain, op, fundingScript(c), hint)
	if err != nil || spend == nil {
		return false, err
	}
	return true, m.noteSpend(c, spend.TxHash().String())
}

// noteSpend records that txid spends c's funding output: the channel is
// closing.
func (m *Manager) noteSpend(c *Channel, txid string) error {
	if c.State == StateClosing && c.SpendTxid == txid {
		return nil
	}
	cs, cur := m.chans.lock(c.ID)
	if cs == nil {
		return fmt.Errorf("channel %s: %w", c.ID, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if cur.State == StateClosing && cur.SpendTxid == txid {
		return nil
	}
	next := cur.clone()
	next.State = StateClosing
	next.SpendTxid = txid
	if err := m.persist(cs, next); err != nil {
		return err
	}
	m.log.Info("channel funding spent", "channel", c.ID, "txid", txid)
	return nil
}

func (m *Manager) setState(c *Channel, s State, why string, kv ...any) error {
	cs, cur := m.chans.lock(c.ID)
	if cs == nil {
		return fmt.Errorf("channel %s: %w", c.ID, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if cur.State == s {
		return nil
	}
	next := cur.clone()
	old := next.State
	next.State = s
	if err := m.persist(cs, next); err != nil {
		return err
	}
	m.log.Info("channel "+why, append([]any{"channel", c.ID, "from", old.String(), "to", s.String()}, kv...)...)
	return nil
}
