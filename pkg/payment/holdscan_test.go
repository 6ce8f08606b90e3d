package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// scanChain is paytest's chain with the output scan of the real backends.
type scanChain struct {
	*paytest.Chain
	scans int
}

func (c *scanChain) OutputsTo(ctx context.Context, scripts [][]byte, from int32) (int32, []HeldOutput, error) {
	c.scans++
	tip, _ := c.Tip(ctx)
	var found []HeldOutput
	for tx, h := range c.Mined(from) {
		for i, o := range tx.TxOut {
			for _, s := range scripts {
				if bytes.Equal(o.PkScript, s) {
					found = append(found, HeldOutput{Tx: tx, Index: uint32(i), Height: h, Script: o.PkScript})
				}
			}
		}
	}
	return tip, found, nil
}

// TestRecoverHolds: a seller's close waits at hold key 0; other outputs pay
// hold key 20 (past the first window of 20 keys: found once the window is
// extended past the keys found) and key 3 at output 1 (no close of ours:
// left alone). A node
// with the same seed and an empty store recovers the two outputs that are
// closes, once (a second scan is refused by the seed's counter), sweeps
// them in one transaction to the payout address, and a third node with
// the seed, after the sweep, recovers nothing (spent).
func TestRecoverHolds(t *testing.T) {
	ctx := context.Background()
	cfg, payout := sweepConfig(t, 1_000_000_000)
	chain := &scanChain{Chain: paytest.NewChain()}
	buyer := newManager(t, cfg, chain, NewMemStore(), seed(1), paytest.NewFunder(chain.Chain))
	seller := newManager(t, cfg, chain, NewMemStore(), seed(2), nil)
	id := paidClose(t, chain.Chain, buyer, seller, 100_000, "c", 20_000)
	// Outputs at hold keys 20 (a close-shaped one) and 3 (at output 1).
	pay := func(hold uint32, vout int, value int64) *wire.MsgTx {
		s, err := seller.holdScript(hold)
		if err != nil {
			t.Fatal(err)
		}
		tx := wire.NewMsgTx(2)
		tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{byte(hold)}, 0), nil, nil))
		if vout == 1 {
			tx.AddTxOut(wire.NewTxOut(1000, payout))
		}
		tx.AddTxOut(wire.NewTxOut(value, s))
		if err := chain.Broadcast(ctx, tx); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	far := pay(20, 0, 7_000)
	pay(3, 1, 5_000)
	chain.Mine(1)
	if err := seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	closed, _ := seller.Channel(id)
	if !closed.Unswept() {
		t.Fatalf("the close does not wait at a hold key: %+v", closed)
	}
	if !closed.HeldBy(seller.keys) {
		t.Fatal("HeldBy: the seller's own keys do not hold its close's output")
	}
	if other, _ := NewKeyring(seed(9), &chaincfg.RegressionNetParams); closed.HeldBy(other) {
		t.Fatal("HeldBy: another seed holds the close's output")
	}

	// The seed alone, an empty store.
	cfg.SweepAt = 1
	st := NewMemStore()
	restored := newManager(t, cfg, chain, st, seed(2), nil)
	restored.holdFrom = func(context.Context) (int32, error) { return 900, nil }
	n, tip, err := restored.RecoverHolds(ctx)
	if err != nil || n != 2 {
		t.Fatalf("recovered %d (to %d), %v: want the close and the output at key 20", n, tip, err)
	}
	if chain.scans != 3 {
		t.Fatalf("%d scans: want keys 0-19, 20-23 (20 past key 3), 24-40 (20 past key 20)", chain.scans)
	}
	got := map[string]*Channel{}
	for _, r := range restored.Channels() {
		got[r.SpendTxid] = r
	}
	if r := got[closed.SpendTxid]; r == nil || !r.Recovered || *r.HoldIndex != 0 || r.ID != id || !r.Unswept() {
		t.Fatalf("the close's record %+v", r)
	}
	if r := got[far.TxHash().String()]; r == nil || *r.HoldIndex != 20 || r.Paid != 7_000 {
		t.Fatalf("key 20's record %+v", r)
	}
	if _, _, err := restored.RecoverHolds(ctx); !errors.Is(err, errHoldScanDone) {
		t.Fatalf("a second scan: %v, want done", err)
	}
	if err := restored.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	r := restored.Channels()[0]
	if r.Sweep == nil || len(r.Sweep.Inputs) != 2 || !bytes.Equal(r.Sweep.PayTo, payout) {
		t.Fatalf("sweep %+v: want both recovered outputs to the payout address", r.Sweep)
	}
	var sweep wire.MsgTx
	if err := sweep.Deserialize(bytes.NewReader(r.Sweep.Tx)); err != nil {
		t.Fatal(err)
	}
	held := closed.Paid - closed.CloseFee + 7_000
	if sweep.TxOut[0].Value != held-r.Sweep.Fee {
		t.Fatalf("the sweep pays %d of %d held (fee %d)", sweep.TxOut[0].Value, held, r.Sweep.Fee)
	}
	chain.Mine(1)
	if err := restored.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if h := Hold(restored.Channels()); h.Settled != held-r.Sweep.Fee || h.Sweeping != 0 {
		t.Fatalf("holdings after the sweep: %+v", h)
	}

	// After the sweep, nothing is left to recover.
	again := newManager(t, cfg, chain, NewMemStore(), seed(2), nil)
	again.holdFrom = restored.holdFrom
	if n, _, err := again.RecoverHolds(ctx); err != nil || n != 0 {
		t.Fatalf("after the sweep: recovered %d, %v", n, err)
	}
}

// TestNewSeedNotScanned: a seed made at this start (ManagerConfig.NewSeed)
// has nothing at its hold keys: its scan is recorded done without a block
// read, durably (the next start on the same store does not scan either),
// and RescanHolds (a restore replaced the seed) scans again.
func TestNewSeedNotScanned(t *testing.T) {
	ctx := context.Background()
	cfg, _ := sweepConfig(t, 1_000_000_000)
	chain := &scanChain{Chain: paytest.NewChain()}
	chain.Mine(5)
	st := NewMemStore()
	from := func(context.Context) (int32, error) { return 1, nil }
	made := newManager(t, cfg, chain, st, seed(4), nil)
	made.holdFrom = from
	made.holdScan.newSeed.Store(true)
	if _, _, err := made.RecoverHolds(ctx); !errors.Is(err, errHoldScanDone) || chain.scans != 0 {
		t.Fatalf("a new seed: %v after %d scans; want done, none", err, chain.scans)
	}
	next := newManager(t, cfg, chain, st, seed(4), nil)
	next.holdFrom = from
	if _, _, err := next.RecoverHolds(ctx); !errors.Is(err, errHoldScanDone) || chain.scans != 0 {
		t.Fatalf("the next start: %v after %d scans; want done, none", err, chain.scans)
	}
	other := newManager(t, cfg, chain, NewMemStore(), seed(5), nil)
	other.holdFrom = from
	other.holdScan.newSeed.Store(true)
	other.RescanHolds()
	if _, _, err := other.RecoverHolds(ctx); err != nil || chain.scans == 0 {
		t.Fatalf("after RescanHolds: %v after %d scans; want a scan", err, chain.scans)
	}
}
