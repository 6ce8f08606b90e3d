package payment

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// sweepConfig is a regtest config paying a fresh external payout address
// (its script is payout) through hold keys and sweeps at sweepAt, at 2
// sat/vB, one confirmation, bumps after a block.
func sweepConfig(t *testing.T, sweepAt int64) (cfg Config, payout []byte) {
	key := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	payout, _ = txscript.PayToAddrScript(a)
	cfg = RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.Confirmations, cfg.BumpAfter, cfg.FallbackFeeRate = 1, 1, 2
	cfg.SweepAt, cfg.SweepAfter = sweepAt, 0
	return cfg, payout
}

// TestSweepBatch: three channels of a seller paying an external address
// through its hold keys. Their closes pay keys of the seller (one per
// channel, in order); the confirmed outputs wait until sweep_at, then one
// sweep spends all three and pays the payout address; unconfirmed, it is
// replaced at a higher rate; a crash that left one channel with an older
// version (or none) is repaired from the others at the next tick, with no
// second sweep; once confirmed the holdings call it settled.
func TestSweepBatch(t *testing.T) {
	ctx := context.Background()
	cfg, payout := sweepConfig(t, 30_000)
	chain := paytest.NewChain()
	buyer := newManager(t, cfg, chain, NewMemStore(), seed(1), paytest.NewFunder(chain))
	sst := NewMemStore()
	bk, err := NewBackupStore(sst, filepath.Join(t.TempDir(), "seller.backup"))
	if err != nil {
		t.Fatal(err)
	}
	seller := newManager(t, cfg, chain, bk, seed(2), nil)
	var ids []string
	for i := range 3 {
		terms, err := seller.SellerTerms()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(terms.PayoutScript, payout) {
			t.Fatal("terms pay the payout address directly")
		}
		c, req, err := buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 100_000, FeeRate: 2})
		if err != nil {
			t.Fatal(err)
		}
		sc, err := seller.AcceptOpen(ctx, "b", req.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if sc.HoldIndex == nil || *sc.HoldIndex != uint32(i) {
			t.Fatalf("channel %d: hold index %v, want %d", i, sc.HoldIndex, i)
		}
		ids = append(ids, c.ID)
	}
	chain.Mine(1)
	tick := func(m *Manager) {
		t.Helper()
		if err := m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tick(buyer)
	tick(seller)
	for _, id := range ids {
		u, err := buyer.Pay(ctx, id, "c", 20_000)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if h := Hold(seller.Channels()); h.SweepFee <= 0 || h.AfterClose != h.InChannels-h.CloseFee-h.SweepFee {
		t.Fatalf("holdings before the closes: %+v: the sweep's cost is not in what would be left", h)
	}
	// One close confirmed: below sweep_at, it waits.
	if _, err := seller.Close(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	chain.Mine(1)
	tick(seller)
	if c, _ := seller.Channel(ids[0]); c.State != StateClosed || c.Sweep != nil {
		t.Fatalf("one output below sweep_at: state %s, sweep %+v", c.State, c.Sweep)
	}
	if c, _ := seller.Channel(ids[0]); !c.Unswept() {
		t.Fatal("a closed channel whose output waits is not reported unswept (a wallet restore would drop its key)")
	}
	if err := bk.Flush(); err != nil {
		t.Fatal(err)
	}
	b, err := ReadChannelBackup(bk.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(b.Channels, func(c *Channel) bool { return c.ID == ids[0] && c.State == StateClosed && c.HoldIndex != nil }) {
		t.Fatal("the static backup dropped a closed channel whose output waits at the node's key")
	}
	if h := Hold(seller.Channels()); h.Sweeping != 20_000-342 {
		t.Fatalf("holdings with one output waiting: %+v", h)
	}
	for _, id := range ids[1:] {
		if _, err := seller.Close(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	chain.Mine(1)
	tick(seller)
	first, _ := seller.Channel(ids[0])
	s := first.Sweep
	if s == nil || len(s.Inputs) != 3 || !bytes.Equal(s.PayTo, payout) {
		t.Fatalf("sweep %+v: want one of the three outputs to the payout address", s)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(s.Tx)); err != nil {
		t.Fatal(err)
	}
	total := int64(3 * (20_000 - 342))
	if len(tx.TxIn) != 3 || len(tx.TxOut) != 1 || tx.TxOut[0].Value != total-s.Fee || s.Fee < 2*VSize(&tx) || s.Fee > 2*(VSize(&tx)+6) {
		t.Fatalf("sweep tx: %d in, %d out, pays %d, fee %d (%d vB)", len(tx.TxIn), len(tx.TxOut), tx.TxOut[0].Value, s.Fee, VSize(&tx))
	}
	var shares int64
	for _, id := range ids {
		c, _ := seller.Channel(id)
		if c.Sweep == nil || c.Sweep.ID != s.ID {
			t.Fatalf("channel %s does not record the sweep", id)
		}
		shares += s.FeeShare(id)
	}
	if shares != s.Fee {
		t.Fatalf("fee shares sum to %d, the fee is %d", shares, s.Fee)
	}
	// Unconfirmed for bump_after blocks: replaced at a higher rate.
	chain.MineEmpty(1)
	tick(seller)
	c, _ := seller.Channel(ids[1])
	v2 := c.Sweep
	if v2.Count != 1 || v2.Rate <= s.Rate || v2.Txid == s.Txid || len(v2.Replaced) != 1 || v2.Replaced[0] != s.Txid || v2.ID != s.ID {
		t.Fatalf("after bump_after: %+v", v2)
	}
	// A crash while the bump was being recorded: one channel still holds
	// the first version, another none. A restart repairs both.
	old, _ := seller.Channel(ids[0])
	old.Sweep = s
	if err := sst.PutChannel(old); err != nil {
		t.Fatal(err)
	}
	none, _ := seller.Channel(ids[2])
	none.Sweep = nil
	if err := sst.PutChannel(none); err != nil {
		t.Fatal(err)
	}
	restarted := newManager(t, cfg, chain, sst, seed(2), nil)
	chain.Mine(1) // the latest version confirms
	tick(restarted)
	for _, id := range ids {
		c, _ := restarted.Channel(id)
		if c.Sweep == nil || c.Sweep.ID != s.ID || c.Sweep.Txid != v2.Txid || !c.Sweep.Confirmed || c.Unswept() {
			t.Fatalf("channel %s after the restart: sweep %+v", id, c.Sweep)
		}
	}
	h := Hold(restarted.Channels())
	if h.Settled != total-v2.Fee || h.Sweeping != 0 || h.SettledFees != 3*342+v2.Fee {
		t.Fatalf("holdings after the sweep: %+v (want %d settled)", h, total-v2.Fee)
	}
}

// TestSweepNotWorthItWaits: an output a sweep would pay less than its fee
// for stays where it is (shown as sweeping) instead of feeding miners.
func TestSweepNotWorthItWaits(t *testing.T) {
	ctx := context.Background()
	key := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	cfg := RegtestConfig()
	cfg.PayoutAddress = a.EncodeAddress()
	cfg.Confirmations, cfg.FallbackFeeRate, cfg.SweepAt, cfg.SweepAfter = 1, 2, 0, 0
	chain := paytest.NewChain()
	buyer := newManager(t, cfg, chain, NewMemStore(), seed(1), paytest.NewFunder(chain))
	seller := newManager(t, cfg, chain, NewMemStore(), seed(2), nil)
	id := paidClose(t, chain, buyer, seller, 100_000, "c", 342+500) // 500 sat to sweep at 2 sat/vB: 110 vB, 220 fee, 280 left (dust)
	chain.Mine(1)
	if err := seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	sc, _ := seller.Channel(id)
	if sc.State != StateClosed || sc.Sweep != nil {
		t.Fatalf("state %s, sweep %+v: want the output left waiting", sc.State, sc.Sweep)
	}
	if h := Hold(seller.Channels()); h.Sweeping != 500 {
		t.Fatalf("holdings %+v", h)
	}
}
