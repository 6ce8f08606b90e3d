//go:build integration

package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// TestSweepPayoutBumped: a seller paying an external payout address (with
// payment.payout_sweep, the default) closes a channel at 2 sat/vB while the
// miner takes only packages of 5 sat/vB and up. The close pays a key of the
// seller's own (not the payout address), so the daemon bumps it with a
// child it signs itself; once the close confirms, a sweep forwards the
// output to the payout address, itself at 2 sat/vB and so replaced with
// higher-fee versions (RBF). The seller is killed (kill -9) right after
// the sweep's broadcast and restarted: the sweep goes on, and the payout
// address receives the money exactly once.
func TestSweepPayoutBumped(t *testing.T) {
	t.Parallel()
	const floor = 5
	addr, script := payoutAddress(t)
	m, miner, seller, buyer, ch := paidChannel(t, 0, "BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr, "BLACKBOX_PAYMENT_PAYOUT_SWEEP=true",
		"BLACKBOX_PAYMENT_SWEEP_AT=1", "BLACKBOX_PAYMENT_SWEEP_AFTER=0s",
		"BLACKBOX_PAYMENT_BUMP_AFTER=1", "BLACKBOX_METER_PRICING_START_FEE=20000")
	if ch.HoldIndex == nil || bytes.Equal(ch.SellerScript, script) {
		t.Fatalf("the channel's close pays %x (hold %v): want a key of the seller, not the payout address", ch.SellerScript, ch.HoldIndex)
	}
	if st, err := seller.cli("status"); err != nil || !strings.Contains(st, "through the node's keys") {
		t.Fatalf("status does not say payouts are swept: %v\n%s", err, st)
	}

	miner.floor.Store(floor)
	closeID := closeChannel(t, seller, ch)
	// The close is bumped by a child the seller signs with its hold key.
	c := waitClosed(t, seller, buyer)
	if c.Bump == nil || c.Bump.Count < 1 || len(c.Bump.ChildTx) == 0 || c.Bump.Stuck != "" || c.SpendTxid != closeID.String() {
		t.Fatalf("closed without a child of ours: spend %s, bump %+v\n%s", c.SpendTxid, c.Bump, seller.logs.String())
	}
	t.Logf("close %s confirmed after %d bump(s) by a child paying %d sat", closeID, c.Bump.Count, c.BumpFee())

	// The sweep: killed right after its first broadcast.
	re := regexp.MustCompile(`sweep broadcast.*sweep=([0-9a-f]{64})`)
	var sweepID string
	waitFor(t, 60*time.Second, "the sweep's broadcast", func() bool {
		if mm := re.FindStringSubmatch(seller.logs.String()); mm != nil {
			sweepID = mm[1]
			return true
		}
		return false
	})
	seller.kill()
	killedAt := time.Now()
	if h, _ := chainhash.NewHashFromStr(sweepID); h != nil {
		if _, err := m.btcd.Client().GetRawTransaction(h); err != nil {
			t.Logf("sweep %s not in the mempool at the kill: %v", sweepID, err)
		}
	}
	seller.start()
	waitFor(t, 180*time.Second, "the sweep to confirm after the restart", func() bool {
		c = seller.channelWith(buyer.peerID())
		return c != nil && c.Sweep != nil && c.Sweep.Confirmed
	})
	s := c.Sweep
	if s.ID != sweepID {
		t.Fatalf("the restarted seller swept again (%s) instead of going on with %s", s.ID, sweepID)
	}
	if s.Count < 1 || s.Rate < floor {
		t.Fatalf("sweep %+v: want it replaced up to the miners' %d sat/vB", s, floor)
	}
	var sweep wire.MsgTx
	if err := sweep.Deserialize(bytes.NewReader(s.Tx)); err != nil {
		t.Fatal(err)
	}
	// Exactly one payment to the payout address on the chain: the
	// confirmed sweep version, paying what the channel's output held less
	// the sweep's fee.
	tip, err := m.btcd.Client().GetBlockCount()
	if err != nil {
		t.Fatal(err)
	}
	var got, n int64
	var payer string
	for h := int64(ch.OpenHeight); h <= tip; h++ {
		bh, err := m.btcd.Client().GetBlockHash(h)
		if err != nil {
			t.Fatal(err)
		}
		blk, err := m.btcd.Client().GetBlock(bh)
		if err != nil {
			t.Fatal(err)
		}
		for _, tx := range blk.Transactions {
			for _, o := range tx.TxOut {
				if bytes.Equal(o.PkScript, script) {
					got += o.Value
					n++
					payer = tx.TxHash().String()
				}
			}
		}
	}
	want := s.Inputs[0].Value - s.Fee
	if n != 1 || got != want || payer != s.Txid || len(s.Inputs) != 1 {
		t.Fatalf("the payout address received %d sat in %d payment(s) (last by %s); want %d once, by the sweep %s", got, n, payer, want, s.Txid)
	}
	var h payment.Holdings
	if h = payment.Hold([]*payment.Channel{c}); h.Settled != want || h.Sweeping != 0 {
		t.Fatalf("holdings after the sweep: %+v, want %d settled", h, want)
	}
	if out, err := seller.cli("earnings"); err != nil || !strings.Contains(out, "settled") {
		t.Fatalf("earnings: %v\n%s", err, out)
	}
	t.Logf("sweep %s (%d version(s), %d sat/vB, fee %d sat) paid %d sat to the payout address once, %.1fs after the kill -9; the seller kept %d of %d paid",
		s.Txid, s.Count+1, s.Rate, s.Fee, got, time.Since(killedAt).Seconds(), got, c.Paid)
}

// TestCloseBumpedWithWalletCoins: the same stuck close (2 sat/vB under a 5
// sat/vB miner), but the channel held too little for its payout output to
// pay a child (the sellerEnv start fee: about 700 sat after the close fee,
// against a child fee of about 1,350). The seller's daemon lends the child
// coins of its wallet: the child spends the payout output and a wallet
// coin, keeps the payout output whole and sends the change back to the
// wallet. The close and child confirm; once the miners take low fees again
// the sweep forwards the output to the payout address.
func TestCloseBumpedWithWalletCoins(t *testing.T) {
	t.Parallel()
	const floor = 5
	addr, script := payoutAddress(t)
	m, miner, seller, buyer, ch := paidChannel(t, 50_000, "BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr, "BLACKBOX_PAYMENT_PAYOUT_SWEEP=true",
		"BLACKBOX_PAYMENT_SWEEP_AT=1", "BLACKBOX_PAYMENT_SWEEP_AFTER=0s", "BLACKBOX_PAYMENT_BUMP_AFTER=1")
	payout := ch.Paid - ch.CloseFee
	miner.floor.Store(floor)
	closeChannel(t, seller, ch)
	c := waitClosed(t, seller, buyer)
	if c.Bump == nil || len(c.Bump.ChildTx) == 0 || len(c.Bump.Coins) == 0 {
		t.Fatalf("closed without a child lent wallet coins: bump %+v\n%s", c.Bump, seller.logs.String())
	}
	var child wire.MsgTx
	if err := child.Deserialize(bytes.NewReader(c.Bump.ChildTx)); err != nil {
		t.Fatal(err)
	}
	childID := child.TxHash()
	if res, err := m.btcd.Client().GetRawTransactionVerbose(&childID); err != nil || res.Confirmations < 1 {
		t.Fatalf("the child %s is not mined: %v", childID, err)
	}
	if c.Bump.Fee+payment.DustP2WPKH <= payout {
		t.Fatalf("the payout output (%d sat) could have paid the child's %d sat alone: the test wants it too small", payout, c.Bump.Fee)
	}
	if len(child.TxIn) != 1+len(c.Bump.Coins) || len(child.TxOut) != 2 || child.TxOut[0].Value != payout ||
		!bytes.Equal(child.TxOut[0].PkScript, c.SellerScript) || !bytes.Equal(child.TxOut[1].PkScript, c.Bump.Change) {
		t.Fatalf("the child does not keep the payout output whole and return the change: %+v", child)
	}
	t.Logf("child %s: %d input(s), fee %d sat from %d sat of wallet coins; the payout output keeps %d sat",
		childID, len(child.TxIn), c.Bump.Fee, c.Bump.Coins[0].Value, payout)
	miner.floor.Store(0)
	waitFor(t, 120*time.Second, "the sweep to confirm", func() bool {
		c = seller.channelWith(buyer.peerID())
		return c != nil && c.Sweep != nil && c.Sweep.Confirmed
	})
	s := c.Sweep
	sh, _ := chainhash.NewHashFromStr(s.Txid)
	res, err := m.btcd.Client().GetRawTransactionVerbose(sh)
	if err != nil || res.Confirmations < 1 {
		t.Fatalf("sweep %s: %v", s.Txid, err)
	}
	var sweep wire.MsgTx
	if err := sweep.Deserialize(bytes.NewReader(s.Tx)); err != nil {
		t.Fatal(err)
	}
	if s.Inputs[0].OutPoint != (wire.OutPoint{Hash: childID, Index: 0}).String() || s.Inputs[0].Value != payout ||
		!bytes.Equal(s.PayTo, script) {
		t.Fatalf("sweep %+v: want the child's output of %d sat, to the payout address", s, payout)
	}
	t.Logf("sweep %s paid %d sat to the payout address (fee %d)", s.Txid, payout-s.Fee, s.Fee)
}
