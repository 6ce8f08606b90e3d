package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// Payouts to an external address that the node can still fee-bump
// (DESIGN.md §7, docs/payout.md).
//
// A close pays the seller's share to the script fixed when the buyer opened
// the channel. When that script is an external payout_address (or an xpub
// child) the node holds no key for it: a close stuck at its fee (fixed at
// open: the buyer signs every close at that fee) could not be bumped by a
// child. With payment.payout_sweep (the default) the seller hands the buyer
// a script of its own instead: P2WPKH of a per-channel key of the keyring
// (FamilyPayoutHold, index HoldIndex, used in order as xpub children are, so
// a seed restore finds them). The node can then
//
//   - bump a stuck close by a child it signs with that key (bump.go), and
//     lend wallet coins to the child when the output is too small to pay;
//   - forward confirmed close outputs to the payout address (or the next
//     xpub child) in one batched sweep: several channels' outputs in one
//     transaction, which the node alone signs and so bumps by replacement
//     (BIP 125) like a refund, BumpAfter blocks after each version.
//
// A sweep runs once the outputs waiting hold payment.sweep_at, or the
// oldest has waited payment.sweep_after, and only when it pays at least its
// own fee. Outputs not worth their input (68 vB at the sweep's rate) wait.
//
// Crash safety: every channel whose output a sweep spends records the whole
// sweep (its inputs and the signed transaction) before it is broadcast, and
// bumps are recorded likewise. After a crash mid-way the version with the
// highest count among the records is the sweep, written back to the others
// (repairSweeps); no output is ever put in two different sweeps, and two
// versions of one sweep spend the same outputs, so at most one confirms:
// nothing is paid twice.

// FamilyPayoutHold keys are the per-channel keys a seller's swept closes
// pay (stored in channel records by number: never renumber).
const FamilyPayoutHold KeyFamily = 3

// Sweep defaults and sizes.
const (
	DefaultSweepAt    = 50_000
	DefaultSweepAfter = 24 * time.Hour
	// SweepInputVB is a P2WPKH input's virtual size (41 bytes + a 108
	// byte witness / 4); SweepBaseVB a sweep's own (version, counts,
	// locktime, segwit marker: 10.5; one P2WPKH output: 31).
	SweepInputVB = 68
	SweepBaseVB  = 42
	// sweepMaxInputs bounds one sweep (standardness: 100 kvB).
	sweepMaxInputs = 200
	// sweepTarget is the block target of a sweep's first fee rate: it is
	// not urgent, and bumped if it stays unconfirmed.
	sweepTarget = 12
)

// SweepInput is one channel's output a sweep spends.
type SweepInput struct {
	Channel  string `json:"channel"`
	OutPoint string `json:"outpoint"`
	Value    int64  `json:"value"`
	Hold     uint32 `json:"hold"`
}

// SweepInfo is a batched sweep as each channel whose output it spends
// records it.
type SweepInfo struct {
	// ID is the txid of the sweep's first version: the same in every
	// channel of the batch, through every bump.
	ID   string `json:"id"`
	Txid string `json:"txid"`
	Tx   []byte `json:"tx"`
	// PayTo is the payout script; Inputs every output the sweep spends.
	PayTo  []byte       `json:"pay_to"`
	Inputs []SweepInput `json:"inputs"`
	// Fee is the current version's fee; Since, Rate, Count, Replaced and
	// Stuck as in Bump.
	Fee      int64    `json:"fee"`
	Since    int32    `json:"since"`
	Rate     int64    `json:"rate"`
	Count    int      `json:"count,omitempty"`
	Replaced []string `json:"replaced,omitempty"`
	Stuck    string   `json:"stuck,omitempty"`
	// Confirmed is set once the sweep has payment.confirmations.
	Confirmed bool `json:"confirmed,omitempty"`
}

func (s *SweepInfo) clone() *SweepInfo {
	if s == nil {
		return nil
	}
	d := *s
	d.Tx = bytes.Clone(s.Tx)
	d.PayTo = bytes.Clone(s.PayTo)
	d.Inputs = slices.Clone(s.Inputs)
	d.Replaced = slices.Clone(s.Replaced)
	return &d
}

// total is what the sweep's inputs hold.
func (s *SweepInfo) total() int64 {
	var t int64
	for _, in := range s.Inputs {
		t += in.Value
	}
	return t
}

// input is what channel id's output in the sweep holds.
func (s *SweepInfo) input(id string) int64 {
	for _, in := range s.Inputs {
		if in.Channel == id {
			return in.Value
		}
	}
	return 0
}

// FeeShare is channel id's part of the sweep's fee (pro rata to its
// output; the last input takes the rounding).
func (s *SweepInfo) FeeShare(id string) int64 {
	t := s.total()
	if t == 0 {
		return 0
	}
	var given int64
	for i, in := range s.Inputs {
		share := s.Fee * in.Value / t
		if i == len(s.Inputs)-1 {
			share = s.Fee - given
		}
		if in.Channel == id {
			return share
		}
		given += share
	}
	return 0
}

func (c *Config) validateSweep() error {
	if c.SweepAt < 0 {
		return fmt.Errorf("sweep_at: %d is negative (0 turns the amount trigger off)", c.SweepAt)
	}
	if c.SweepAfter < 0 {
		return fmt.Errorf("sweep_after: %s is negative (0 turns the time trigger off)", c.SweepAfter)
	}
	return nil
}

// sweeping reports whether new channels' closes pay a hold key and are
// swept on to the payout address.
func (m *Manager) sweeping() bool {
	return m.cfg.PayoutSweep && (m.cfg.PayoutAddress != "" || m.cfg.PayoutXpub != "")
}

// holdScript is the P2WPKH script of FamilyPayoutHold key i.
func (m *Manager) holdScript(i uint32) ([]byte, error) {
	k, err := m.keys.Key(FamilyPayoutHold, i)
	if err != nil {
		return nil, err
	}
	return p2wpkhScript(k.PubKey().SerializeCompressed()), nil
}

func p2wpkhScript(pub []byte) []byte {
	return append([]byte{txscript.OP_0, txscript.OP_DATA_20}, btcutil.Hash160(pub)...)
}

// nextHold is the hold key the next channel's close pays: the one after the
// highest a channel uses (0 first). Two buyers opening at once may share one.
func (m *Manager) nextHold() uint32 {
	next := uint32(0)
	m.chans.each(func(_ string, c *Channel) {
		if c.HoldIndex != nil && *c.HoldIndex+1 > next {
			next = *c.HoldIndex + 1
		}
	})
	return next
}

// holdIndexOf finds s among the hold keys a channel may pay (up to
// payoutGap past the next one handed out).
func (m *Manager) holdIndexOf(s []byte) (uint32, bool) {
	if !isP2WPKH(s) {
		return 0, false
	}
	next := m.nextHold()
	for i := uint32(0); i < next+payoutGap; i++ {
		own, err := m.holdScript(i)
		if err != nil {
			return 0, false
		}
		if bytes.Equal(own, s) {
			return i, true
		}
	}
	return 0, false
}

// signOwn signs input idx of tx spending pkScript: with c's hold key when
// it is that key's script, else with the wallet.
func (m *Manager) signOwn(c *Channel, tx *wire.MsgTx, idx int, pkScript []byte, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	if c.HoldIndex != nil {
		if s, err := m.holdScript(*c.HoldIndex); err == nil && bytes.Equal(s, pkScript) {
			return m.signHold(tx, idx, *c.HoldIndex, amount, prevs)
		}
	}
	if m.signer == nil {
		return nil, fmt.Errorf("sign: %w: no wallet", ErrNotOurs)
	}
	return m.signer.SignOutput(tx, idx, pkScript, amount, prevs)
}

func (m *Manager) signHold(tx *wire.MsgTx, idx int, hold uint32, amount int64, prevs txscript.PrevOutputFetcher) (wire.TxWitness, error) {
	k, err := m.keys.Key(FamilyPayoutHold, hold)
	if err != nil {
		return nil, err
	}
	s := p2wpkhScript(k.PubKey().SerializeCompressed())
	return txscript.WitnessSignature(tx, txscript.NewTxSigHashes(tx, prevs), idx, amount, s, txscript.SigHashAll, k, true)
}

// sweepTo is the script the next sweep pays: the payout address, the next
// xpub child, or (payouts to the node's wallet) a wallet address.
func (m *Manager) sweepTo(ctx context.Context) ([]byte, error) {
	switch {
	case m.cfg.PayoutXpub != "":
		i, err := m.payoutIndex()
		if err != nil {
			return nil, err
		}
		return m.cfg.PayoutScript(i)
	case m.cfg.PayoutAddress != "":
		return m.cfg.PayoutScript(0)
	case m.fund != nil:
		return m.fund.NewScript(ctx)
	}
	return nil, errors.New("sweep: no payout address and no wallet")
}

// holdOutput is the output of c's confirmed close the next sweep spends:
// the close's own while unspent, or, once a CPFP child of ours spending it
// is in a block, that child's (whichever version was mined); ok is false
// while a child is unconfirmed.
func (m *Manager) holdOutput(ctx context.Context, c *Channel) (in SweepInput, ok bool, err error) {
	var parent wire.MsgTx
	if err := parent.Deserialize(bytes.NewReader(c.SpendTx)); err != nil || len(parent.TxOut) == 0 {
		return in, false, nil
	}
	op := wire.OutPoint{Hash: parent.TxHash(), Index: 0}
	in = SweepInput{Channel: c.ID, Hold: *c.HoldIndex, OutPoint: op.String(), Value: parent.TxOut[0].Value}
	if c.Bump == nil || len(c.Bump.ChildTx) == 0 {
		return in, true, nil // no child was ever made
	}
	child, err := SpendOfScript(ctx, m.chain, op, c.SellerScript, c.OpenHeight-6)
	if err != nil || child == nil {
		return in, err == nil, err
	}
	id := child.TxHash()
	confs, err := TxConfirmations(ctx, m.chain, id, c.SellerScript, c.OpenHeight-6)
	if err != nil || confs < 1 || len(child.TxOut) == 0 || !bytes.Equal(child.TxOut[0].PkScript, c.SellerScript) {
		return in, false, err
	}
	in.OutPoint, in.Value = wire.OutPoint{Hash: id, Index: 0}.String(), child.TxOut[0].Value
	return in, true, nil
}

// sweepable is the seller's closed channels whose close (ours) paid a hold
// key.
func (m *Manager) sweepable() []*Channel {
	var out []*Channel
	m.chans.each(func(_ string, c *Channel) {
		if c.Role != RoleSeller || c.HoldIndex == nil || c.State != StateClosed {
			return
		}
		if tx, ok := ownSpend(c); ok && tx.TxHash().String() == c.SpendTxid {
			out = append(out, c.clone())
		}
	})
	slices.SortFunc(out, func(a, b *Channel) int { return a.Updated.Compare(b.Updated) })
	return out
}

// Sweeps advances the batched sweeps at tip: it repairs records a crash
// left half-written, follows each sweep to its confirmations (bumping it by
// replacement when it stays unconfirmed), and starts a new sweep of the
// outputs waiting once sweep_at or sweep_after says so. Tick calls it.
func (m *Manager) Sweeps(ctx context.Context, tip int32) error {
	chans := m.sweepable()
	if len(chans) == 0 {
		return nil
	}
	groups, err := m.repairSweeps(chans)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range groups {
		if s.Confirmed {
			continue
		}
		if err := m.followSweep(ctx, s, tip); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.startSweep(ctx, tip); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// repairSweeps returns every sweep (its latest version) and writes it to
// each channel it spends from that does not hold that version yet.
func (m *Manager) repairSweeps(chans []*Channel) (map[string]*SweepInfo, error) {
	groups := map[string]*SweepInfo{}
	for _, c := range chans {
		if s := c.Sweep; s != nil {
			if g := groups[s.ID]; g == nil || s.Count > g.Count || s.Confirmed && !g.Confirmed && s.Count == g.Count {
				groups[s.ID] = s
			}
		}
	}
	var errs []error
	for _, s := range groups {
		for _, in := range s.Inputs {
			cur := m.chans.get(in.Channel)
			if cur == nil || cur.Sweep != nil && cur.Sweep.ID == s.ID && cur.Sweep.Count == s.Count && cur.Sweep.Txid == s.Txid && cur.Sweep.Confirmed == s.Confirmed {
				continue
			}
			if err := m.setSweep(in.Channel, s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return groups, errors.Join(errs...)
}

// setSweep records s in channel id.
func (m *Manager) setSweep(id string, s *SweepInfo) error {
	cs, c := m.chans.lock(id)
	if cs == nil {
		return fmt.Errorf("sweep: channel %s: %w", id, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if c.Sweep != nil && c.Sweep.ID != s.ID && !c.Sweep.Confirmed {
		// Never: an output goes into one sweep only. Say so.
		m.log.Warn("channel is in two sweeps", "channel", id, "sweep", c.Sweep.ID, "other", s.ID)
	}
	next := c.clone()
	next.Sweep = s.clone()
	return m.persist(cs, next)
}

// setSweepAll records s in every channel it spends from (before a
// broadcast).
func (m *Manager) setSweepAll(s *SweepInfo) error {
	for _, in := range s.Inputs {
		if err := m.setSweep(in.Channel, s); err != nil {
			return err
		}
	}
	return nil
}

// followSweep checks one sweep's confirmations and bumps it when due.
func (m *Manager) followSweep(ctx context.Context, s *SweepInfo, tip int32) error {
	h, err := chainHash(s.Txid)
	if err != nil {
		return err
	}
	confs, err := TxConfirmations(ctx, m.chain, h, s.PayTo, s.Since-6)
	if err != nil {
		return fmt.Errorf("sweep %s: %w", s.Txid, err)
	}
	if confs < 0 {
		// An earlier version may be the one that confirmed.
		for _, r := range s.Replaced {
			rh, err := chainHash(r)
			if err != nil {
				continue
			}
			if n, err := TxConfirmations(ctx, m.chain, rh, s.PayTo, s.Since-6); err == nil && n > 0 {
				next := s.clone()
				next.Txid, confs = r, n
				m.log.Info("sweep: an earlier version confirmed", "sweep", s.ID, "txid", r)
				if err := m.setSweepAll(next); err != nil {
					return err
				}
				s = next
				break
			}
		}
	}
	switch {
	case confs >= m.cfg.Confirmations:
		next := s.clone()
		next.Confirmed = true
		if err := m.setSweepAll(next); err != nil {
			return err
		}
		m.log.Info("sweep confirmed: earnings reached the payout address", "sweep", s.ID, "txid", s.Txid,
			"outputs", len(s.Inputs), "paid_sat", s.total()-s.Fee, "fee_sat", s.Fee)
		return nil
	case confs > 0:
		return nil
	case confs < 0:
		var tx wire.MsgTx
		if err := tx.Deserialize(bytes.NewReader(s.Tx)); err != nil {
			return fmt.Errorf("sweep %s: %w", s.ID, err)
		}
		if err := m.chain.Broadcast(ctx, &tx); err != nil {
			if m.dropSweep(ctx, s) {
				return nil
			}
			return fmt.Errorf("sweep %s: rebroadcast: %w", s.ID, err)
		}
		return nil
	}
	if tip-s.Since < m.cfg.BumpAfter {
		return nil
	}
	rate := min(max(s.Rate+s.Rate/2, s.Rate+1, m.cfg.FeeRate(ctx, m.chain, 2)), m.cfg.MaxFeeRate)
	if rate <= s.Rate {
		return m.sweepStuck(s, fmt.Sprintf("at %d sat/vB, the max_fee_rate", s.Rate))
	}
	tx, fee, err := m.buildSweep(s.Inputs, s.PayTo, rate)
	if err != nil {
		return m.sweepStuck(s, err.Error())
	}
	next := s.clone()
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return err
	}
	if !slices.Contains(next.Replaced, s.Txid) {
		next.Replaced = append(next.Replaced, s.Txid)
	}
	next.Tx, next.Txid, next.Fee = raw.Bytes(), tx.TxHash().String(), fee
	next.Since, next.Rate, next.Stuck = tip, rate, ""
	next.Count++
	if err := m.setSweepAll(next); err != nil {
		return fmt.Errorf("bump sweep %s: %w", s.ID, err)
	}
	if err := m.chain.Broadcast(ctx, tx); err != nil {
		return fmt.Errorf("bump sweep %s: %w", s.ID, err)
	}
	m.log.Info("sweep fee bumped by replacement", "sweep", s.ID, "replaced", s.Txid, "txid", next.Txid, "rate_sat_vb", rate, "fee", fee)
	return nil
}

// dropSweep forgets a sweep that can never confirm: one of its inputs is
// spent by a transaction that is none of its versions. Its channels are
// swept again (from their outputs as they are now). Reports whether it did.
func (m *Manager) dropSweep(ctx context.Context, s *SweepInfo) bool {
	for _, in := range s.Inputs {
		op, err := wire.NewOutPointFromString(in.OutPoint)
		if err != nil {
			continue
		}
		hs, err := m.holdScript(in.Hold)
		if err != nil {
			continue
		}
		spend, err := SpendOfScript(ctx, m.chain, *op, hs, s.Since-144)
		if err != nil || spend == nil {
			continue
		}
		id := spend.TxHash().String()
		if id == s.Txid || slices.Contains(s.Replaced, id) {
			continue
		}
		m.log.Warn("sweep can never confirm: an input is spent by another transaction; its outputs are swept again",
			"sweep", s.ID, "input", in.OutPoint, "spent_by", id)
		for _, in := range s.Inputs {
			cs, c := m.chans.lock(in.Channel)
			if cs == nil {
				continue
			}
			if c.Sweep != nil && c.Sweep.ID == s.ID {
				next := c.clone()
				next.Sweep = nil
				if err := m.persist(cs, next); err != nil {
					m.log.Warn("drop sweep", "channel", c.ID, "err", err)
				}
			}
			cs.mu.Unlock()
		}
		return true
	}
	return false
}

func (m *Manager) sweepStuck(s *SweepInfo, why string) error {
	if s.Stuck == why {
		return nil
	}
	next := s.clone()
	next.Stuck = why
	m.log.Warn("unconfirmed sweep cannot be fee-bumped", "sweep", s.ID, "txid", s.Txid, "why", why)
	return m.setSweepAll(next)
}

// startSweep sweeps the outputs waiting when sweep_at or sweep_after says
// so.
func (m *Manager) startSweep(ctx context.Context, tip int32) error {
	var waiting []SweepInput
	var total int64
	var oldest time.Time
	rate := m.cfg.FeeRate(ctx, m.chain, sweepTarget)
	for _, c := range m.sweepable() {
		if c.Sweep != nil {
			continue
		}
		in, ok, err := m.holdOutput(ctx, c)
		if err != nil {
			return err
		}
		if !ok || in.Value <= rate*SweepInputVB {
			continue // not known yet, or not worth its input: waits
		}
		waiting = append(waiting, in)
		total += in.Value
		if oldest.IsZero() || c.Updated.Before(oldest) {
			oldest = c.Updated
		}
		if len(waiting) == sweepMaxInputs {
			break
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	due := m.cfg.SweepAt == 0 && m.cfg.SweepAfter == 0 ||
		m.cfg.SweepAt > 0 && total >= m.cfg.SweepAt ||
		m.cfg.SweepAfter > 0 && m.now().Sub(oldest) >= m.cfg.SweepAfter
	if !due {
		return nil
	}
	payTo, err := m.sweepTo(ctx)
	if err != nil {
		return err
	}
	tx, fee, err := m.buildSweep(waiting, payTo, rate)
	if err != nil {
		m.log.Debug("sweep not made", "outputs", len(waiting), "total_sat", total, "err", err)
		return nil
	}
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		return err
	}
	s := &SweepInfo{ID: tx.TxHash().String(), Txid: tx.TxHash().String(), Tx: raw.Bytes(), PayTo: payTo,
		Inputs: waiting, Fee: fee, Since: tip, Rate: rate}
	// Recorded in every channel first: a crash after the broadcast finds it.
	if err := m.setSweepAll(s); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if err := m.chain.Broadcast(ctx, tx); err != nil {
		return fmt.Errorf("sweep %s: %w", s.ID, err)
	}
	m.log.Info("sweep broadcast", "sweep", s.ID, "outputs", len(waiting), "total_sat", total, "fee_sat", fee,
		"rate_sat_vb", rate, "pays_sat", total-fee)
	return nil
}

// buildSweep signs a sweep of ins paying payTo at rate; refused when the
// sweep would pay less than its fee, or beyond the fee bounds.
func (m *Manager) buildSweep(ins []SweepInput, payTo []byte, rate int64) (*wire.MsgTx, int64, error) {
	tx := wire.NewMsgTx(2)
	prevs := txscript.NewMultiPrevOutFetcher(nil)
	var total int64
	for _, in := range ins {
		op, err := wire.NewOutPointFromString(in.OutPoint)
		if err != nil {
			return nil, 0, fmt.Errorf("sweep input %q: %w", in.OutPoint, err)
		}
		s, err := m.holdScript(in.Hold)
		if err != nil {
			return nil, 0, err
		}
		txin := wire.NewTxIn(op, nil, nil)
		txin.Sequence = bumpSequence
		tx.AddTxIn(txin)
		prevs.AddPrevOut(*op, wire.NewTxOut(in.Value, s))
		total += in.Value
	}
	tx.AddTxOut(wire.NewTxOut(total, payTo))
	sign := func() error {
		for i, in := range ins {
			w, err := m.signHold(tx, i, in.Hold, in.Value, prevs)
			if err != nil {
				return fmt.Errorf("sign sweep: %w", err)
			}
			tx.TxIn[i].Witness = w
		}
		return nil
	}
	if err := sign(); err != nil {
		return nil, 0, err
	}
	vs := VSize(tx) + int64(len(ins)) // a signature may be a byte longer
	fee := rate * vs
	if err := m.cfg.checkFee(fee, vs); err != nil {
		return nil, 0, err
	}
	if total-fee < fee || IsDust(payTo, total-fee) {
		return nil, 0, fmt.Errorf("a sweep of %d sat at %d sat/vB would pay %d sat for a fee of %d", total, rate, max(total-fee, 0), fee)
	}
	tx.TxOut[0].Value = total - fee
	if err := sign(); err != nil {
		return nil, 0, err
	}
	for i, in := range ins {
		s, _ := m.holdScript(in.Hold)
		if err := verifyInput(tx, i, s, in.Value, prevs); err != nil {
			return nil, 0, fmt.Errorf("sweep: %w", err)
		}
	}
	return tx, fee, nil
}

// sweepCost is what sweeping c's close output will cost at its close's fee
// rate (Holdings' estimate; the sweep's real rate is the chain's then).
func (c *Channel) sweepCost() int64 {
	return max(1, ceilDiv(c.CloseFee, 171)) * SweepInputVB
}

// Unswept reports whether c's close paid a hold key of ours and no
// confirmed sweep has forwarded it yet: the seed still holds that money.
func (c *Channel) Unswept() bool {
	if c.Role != RoleSeller || c.HoldIndex == nil || c.State != StateClosed || c.Sweep != nil && c.Sweep.Confirmed {
		return false
	}
	tx, ok := ownSpend(c)
	return ok && tx.TxHash().String() == c.SpendTxid
}

// sweepTxid is c's sweep's current txid ("" with none).
func sweepTxid(c *Channel) string {
	if c.Sweep == nil {
		return ""
	}
	return c.Sweep.Txid
}
