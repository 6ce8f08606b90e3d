//go:build integration

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// TestCloseFeeBumped: a seller whose payouts go to its own wallet (the
// default) closes a channel whose close fee, fixed when the buyer opened it
// at the regtest fallback rate, is below what the miners now take. The
// miner here mines like a fee-minded one (btcdtest.MinePackages: only
// packages paying at least 5 sat/vB; btcd's `generate` would take every
// mempool transaction). The seller's daemon, by itself, pays for the close
// with a child spending its payout output, signed by its wallet, and bumps
// it until the pair is mined.
func TestCloseFeeBumped(t *testing.T) {
	const floor = 5
	m := newMarketMining(t, 0)
	var packagesOnly atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the miner: every mempool transaction, then packages only
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			if packagesOnly.Load() {
				if _, _, err := m.btcd.MinePackages(floor); err != nil {
					t.Logf("mine packages: %v", err)
				}
			} else {
				m.btcd.Generate(1)
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })

	work := t.TempDir()
	// A start fee large enough that the payout output can pay a child.
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_BUMP_AFTER=1", "BLACKBOX_METER_PRICING_START_FEE=20000"))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	flags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "60000"}
	j := submit(t, buyer, busybox(t, work), filepath.Join(work, "res"), flags, "sh", "-c", "echo paid")
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("job %s: state %s paid %d error %q", j.ID, j.State, j.Paid, j.Error)
	}
	var ch *payment.Channel
	waitFor(t, 30*time.Second, "the seller's channel to hold the payment", func() bool {
		ch = seller.channelWith(buyer.peerID())
		return ch != nil && ch.State == payment.StateOpen && ch.Paid == j.Paid
	})

	packagesOnly.Store(true)
	out, err := seller.cli("channel", "close", ch.ID)
	if err != nil {
		t.Fatalf("channel close: %v: %s\n%s", err, out, seller.logs.String())
	}
	f := strings.Fields(out)
	closeID, err := chainhash.NewHashFromStr(f[len(f)-1])
	if err != nil {
		t.Fatalf("channel close printed %q: %v", out, err)
	}
	raw, err := m.btcd.Client().GetRawTransaction(closeID)
	if err != nil {
		t.Fatalf("close %s not in the mempool: %v", closeID, err)
	}
	closeVS := payment.VSize(raw.MsgTx())
	closeRate := float64(ch.CloseFee) / float64(closeVS)
	if closeRate >= floor {
		t.Fatalf("the close pays %.1f sat/vB: the test needs it below the miners' %d", closeRate, floor)
	}
	waitFor(t, 120*time.Second, "the close to be bumped and confirm", func() bool {
		c := seller.channelWith(buyer.peerID())
		return c != nil && c.State == payment.StateClosed
	})
	c := seller.channelWith(buyer.peerID())
	if c.Bump == nil || c.Bump.Count < 1 || len(c.Bump.ChildTx) == 0 || c.Bump.Stuck != "" {
		t.Fatalf("closed without a child: bump %+v\n%s", c.Bump, seller.logs.String())
	}
	if c.SpendTxid != closeID.String() {
		t.Fatalf("the channel was spent by %s, not the close %s", c.SpendTxid, closeID)
	}
	res, err := m.btcd.Client().GetRawTransactionVerbose(closeID)
	if err != nil || res.Confirmations < 1 {
		t.Fatalf("close %s: %v, %d confirmations", closeID, err, res.Confirmations)
	}
	var child wire.MsgTx
	if err := child.Deserialize(bytes.NewReader(c.Bump.ChildTx)); err != nil {
		t.Fatal(err)
	}
	childID := child.TxHash()
	if res, err := m.btcd.Client().GetRawTransactionVerbose(&childID); err != nil || res.Confirmations < 1 {
		t.Fatalf("the child %s that paid for the close is not mined: %v", childID, err)
	}
	if len(child.TxIn) != 1 || child.TxIn[0].PreviousOutPoint != (wire.OutPoint{Hash: *closeID, Index: 0}) ||
		len(child.TxOut) != 1 || !bytes.Equal(child.TxOut[0].PkScript, c.SellerScript) {
		t.Fatalf("the child does not spend the payout output back to the payout script: %+v", child)
	}
	childFee := c.BumpFee()
	pkgRate := float64(c.CloseFee+childFee) / float64(closeVS+payment.VSize(&child))
	if childFee <= 0 || pkgRate < floor || c.Bump.Rate > 200 {
		t.Fatalf("child fee %d, package %.1f sat/vB (want in [%d, max_fee_rate 200])", childFee, pkgRate, floor)
	}
	if !strings.Contains(seller.logs.String(), "close fee bumped by a child") {
		t.Fatalf("the seller's log does not say it bumped the close\n%s", seller.logs.String())
	}
	t.Logf("close %s at %.1f sat/vB (%d sat) confirmed after %d bump(s): child fee %d sat, package %.1f sat/vB; the seller keeps %d of %d paid",
		closeID, closeRate, c.CloseFee, c.Bump.Count, childFee, pkgRate, c.Paid-c.CloseFee-childFee, c.Paid)
}
