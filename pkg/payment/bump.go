package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// Fee bumping of the spends this node broadcasts (DESIGN.md §7).
//
// A close the seller broadcasts spends the channel through the IF branch
// with the buyer's signature, made with SIGHASH_ALL over that exact
// transaction: its fee (Channel.CloseFee, fixed at open) cannot be raised
// by the seller alone, so a close is bumped by CPFP: a child spends the
// seller's output of the close (the payout output) and pays for both. That
// needs the key of the payout script: the node's wallet holds it when
// payouts go to the wallet, and the keyring's hold key when payouts to an
// external address are swept (sweep.go, the default); a close paying an
// external payout_address or xpub directly (payout_sweep off) cannot be
// bumped by the node (Bump.Stuck says so). When the payout output is too
// small to pay the child, the child also spends wallet coins (Coins), keeps
// the payout output whole and sends the change back to the wallet.
//
// A refund the buyer signs alone (the CLTV branch), so it is bumped by
// replacement (BIP 125: the refund signals it with its input's sequence):
// the same refund, re-signed with a higher fee, replaces the one in the
// mempool. No second transaction, no output needed.
//
// Each spend not confirmed BumpAfter blocks after its broadcast (or its last
// bump) is bumped to max(the estimate for the next blocks, 1.5 times the
// last rate, last rate + 1), never above max_fee_rate and max_fee. A close
// goes straight to max_fee_rate once the channel's expiry is within
// 2*BumpAfter blocks: from the expiry on the buyer can refund, and a close
// still in the mempool then races the refund. The bump state is persisted
// with the channel before anything is broadcast, so a restart continues it
// (and rebroadcasts the child).

// Bump is the fee bumping of a channel's close or refund, persisted in the
// channel record.
type Bump struct {
	// Since is the height at which the current version (first broadcast or
	// latest bump) was broadcast: the next bump is due BumpAfter blocks
	// later.
	Since int32 `json:"since"`
	// Rate is the effective fee rate (sat/vB) of the current version: the
	// refund's own, or the close and its child's together.
	Rate int64 `json:"rate"`
	// Count is how many bumps were broadcast.
	Count int `json:"count,omitempty"`
	// ChildTx is the seller's latest CPFP child of the close.
	ChildTx []byte `json:"child_tx,omitempty"`
	// Replaced are the txids of earlier refund versions: one of them may
	// still confirm instead.
	Replaced []string `json:"replaced,omitempty"`
	// Stuck says why the spend cannot be bumped (further); empty while it
	// can.
	Stuck string `json:"stuck,omitempty"`
	// Coins are the wallet coins the child spends too (when the payout
	// output alone cannot pay it), Change where their rest goes, and Fee
	// the child's fee.
	Coins  []Coin `json:"coins,omitempty"`
	Change []byte `json:"change,omitempty"`
	Fee    int64  `json:"fee,omitempty"`
}

func (b *Bump) clone() *Bump {
	if b == nil {
		return nil
	}
	d := *b
	d.ChildTx = bytes.Clone(b.ChildTx)
	d.Replaced = slices.Clone(b.Replaced)
	d.Coins = slices.Clone(b.Coins)
	d.Change = bytes.Clone(b.Change)
	return &d
}

// OutputSigner signs inputs that spend outputs of the node's wallet: the
// seller's CPFP child spends its payout output of a close with it.
type OutputSigner interface {
	// SignOutput returns the witness of input idx of tx, which spends an
	// output paying pkScript of value amount; prevs gives every input's
	// previous output (segwit v0 sighashes need only this one, taproot
	// all). ErrNotOurs when the wallet has no key for pkScript.
	SignOutput(tx *wire.MsgTx, idx int, pkScript []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error)
}

// ErrNotOurs is SignOutput's answer for a script the wallet cannot spend.
var ErrNotOurs = errors.New("output is not the wallet's")

// bumpSequence signals BIP 125 replaceability, so a child can be replaced
// by a bigger one.
const bumpSequence = wire.MaxTxInSequenceNum - 2

// ownSpend reports whether the channel's recorded spend is ours (the close
// or refund we broadcast, or an earlier version of our refund) and returns
// the transaction we hold.
func ownSpend(c *Channel) (*wire.MsgTx, bool) {
	if len(c.SpendTx) == 0 || c.SpendTxid == "" {
		return nil, false
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(c.SpendTx)); err != nil {
		return nil, false
	}
	if tx.TxHash().String() == c.SpendTxid {
		return &tx, true
	}
	if c.Bump != nil && slices.Contains(c.Bump.Replaced, c.SpendTxid) {
		return &tx, true
	}
	return nil, false
}

// bumpSpend is the Closing step for a spend of ours with no confirmation at
// tip: it starts the bump clock, rebroadcasts the child, and bumps once the
// spend is overdue.
func (m *Manager) bumpSpend(ctx context.Context, id string, tip int32) error {
	cs, c := m.chans.lock(id)
	if cs == nil {
		return fmt.Errorf("bump %s: %w", id, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if c.State != StateClosing {
		return nil
	}
	tx, ok := ownSpend(c)
	if !ok {
		return nil
	}
	parentFee := c.Capacity - sumOut(tx)
	if c.Bump == nil {
		next := c.clone()
		next.Bump = &Bump{Since: tip, Rate: ceilDiv(parentFee, VSize(tx))}
		return m.persist(cs, next)
	}
	if len(c.Bump.ChildTx) > 0 {
		var child wire.MsgTx
		if err := child.Deserialize(bytes.NewReader(c.Bump.ChildTx)); err == nil {
			if err := m.chain.Broadcast(ctx, &child); err != nil {
				m.log.Warn("fee bump child rebroadcast refused", "channel", id, "txid", child.TxHash(), "err", err)
			}
		}
	}
	if tip-c.Bump.Since < m.cfg.BumpAfter || c.Bump.Stuck != "" && c.Bump.Rate >= m.cfg.MaxFeeRate {
		return nil
	}
	rate := m.bumpRate(ctx, c, tip)
	if rate <= c.Bump.Rate {
		return m.stuck(cs, c, fmt.Sprintf("at %d sat/vB, the max_fee_rate", c.Bump.Rate))
	}
	switch c.Role {
	case RoleBuyer:
		return m.replaceRefund(ctx, cs, c, tip, rate)
	case RoleSeller:
		return m.payForClose(ctx, cs, c, tx, tip, rate)
	}
	return nil
}

// bumpRate is the fee rate of the next bump of c (see the file comment).
func (m *Manager) bumpRate(ctx context.Context, c *Channel, tip int32) int64 {
	last := c.Bump.Rate
	rate := max(last+last/2, last+1, m.cfg.FeeRate(ctx, m.chain, 2))
	if c.Role == RoleSeller && int64(c.Expiry)-int64(tip) <= 2*int64(m.cfg.BumpAfter) {
		rate = m.cfg.MaxFeeRate
	}
	return min(rate, m.cfg.MaxFeeRate)
}

// stuck records (once) why the spend cannot be bumped. cs.mu is held.
func (m *Manager) stuck(cs *chanState, c *Channel, why string) error {
	if c.Bump.Stuck == why {
		return nil
	}
	next := c.clone()
	next.Bump.Stuck = why
	m.log.Warn("unconfirmed spend cannot be fee-bumped", "channel", c.ID, "txid", c.SpendTxid, "why", why)
	return m.persist(cs, next)
}

// replaceRefund re-signs the refund at rate and replaces the one in the
// mempool. cs.mu is held.
func (m *Manager) replaceRefund(ctx context.Context, cs *chanState, c *Channel, tip int32, rate int64) error {
	ws, pk, err := cs.x.scriptOf(c)
	if err != nil {
		return err
	}
	vs := refundVSize(ws, c.BuyerScript)
	fee := rate * vs
	if err := m.cfg.checkFee(fee, vs); err != nil {
		return m.stuck(cs, c, err.Error())
	}
	if IsDust(c.BuyerScript, c.Capacity-fee) {
		return m.stuck(cs, c, fmt.Sprintf("a refund at %d sat/vB would leave only dust", rate))
	}
	tx, err := c.refundTx(fee)
	if err != nil {
		return err
	}
	key, err := m.keys.Key(FamilyChannelBuyer, c.KeyIndex)
	if err != nil {
		return err
	}
	sig, err := SignInput(tx, 0, ws, c.Capacity, key)
	if err != nil {
		return fmt.Errorf("bump refund %s: %w", c.ID, err)
	}
	tx.TxIn[0].Witness = ChannelRefundWitness(ws, sig)
	if err := VerifyInput(tx, 0, pk, c.Capacity); err != nil {
		return fmt.Errorf("bump refund %s: %w", c.ID, err)
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return err
	}
	next := c.clone()
	old := c.SpendTxid
	if !slices.Contains(next.Bump.Replaced, old) {
		next.Bump.Replaced = append(next.Bump.Replaced, old)
	}
	next.SpendTx, next.SpendTxid = raw.Bytes(), tx.TxHash().String()
	next.Bump.Since, next.Bump.Rate, next.Bump.Stuck = tip, rate, ""
	next.Bump.Count++
	if err := m.persist(cs, next); err != nil {
		return fmt.Errorf("bump refund %s: %w", c.ID, err)
	}
	if err := m.chain.Broadcast(ctx, tx); err != nil {
		// Kept: the next step rebroadcasts it, or finds the version
		// that stayed in the mempool (Replaced) and bumps again.
		return fmt.Errorf("bump refund %s: %w", c.ID, err)
	}
	m.log.Info("refund fee bumped by replacement", "channel", c.ID, "replaced", old, "txid", next.SpendTxid, "rate_sat_vb", rate, "fee", fee)
	return nil
}

// payForClose broadcasts a child of the close that spends the seller's
// payout output and brings the pair to rate. When that output is too small
// to pay the child's fee, the child also spends wallet coins (Coins), with
// the change back to the wallet, and keeps the payout output whole.
// cs.mu is held.
func (m *Manager) payForClose(ctx context.Context, cs *chanState, c *Channel, parent *wire.MsgTx, tip int32, rate int64) error {
	if m.signer == nil && c.HoldIndex == nil {
		return m.stuck(cs, c, "no wallet to sign a child of the close")
	}
	if parent.TxHash().String() != c.SpendTxid || len(parent.TxOut) == 0 || !bytes.Equal(parent.TxOut[0].PkScript, c.SellerScript) {
		return nil
	}
	out := parent.TxOut[0]
	op := wire.OutPoint{Hash: parent.TxHash(), Index: 0}
	var coins []Coin // wallet coins: a replacement keeps those of the child it replaces
	var change []byte
	if c.Bump != nil {
		coins, change = slices.Clone(c.Bump.Coins), bytes.Clone(c.Bump.Change)
	}
	build := func() (*wire.MsgTx, *txscript.MultiPrevOutFetcher) {
		child := wire.NewMsgTx(2)
		prevs := txscript.NewMultiPrevOutFetcher(nil)
		in := wire.NewTxIn(&op, nil, nil)
		in.Sequence = bumpSequence
		child.AddTxIn(in)
		prevs.AddPrevOut(op, out)
		for _, k := range coins {
			in := wire.NewTxIn(&k.OutPoint, nil, nil)
			in.Sequence = bumpSequence
			child.AddTxIn(in)
			prevs.AddPrevOut(k.OutPoint, wire.NewTxOut(k.Value, k.PkScript))
		}
		child.AddTxOut(wire.NewTxOut(out.Value, c.SellerScript))
		if len(coins) > 0 {
			child.AddTxOut(wire.NewTxOut(0, change))
		}
		return child, prevs
	}
	sign := func(child *wire.MsgTx, prevs txscript.PrevOutputFetcher) error {
		wit, err := m.signOwn(c, child, 0, out.PkScript, out.Value, prevs)
		if err != nil {
			return err
		}
		child.TxIn[0].Witness = wit
		for i, k := range coins {
			if m.signer == nil {
				return fmt.Errorf("sign: %w: no wallet", ErrNotOurs)
			}
			if child.TxIn[i+1].Witness, err = m.signer.SignOutput(child, i+1, k.PkScript, k.Value, prevs); err != nil {
				return err
			}
		}
		return nil
	}
	parentFee, parentVS := c.Capacity-sumOut(parent), VSize(parent)
	// feeFor sizes the child signed (a first signature of the same shape)
	// and returns the fee that brings the pair to rate.
	feeFor := func(child *wire.MsgTx, prevs txscript.PrevOutputFetcher) (int64, int64, error) {
		if err := sign(child, prevs); err != nil {
			return 0, 0, err
		}
		childVS := VSize(child) + int64(len(child.TxIn)) // a signature may be a byte longer
		return max(rate*(parentVS+childVS)-parentFee, m.cfg.MinFeeRate*childVS), childVS, nil
	}
	child, prevs := build()
	fee, childVS, err := feeFor(child, prevs)
	if errors.Is(err, ErrNotOurs) {
		return m.stuck(cs, c, "the payout address is not the node wallet's: the close cannot be bumped by a child")
	}
	if err != nil {
		return fmt.Errorf("bump close %s: %w", c.ID, err)
	}
	var leased []Coin
	if len(coins) == 0 && IsDust(c.SellerScript, out.Value-fee) {
		// The payout output cannot pay the child: lend it wallet coins.
		if m.coins == nil || m.fund == nil || m.signer == nil {
			return m.stuck(cs, c, fmt.Sprintf("the payout output (%d sat) cannot pay a child at %d sat/vB, and no wallet lends coins", out.Value, rate))
		}
		if change == nil {
			if change, err = m.fund.NewScript(ctx); err != nil {
				return fmt.Errorf("bump close %s: change: %w", c.ID, err)
			}
		}
		// Enough for the fee with one more input and the change output.
		need := fee + rate*(SweepInputVB+31) + 2*DustP2WPKH
		if leased, err = m.coins.LeaseCoins(ctx, need, nil); err != nil {
			return m.stuck(cs, c, fmt.Sprintf("the payout output (%d sat) cannot pay a child at %d sat/vB, and the wallet cannot lend the rest: %v", out.Value, rate, err))
		}
		coins = leased
	}
	if len(coins) > 0 {
		child, prevs = build()
		if fee, childVS, err = feeFor(child, prevs); err != nil {
			m.release(leased)
			return fmt.Errorf("bump close %s: %w", c.ID, err)
		}
	}
	if err := m.cfg.checkFee(parentFee+fee, parentVS+childVS); err != nil {
		m.release(leased)
		return m.stuck(cs, c, err.Error())
	}
	if fee > m.cfg.MaxFee {
		m.release(leased)
		return m.stuck(cs, c, fmt.Sprintf("a child fee of %d sat exceeds max_fee %d", fee, m.cfg.MaxFee))
	}
	if len(coins) == 0 {
		child.TxOut[0].Value = out.Value - fee
	} else {
		var lent int64
		for _, k := range coins {
			lent += k.Value
		}
		if IsDust(change, lent-fee) {
			m.release(leased)
			// Lend afresh next time (more coins).
			next := c.clone()
			next.Bump.Coins, next.Bump.Change = nil, nil
			if err := m.persist(cs, next); err != nil {
				return err
			}
			return m.stuck(cs, c, fmt.Sprintf("the wallet coins lent (%d sat) cannot pay a child fee of %d sat", lent, fee))
		}
		child.TxOut[1].Value = lent - fee
	}
	if err := sign(child, prevs); err != nil {
		m.release(leased)
		return fmt.Errorf("bump close %s: %w", c.ID, err)
	}
	for i, in := range child.TxIn {
		p := prevs.FetchPrevOutput(in.PreviousOutPoint)
		if err := verifyInput(child, i, p.PkScript, p.Value, prevs); err != nil {
			m.release(leased)
			return fmt.Errorf("bump close %s: %w", c.ID, err)
		}
	}
	var raw bytes.Buffer
	if err := child.Serialize(&raw); err != nil {
		return err
	}
	next := c.clone()
	next.Bump.ChildTx = raw.Bytes()
	next.Bump.Coins, next.Bump.Change, next.Bump.Fee = coins, change, fee
	next.Bump.Since, next.Bump.Rate, next.Bump.Stuck = tip, rate, ""
	next.Bump.Count++
	if err := m.persist(cs, next); err != nil {
		m.release(leased)
		return fmt.Errorf("bump close %s: %w", c.ID, err)
	}
	if len(coins) > 0 {
		// Through the wallet, so that it counts its coins spent and
		// knows the change at once.
		if err := m.fund.PublishTx(ctx, child); err != nil {
			// Refused (its coins spent meanwhile, or the close and an
			// earlier child already mined): the earlier child stands.
			m.release(leased)
			if perr := m.persist(cs, c.clone()); perr != nil {
				m.log.Warn("fee bump", "channel", c.ID, "err", perr)
			}
			return fmt.Errorf("bump close %s: child %s: %w", c.ID, child.TxHash(), err)
		}
	} else if err := m.chain.Broadcast(ctx, child); err != nil {
		// Kept for a rebroadcast, unless the close was mined meanwhile
		// (with the earlier child): this one can then never be.
		if n, cerr := TxConfirmations(ctx, m.chain, parent.TxHash(), c.SellerScript, c.OpenHeight-6); cerr == nil && n > 0 {
			if perr := m.persist(cs, c.clone()); perr != nil {
				m.log.Warn("fee bump", "channel", c.ID, "err", perr)
			}
		}
		return fmt.Errorf("bump close %s: child %s: %w", c.ID, child.TxHash(), err)
	}
	m.log.Info("close fee bumped by a child", "channel", c.ID, "close", c.SpendTxid, "child", child.TxHash(),
		"rate_sat_vb", rate, "child_fee", fee, "close_fee", parentFee, "wallet_coins", len(coins))
	return nil
}

// release gives leased wallet coins back to the wallet's coin selection.
func (m *Manager) release(coins []Coin) {
	if len(coins) > 0 && m.coins != nil {
		m.coins.ReleaseCoins(coins)
	}
}

// BumpFee is what the latest CPFP child of c's close pays (on top of the
// close fee); 0 without one. A refund's replacement fee is its own, in
// SpendFee.
func (c *Channel) BumpFee() int64 {
	if c.Bump == nil || len(c.Bump.ChildTx) == 0 {
		return 0
	}
	if c.Bump.Fee > 0 {
		return c.Bump.Fee
	}
	var child wire.MsgTx
	if err := child.Deserialize(bytes.NewReader(c.Bump.ChildTx)); err != nil {
		return 0
	}
	var parent wire.MsgTx
	if err := parent.Deserialize(bytes.NewReader(c.SpendTx)); err != nil || len(parent.TxOut) == 0 {
		return 0
	}
	return parent.TxOut[0].Value - sumOut(&child)
}

func ceilDiv(a, b int64) int64 {
	if b <= 0 {
		return 0
	}
	return (a + b - 1) / b
}
