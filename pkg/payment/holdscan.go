package payment

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Recovering the outputs waiting at hold keys from the seed alone.
//
// A close paid to a FamilyPayoutHold key waits there until a sweep forwards
// it (sweep.go). The channel's record says which key; the static channel
// backup keeps that record until the sweep confirmed. A restore from the
// seed alone, into a fresh data dir, has neither: the node scans the chain
// for the hold keys' scripts instead, as a wallet restore scans for its
// addresses. Keys are tried in order from index 0, payoutGap past the
// highest one found paid (the gap limit of xpub children and of the
// wallet's own recovery window), from the wallet's birthday. Each output
// found unspent becomes a closed seller channel record marked Recovered,
// which the sweep then forwards to the payout address like any other.
//
// The scan runs once per seed (a durable counter named after the seed's
// first hold key records the height it reached), in the background so a
// long one never holds up the channels' ticks. A record is persisted before
// the sweep can spend its output, and a found output a record already holds
// (by its txid) is left alone, so nothing is swept twice.

// HeldOutput is an output a scan found paying one of its scripts.
type HeldOutput struct {
	Tx     *wire.MsgTx
	Index  uint32
	Height int32
	Script []byte
}

// OutputScanner is a Chain that can list the outputs paying given scripts
// in the blocks from a height to its tip.
type OutputScanner interface {
	OutputsTo(ctx context.Context, scripts [][]byte, from int32) (tip int32, found []HeldOutput, err error)
}

// outputsIn collects block's outputs paying any of scripts.
func outputsIn(blk *wire.MsgBlock, height int32, want map[string]bool, found []HeldOutput) []HeldOutput {
	for _, tx := range blk.Transactions {
		for i, o := range tx.TxOut {
			if want[string(o.PkScript)] {
				found = append(found, HeldOutput{Tx: tx, Index: uint32(i), Height: height, Script: o.PkScript})
			}
		}
	}
	return found
}

func scriptSet(scripts [][]byte) map[string]bool {
	want := make(map[string]bool, len(scripts))
	for _, s := range scripts {
		want[string(s)] = true
	}
	return want
}

// OutputsTo implements OutputScanner by reading every block from from to
// the tip (one RPC each: a one-time recovery).
func (b *BtcdChain) OutputsTo(ctx context.Context, scripts [][]byte, from int32) (int32, []HeldOutput, error) {
	tip, err := b.Tip(ctx)
	if err != nil {
		return 0, nil, err
	}
	want := scriptSet(scripts)
	var found []HeldOutput
	for h := max(from, 1); h <= tip; h++ {
		hash, err := await(ctx, func() (*chainhash.Hash, error) { return b.rpc.GetBlockHash(int64(h)) })
		if err != nil {
			return 0, nil, fmt.Errorf("block hash %d: %w", h, err)
		}
		blk, err := await(ctx, func() (*wire.MsgBlock, error) { return b.rpc.GetBlock(hash) })
		if err != nil {
			return 0, nil, fmt.Errorf("block %d: %w", h, err)
		}
		found = outputsIn(blk, h, want, found)
	}
	return tip, found, nil
}

// OutputsTo implements OutputScanner through the compact filters: only
// the blocks whose filter matches one of scripts are fetched.
func (n *NeutrinoChain) OutputsTo(ctx context.Context, scripts [][]byte, from int32) (int32, []HeldOutput, error) {
	tip, err := n.Tip(ctx)
	if err != nil {
		return 0, nil, err
	}
	want := scriptSet(scripts)
	var found []HeldOutput
	for h := max(from, 1); h <= tip; h++ {
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		hash, ok, err := n.filterMatches(h, scripts)
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			continue
		}
		blk, err := n.block(ctx, hash)
		if err != nil {
			return 0, nil, err
		}
		found = outputsIn(blk, h, want, found)
	}
	return tip, found, nil
}

// holdScanCounter is the durable counter recording the height (plus one)
// the hold-key scan of this seed reached.
func (m *Manager) holdScanCounter() (string, error) {
	s, err := m.holdScript(0)
	if err != nil {
		return "", err
	}
	return "holdscan-" + hex.EncodeToString(s[2:10]), nil
}

// holdScanState is the background scan's guard (one at a time).
type holdScanState struct {
	running atomic.Bool
	done    atomic.Bool
	newSeed atomic.Bool // ManagerConfig.NewSeed, until a restore replaces the seed
}

// maybeRecoverHolds starts the seed's hold-key scan in the background
// unless it ran already (or cannot: no scan-from height, or a chain that
// cannot list outputs).
func (m *Manager) maybeRecoverHolds(ctx context.Context) {
	if m.holdFrom == nil || m.holdScan.done.Load() || !m.holdScan.running.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer m.holdScan.running.Store(false)
		began := time.Now()
		n, tip, err := m.RecoverHolds(ctx)
		switch {
		case errors.Is(err, errHoldScanDone):
			m.holdScan.done.Store(true)
		case err != nil:
			if ctx.Err() == nil {
				m.log.Warn("hold keys: scan for outputs to sweep failed (retried on the next block)", "err", err)
			}
		default:
			m.holdScan.done.Store(true)
			m.log.Info("hold keys: scanned the chain for outputs waiting to be swept", "recovered", n, "to", tip,
				"took", time.Since(began).Round(time.Millisecond))
		}
	}()
}

var errHoldScanDone = errors.New("hold keys scanned already")

// RecoverHolds scans the chain from the wallet's birthday for outputs
// paying the seed's hold keys and records each one still unspent as a
// recovered closed channel the sweep forwards. It returns how many it
// recorded and the tip it scanned to; errHoldScanDone when this seed's
// scan ran already.
func (m *Manager) RecoverHolds(ctx context.Context) (int, int32, error) {
	cs, ok := m.store.(CounterStore)
	sc, ok2 := m.chain.(OutputScanner)
	if !ok || !ok2 || m.holdFrom == nil {
		return 0, 0, fmt.Errorf("hold keys: %w: no counters or no output scan", errHoldScanDone)
	}
	name, err := m.holdScanCounter()
	if err != nil {
		return 0, 0, err
	}
	counters, err := cs.Counters()
	if err != nil {
		return 0, 0, err
	}
	if counters[name] > 0 {
		return 0, 0, errHoldScanDone
	}
	if m.holdScan.newSeed.Load() {
		// Made at this start: nothing was ever paid to its hold keys.
		tip, err := m.chain.Tip(ctx)
		if err != nil {
			return 0, 0, err
		}
		if err := cs.RaiseIndex(name, uint32(tip)+1); err != nil {
			return 0, tip, err
		}
		return 0, tip, fmt.Errorf("hold keys: %w: a seed made at this start", errHoldScanDone)
	}
	from, err := m.holdFrom(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("hold keys: scan height: %w", err)
	}
	// Keys 0..hi-1 are scanned; hi grows to payoutGap past the highest
	// found paid, scanning only the new keys.
	index := map[string]uint32{}
	var found []HeldOutput
	var tip int32
	scanned, hi := uint32(0), uint32(payoutGap)
	for scanned < hi {
		var scripts [][]byte
		for i := scanned; i < hi; i++ {
			s, err := m.holdScript(i)
			if err != nil {
				return 0, 0, err
			}
			index[string(s)] = i
			scripts = append(scripts, s)
		}
		t, more, err := sc.OutputsTo(ctx, scripts, from)
		if err != nil {
			return 0, 0, fmt.Errorf("hold keys %d..%d: %w", scanned, hi-1, err)
		}
		if tip == 0 || t < tip {
			tip = t
		}
		found = append(found, more...)
		scanned = hi
		for _, f := range more {
			hi = max(hi, index[string(f.Script)]+1+payoutGap)
		}
	}
	n := 0
	for _, f := range found {
		ok, err := m.recoverHold(ctx, f, index[string(f.Script)])
		if err != nil {
			return n, tip, err
		}
		if ok {
			n++
		}
	}
	if err := cs.RaiseIndex(name, uint32(tip)+1); err != nil {
		return n, tip, err
	}
	return n, tip, nil
}

// recoverHold records f, an output paying hold key i, as a recovered
// closed channel unless it is spent or a record holds it already.
func (m *Manager) recoverHold(ctx context.Context, f HeldOutput, i uint32) (bool, error) {
	txid := f.Tx.TxHash()
	known := false
	m.chans.each(func(_ string, c *Channel) {
		if c.SpendTxid == txid.String() || c.Bump != nil && len(c.Bump.ChildTx) > 0 && childTxid(c) == txid.String() {
			known = true
		}
	})
	if known {
		return false, nil
	}
	if f.Index != 0 {
		// Our closes and their children pay the hold key at output 0:
		// anything else is no close of ours.
		m.log.Warn("hold keys: an output at a hold key that is no close of ours: not swept", "outpoint", wire.OutPoint{Hash: txid, Index: f.Index}, "hold", i)
		return false, nil
	}
	op := wire.OutPoint{Hash: txid, Index: 0}
	spend, err := SpendOfScript(ctx, m.chain, op, f.Script, f.Height)
	if err != nil {
		return false, fmt.Errorf("hold key %d output %s: %w", i, op, err)
	}
	if spend != nil {
		return false, nil // swept (or bumped by a child, found on its own)
	}
	var raw bytes.Buffer
	if err := f.Tx.Serialize(&raw); err != nil {
		return false, err
	}
	id := f.Tx.TxIn[0].PreviousOutPoint.String()
	now := m.now().UTC()
	c := &Channel{
		ID: id, Role: RoleSeller, State: StateClosed, Capacity: f.Tx.TxOut[0].Value, Paid: f.Tx.TxOut[0].Value,
		SellerScript: bytes.Clone(f.Script), OpenHeight: f.Height, SpendTx: raw.Bytes(), SpendTxid: txid.String(),
		HoldIndex: ptr(i), Recovered: true, Created: now,
	}
	cs := m.chans.create(id)
	defer cs.mu.Unlock()
	if cs.rec != nil {
		return false, nil
	}
	if err := m.persist(cs, c); err != nil {
		return false, err
	}
	m.log.Info("hold keys: recovered an output waiting to be swept", "channel", id, "outpoint", op, "value_sat", c.Paid, "hold", i, "height", f.Height)
	return true, nil
}

// childTxid is the txid of c's CPFP child ("" with none).
func childTxid(c *Channel) string {
	var tx wire.MsgTx
	if c.Bump == nil || tx.Deserialize(bytes.NewReader(c.Bump.ChildTx)) != nil {
		return ""
	}
	return tx.TxHash().String()
}

// HeldBy reports whether keys hold c's close output: c's close paid hold
// key HoldIndex of keys' seed (a wallet restore of the same seed keeps it
// sweepable).
func (c *Channel) HeldBy(keys *Keyring) bool {
	if c.HoldIndex == nil {
		return false
	}
	k, err := keys.Key(FamilyPayoutHold, *c.HoldIndex)
	return err == nil && bytes.Equal(p2wpkhScript(k.PubKey().SerializeCompressed()), c.SellerScript)
}

// RescanHolds makes the next Tick scan the chain for the hold keys of the
// keyring's seed again (after the keys were replaced by a wallet restore):
// a seed scanned already is not scanned twice (its counter says so).
func (m *Manager) RescanHolds() {
	m.holdScan.newSeed.Store(false) // the restored seed was not made here
	m.holdScan.done.Store(false)
}
