package payment

// Zero-confirmation funding: the first contract with a new seller on a
// chain with 10-minute blocks.
//
// A buyer that funds a channel to a new seller does not wait for the
// funding's confirmations (Confirmations, 3 by default, about 30 minutes on
// mainnet). The seller accepts the funding unconfirmed when it passes the
// checks of checkZeroConf (every input a confirmed, unspent output; every
// input verified by the script engine; no input signalling replacement;
// the fee rate at least the floor; our node took it into its mempool), and
// then lets contracts start on it while what it would lose if the funding
// were double-spent stays within Config.ZeroConfMax: its exposure, the
// sum over its unconfirmed channels of what they carry (paid) or may yet
// carry for the contracts admitted on them (reserved). A contract that
// would take the exposure over the limit waits for the confirmations
// before it starts (Admit says so, with the confirmations and the next
// block's estimate for the buyer).
//
// Full-RBF mempools (Bitcoin Core's default since 28.0) relay a
// replacement of any unconfirmed transaction, signalled or not: the
// no-signal check only keeps out fundings that announce it; the bound is
// what limits the loss.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// ErrNotZeroConf says why a funding is not worked on before it confirms.
var ErrNotZeroConf = errors.New("funding not accepted unconfirmed")

// PrevOutSource is what a Chain may also do: return a confirmed, unspent
// output (nil when it is not one: unknown, unconfirmed or spent in a
// block). A seller checks an unconfirmed funding's inputs with it; a chain
// without it gets no zero-confirmation contracts (they wait for the
// confirmations).
type PrevOutSource interface {
	ConfirmedOutput(ctx context.Context, op wire.OutPoint) (*wire.TxOut, error)
}

var _ PrevOutSource = (*BtcdChain)(nil)

// ConfirmedOutput implements PrevOutSource with gettxout, the mempool left
// out (an input the funding spends is spent in the mempool already).
func (b *BtcdChain) ConfirmedOutput(ctx context.Context, op wire.OutPoint) (*wire.TxOut, error) {
	res, err := await(ctx, func() (*btcjson.GetTxOutResult, error) { return b.rpc.GetTxOut(&op.Hash, op.Index, false) })
	if err != nil {
		return nil, fmt.Errorf("gettxout %s: %w", op, err)
	}
	if res == nil || res.Confirmations < 1 {
		return nil, nil
	}
	pk, err := hex.DecodeString(res.ScriptPubKey.Hex)
	if err != nil {
		return nil, fmt.Errorf("gettxout %s: script: %w", op, err)
	}
	v, err := btcutil.NewAmount(res.Value)
	if err != nil {
		return nil, fmt.Errorf("gettxout %s: %w", op, err)
	}
	return wire.NewTxOut(int64(v), pk), nil
}

// ZeroConfFloor is the lowest fee rate (sat/vB) a funding accepted
// unconfirmed pays: half of what this node would pay to confirm within 6
// blocks (estimates differ between nodes), and never below min_fee_rate.
func (c *Config) ZeroConfFloor(ctx context.Context, chain Chain) int64 {
	return max(c.MinFeeRate, c.FeeRate(ctx, chain, 6)/2)
}

// checkZeroConf decides whether an unconfirmed funding may be worked on
// (within the exposure bound): nil if so, else an error wrapping
// ErrNotZeroConf that says why. It broadcasts tx (our node's mempool
// accepting it is the standardness and conflict check). On the light
// client, which has no mempool and no UTXO set, the inputs are found in
// recent blocks through their scripts (zeroconflight.go) and the broadcast
// only hears peers that still send refusals.
//
// hints are the buyer's input height hints (OpenRequest.InputHeights), used
// by the light client only.
func (m *Manager) checkZeroConf(ctx context.Context, peer string, tx *wire.MsgTx, hints []int32) error {
	if m.cfg.ZeroConfMax <= 0 {
		return fmt.Errorf("%w: payment.zero_conf_max is 0", ErrNotZeroConf)
	}
	failed := false
	m.chans.each(func(_ string, c *Channel) {
		failed = failed || c.Role == RoleSeller && c.Peer == peer && c.State == StateFailed
	})
	if failed {
		// Its funding was double-spent or never confirmed before: its
		// fundings wait for their confirmations.
		return fmt.Errorf("%w: a channel of this buyer failed before", ErrNotZeroConf)
	}
	src, ok := m.chain.(PrevOutSource)
	light, lightOK := m.chain.(ScriptPrevOutSource)
	if !ok && !lightOK {
		return fmt.Errorf("%w: the chain backend cannot check unconfirmed inputs", ErrNotZeroConf)
	}
	if err := checkNoRBF(tx); err != nil {
		return err
	}
	prev := txscript.NewMultiPrevOutFetcher(nil)
	var in int64
	if !ok {
		// The light client (zeroconflight.go).
		outs, err := m.lightPrevOuts(ctx, peer, light, tx, hints)
		if err != nil {
			return err
		}
		for i, out := range outs {
			prev.AddPrevOut(tx.TxIn[i].PreviousOutPoint, out)
			in += out.Value
		}
	}
	for i, ti := range tx.TxIn {
		if !ok {
			break
		}
		out, err := src.ConfirmedOutput(ctx, ti.PreviousOutPoint)
		if err != nil {
			return fmt.Errorf("%w: input %d: %v", ErrNotZeroConf, i, err)
		}
		if out == nil {
			return fmt.Errorf("%w: input %d (%s) is not a confirmed unspent output", ErrNotZeroConf, i, ti.PreviousOutPoint)
		}
		prev.AddPrevOut(ti.PreviousOutPoint, out)
		in += out.Value
	}
	for i := range tx.TxIn {
		out := prev.FetchPrevOutput(tx.TxIn[i].PreviousOutPoint)
		if err := verifyInput(tx, i, out.PkScript, out.Value, prev); err != nil {
			return fmt.Errorf("%w: input %d: %v", ErrNotZeroConf, i, err)
		}
	}
	fee := in - sumOut(tx)
	vs := VSize(tx)
	floor := m.cfg.ZeroConfFloor(ctx, m.chain)
	if fee < 0 || vs <= 0 || fee < floor*vs {
		return fmt.Errorf("%w: fee %d sat for %d vB is below the floor of %d sat/vB", ErrNotZeroConf, fee, vs, floor)
	}
	broadcast := m.chain.Broadcast
	if qb, ok := m.chain.(quickBroadcaster); ok {
		broadcast = func(ctx context.Context, tx *wire.MsgTx) error {
			return qb.BroadcastWithin(ctx, tx, zeroConfBroadcastWait)
		}
	}
	if err := broadcast(ctx, tx); err != nil {
		return fmt.Errorf("%w: our node refuses it: %v", ErrNotZeroConf, err)
	}
	confs, err := m.chain.Confirmations(ctx, tx.TxHash())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotZeroConf, err)
	}
	if confs < 0 {
		return fmt.Errorf("%w: not in our node's mempool", ErrNotZeroConf)
	}
	return nil
}

// checkNoRBF refuses a transaction that signals replaceability (BIP 125:
// an input sequence below 0xfffffffe).
func checkNoRBF(tx *wire.MsgTx) error {
	for i, in := range tx.TxIn {
		if in.Sequence < wire.MaxTxInSequenceNum-1 {
			return fmt.Errorf("%w: input %d signals replacement (BIP 125, sequence %#x)", ErrNotZeroConf, i, in.Sequence)
		}
	}
	return nil
}

// zeroConf is the Manager's book of contracts admitted on unconfirmed
// channels. It is in memory: after a restart an unconfirmed channel still
// counts what it carries (Channel.Paid), and new contracts are admitted
// against that.
type zeroConf struct {
	mu sync.Mutex
	// res is the amount each admitted contract may bring its channel to
	// (its whole price), by contract ID.
	res map[string]reservation
	// blocks estimate the next block's time (NextBlock).
	blocks blockClock
	// filters is each buyer's budget of compact filters for hinted
	// checks on the light client (zeroconfbudget.go).
	filters filterBudget
}

type reservation struct {
	Channel string
	Amount  int64
}

// Exposure is what the seller would lose now if every unconfirmed funding
// it works on were double-spent: for each such channel (seller side,
// pending, accepted unconfirmed), what it carries plus what the contracts
// admitted on it may still be paid: Paid + Σ max(0, reserved − paid for
// the contract).
func Exposure(chans []*Channel, res map[string]reservation) int64 {
	var sum int64
	for _, c := range chans {
		sum += channelExposure(c, res)
	}
	return sum
}

func channelExposure(c *Channel, res map[string]reservation) int64 {
	if c.Role != RoleSeller || c.State != StatePending || !c.ZeroConf {
		return 0
	}
	e := c.Paid
	for id, r := range res {
		if r.Channel == c.ID {
			e += max(0, r.Amount-c.Contracts[id])
		}
	}
	return e
}

// FundingStatus is where a contract's funding is, as the seller sees it.
type FundingStatus struct {
	Channel string
	// Confirmations of the funding now (0: in the mempool) and how many
	// open the channel.
	Confirmations, Needed int32
	// Ready says the contract may start: the channel is open, or it was
	// admitted on the unconfirmed funding (ZeroConf).
	Ready, ZeroConf bool
	// Exposure is the node's exposure with this contract admitted (or, not
	// admitted, as it is), Max the bound (payment.zero_conf_max).
	Exposure, Max int64
	// NextBlock is when the next block is expected, from recent ones.
	NextBlock time.Duration
	// Why says why a contract that is not ready waits.
	Why string
}

// Admit decides whether contractID, which may bring channel id (ours as
// seller) up to amount sats, starts now: yes when the channel is open, or
// when it is pending, its funding passed the zero-confirmation checks and
// the node's exposure with it stays within ZeroConfMax (it is then
// reserved until Release or the confirmations). Asking again for an
// admitted contract says so again. An error means the channel is gone or
// failed.
func (m *Manager) Admit(ctx context.Context, id, contractID string, amount int64) (FundingStatus, error) {
	c := m.chans.get(id)
	if c == nil {
		return FundingStatus{}, fmt.Errorf("admit %s: %w", id, ErrUnknownChannel)
	}
	if c.Role != RoleSeller {
		return FundingStatus{}, fmt.Errorf("admit %s: %w", id, ErrWrongRole)
	}
	if tip, err := m.chain.Tip(ctx); err == nil {
		m.ObserveTip(tip) // the estimate below counts a block that just came
	}
	st := FundingStatus{Channel: id, Needed: m.cfg.Confirmations, Max: m.cfg.ZeroConfMax, NextBlock: m.NextBlock(ctx)}
	switch c.State {
	case StateOpen:
		st.Confirmations, st.Ready = m.cfg.Confirmations, true
		m.Release(contractID)
		return st, nil
	case StatePending:
	default:
		return st, fmt.Errorf("admit %s: %w", id, closingError(c))
	}
	confs, err := m.chain.Confirmations(ctx, c.FundingTxid())
	if err != nil {
		return st, fmt.Errorf("admit %s: %w", id, err)
	}
	st.Confirmations = max(confs, 0)
	if confs >= m.cfg.Confirmations {
		// Tick would open it at its next round: no need to wait for it.
		if err := m.setState(c, StateOpen, "funding confirmed", "confs", confs); err != nil {
			return st, fmt.Errorf("admit %s: %w", id, err)
		}
		st.Ready = true
		m.Release(contractID)
		return st, nil
	}
	chans := m.Channels()
	m.zc.mu.Lock()
	defer m.zc.mu.Unlock()
	if m.zc.res == nil {
		m.zc.res = map[string]reservation{}
	}
	if r, ok := m.zc.res[contractID]; ok && r.Channel == id {
		st.Ready, st.ZeroConf, st.Exposure = true, true, Exposure(chans, m.zc.res)
		return st, nil
	}
	st.Exposure = Exposure(chans, m.zc.res)
	if !c.ZeroConf {
		st.Why = "its funding was not accepted unconfirmed: " + c.ZeroConfWhy
		return st, nil
	}
	with := withReservation(m.zc.res, contractID, reservation{Channel: id, Amount: amount})
	if e := Exposure(chans, with); e > m.cfg.ZeroConfMax {
		st.Why = fmt.Sprintf("the exposure to unconfirmed fundings would be %d sat, above payment.zero_conf_max %d", e, m.cfg.ZeroConfMax)
		return st, nil
	}
	m.zc.res = with
	st.Ready, st.ZeroConf, st.Exposure = true, true, Exposure(chans, with)
	m.log.Info("contract admitted on an unconfirmed funding", "channel", id, "contract", contractID,
		"amount_sat", amount, "exposure_sat", st.Exposure, "zero_conf_max_sat", m.cfg.ZeroConfMax, "confs", st.Confirmations)
	return st, nil
}

// withReservation returns a copy of res with k set to v.
func withReservation(res map[string]reservation, k string, v reservation) map[string]reservation {
	out := make(map[string]reservation, len(res)+1)
	for id, r := range res {
		out[id] = r
	}
	out[k] = v
	return out
}

// Release drops contractID's reservation (its contract ended): what it
// was paid stays in its channel's exposure until the funding confirms.
func (m *Manager) Release(contractID string) {
	m.zc.mu.Lock()
	delete(m.zc.res, contractID)
	m.zc.mu.Unlock()
}

// ZeroConfView is the seller's exposure to unconfirmed fundings now.
type ZeroConfView struct {
	// ExposureSat is what a double-spend of every unconfirmed funding
	// would cost (Exposure), MaxSat the bound.
	ExposureSat int64 `json:"exposure_sat"`
	MaxSat      int64 `json:"max_sat"`
	// Channels are the unconfirmed channels worked on.
	Channels []ZeroConfChannel `json:"channels,omitempty"`
}

// ZeroConfChannel is one unconfirmed channel and what it exposes.
type ZeroConfChannel struct {
	ID          string `json:"id"`
	Peer        string `json:"peer"`
	ExposureSat int64  `json:"exposure_sat"`
	PaidSat     int64  `json:"paid_sat"`
}

// ZeroConf returns the node's exposure to unconfirmed fundings.
func (m *Manager) ZeroConf() ZeroConfView {
	chans := m.Channels()
	m.zc.mu.Lock()
	defer m.zc.mu.Unlock()
	v := ZeroConfView{ExposureSat: Exposure(chans, m.zc.res), MaxSat: m.cfg.ZeroConfMax}
	for _, c := range chans {
		if e := channelExposure(c, m.zc.res); e > 0 || c.Role == RoleSeller && c.State == StatePending && c.ZeroConf {
			v.Channels = append(v.Channels, ZeroConfChannel{ID: c.ID, Peer: c.Peer, ExposureSat: e, PaidSat: c.Paid})
		}
	}
	return v
}

// pendingUsable says whether update u (paying c's contract u.ContractID
// up to u.ContractAmount, the channel up to u.Amount) may be accepted on
// c while its funding is unconfirmed: c was accepted unconfirmed and the
// exposure after the update stays within ZeroConfMax. The channel's lock
// is held.
func (m *Manager) pendingUsable(c *Channel, u *Update) error {
	if !c.ZeroConf {
		return fmt.Errorf("%w (state %s, funding not accepted unconfirmed)", ErrNotOpen, c.State)
	}
	next := c.clone()
	next.Paid = u.Amount
	if next.Contracts == nil {
		next.Contracts = map[string]int64{}
	}
	next.Contracts[u.ContractID] = u.ContractAmount
	var others []*Channel
	m.chans.each(func(id string, o *Channel) {
		if id != c.ID {
			others = append(others, o)
		}
	})
	m.zc.mu.Lock()
	e := Exposure(append(others, next), m.zc.res)
	m.zc.mu.Unlock()
	if e > m.cfg.ZeroConfMax {
		return fmt.Errorf("%w: unconfirmed, and the update would bring the exposure to %d sat, above payment.zero_conf_max %d", ErrNotOpen, e, m.cfg.ZeroConfMax)
	}
	return nil
}

// usable reports whether payments may flow on c now: it is open, or
// pending and accepted unconfirmed (the exposure is checked per update).
func usable(c *Channel) bool {
	return c.State == StateOpen || c.State == StatePending && c.ZeroConf
}

// ReopenRequest rebuilds the request that opened c (a buyer's channel),
// witnesses and all, for a seller that should check it again: a contract
// reusing a channel whose funding is not confirmed yet hands it over again.
func (c *Channel) ReopenRequest() *OpenRequest {
	return &OpenRequest{
		BuyerKey: c.BuyerKey, SellerKey: c.SellerKey, Expiry: c.Expiry, CloseFee: c.CloseFee,
		SellerScript: c.SellerScript, BuyerScript: c.BuyerScript, FundingTx: c.FundingTx, Vout: c.Vout,
	}
}

// blockClock says when the next block is expected: from the mean
// interval of the blocks the node saw arrive, or (before it saw two) of
// the last blocks' timestamps, or the network's target spacing.
type blockClock struct {
	tip int32
	// seen are the times the node saw tips arrive (each one above the one
	// before), oldest first.
	seen []time.Time
	// headerIv is the mean interval of the last blockSamples blocks'
	// timestamps up to headerTip, and headerLast headerTip's timestamp.
	headerTip  int32
	headerIv   time.Duration
	headerLast time.Time
}

// blockSamples is how many intervals the estimate uses.
const blockSamples = 6

// observe records that the tip is tip at now.
func (b *blockClock) observe(tip int32, now time.Time) {
	if tip == b.tip {
		return
	}
	if b.tip == 0 || tip != b.tip+1 {
		// The first tip seen, a reorg or a jump: no arrival was seen.
		b.seen = b.seen[:0]
	} else {
		b.seen = append(b.seen, now)
		if len(b.seen) > blockSamples+1 {
			b.seen = b.seen[len(b.seen)-blockSamples-1:]
		}
	}
	b.tip = tip
}

// estimate is the mean block interval and when the last block came (zero
// when unknown).
func (b *blockClock) estimate(def time.Duration) (iv time.Duration, last time.Time) {
	n := len(b.seen)
	if n > 0 {
		last = b.seen[n-1]
	}
	switch {
	case n >= 2:
		return b.seen[n-1].Sub(b.seen[0]) / time.Duration(n-1), last
	case b.headerIv > 0 && b.headerTip == b.tip:
		if last.IsZero() {
			last = b.headerLast
		}
		return b.headerIv, last
	}
	return def, last
}

// next estimates how long until the next block at now: the mean interval
// less the time since the last block, at least a tenth of the interval (a
// late block is as likely to come any moment as ever).
func (b *blockClock) next(now time.Time, def time.Duration) time.Duration {
	iv, last := b.estimate(def)
	if last.IsZero() {
		return iv
	}
	return max(iv-now.Sub(last), iv/10)
}

// BlockTimer is what a Chain may also do: the timestamp of the block at a
// height of the best chain. The next block's estimate uses it until the
// node has seen two blocks arrive.
type BlockTimer interface {
	BlockTime(ctx context.Context, height int32) (time.Time, error)
}

var _ BlockTimer = (*BtcdChain)(nil)

// BlockTime implements BlockTimer.
func (b *BtcdChain) BlockTime(ctx context.Context, height int32) (time.Time, error) {
	hash, err := await(ctx, func() (*chainhash.Hash, error) { return b.rpc.GetBlockHash(int64(height)) })
	if err != nil {
		return time.Time{}, fmt.Errorf("block hash %d: %w", height, err)
	}
	h, err := await(ctx, func() (*wire.BlockHeader, error) { return b.rpc.GetBlockHeader(hash) })
	if err != nil {
		return time.Time{}, fmt.Errorf("block header %d: %w", height, err)
	}
	return h.Timestamp, nil
}

// ObserveTip records that the chain's tip is tip now (Tick calls it).
func (m *Manager) ObserveTip(tip int32) {
	m.zc.mu.Lock()
	m.zc.blocks.observe(tip, m.now())
	m.zc.mu.Unlock()
}

// NextBlock estimates how long until the next block (blockClock).
func (m *Manager) NextBlock(ctx context.Context) time.Duration {
	def := 10 * time.Minute
	if p, err := NetParams(m.cfg.Network); err == nil && p.TargetTimePerBlock > 0 {
		def = p.TargetTimePerBlock
	}
	m.zc.mu.Lock()
	tip, stale := m.zc.blocks.tip, len(m.zc.blocks.seen) < 2 && m.zc.blocks.headerTip != m.zc.blocks.tip
	m.zc.mu.Unlock()
	if bt, ok := m.chain.(BlockTimer); ok && stale && tip > blockSamples {
		// Read outside the lock; a failure leaves the estimate as it was.
		first, err1 := bt.BlockTime(ctx, tip-blockSamples)
		last, err2 := bt.BlockTime(ctx, tip)
		if err1 == nil && err2 == nil {
			m.zc.mu.Lock()
			b := &m.zc.blocks
			b.headerTip, b.headerLast = tip, last
			b.headerIv = max(last.Sub(first)/blockSamples, time.Second)
			m.zc.mu.Unlock()
		}
	}
	m.zc.mu.Lock()
	defer m.zc.mu.Unlock()
	return m.zc.blocks.next(m.now(), def)
}

// ChannelID is the ID of the channel o opens: its funding outpoint.
func (o *OpenRequest) ChannelID() (string, error) {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(o.FundingTx)); err != nil {
		return "", fmt.Errorf("%w: funding tx: %v", ErrMalformed, err)
	}
	return wire.NewOutPoint(ptr(tx.TxHash()), o.Vout).String(), nil
}
