//go:build integration

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
// address receives the money exactly once. Both chain backends: the seller
// on btcd's RPC, and on the light client.
func TestSweepPayoutBumped(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"btcd", "neutrino"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			sweepPayoutBumped(t, backend)
		})
	}
}

func sweepPayoutBumped(t *testing.T, backend string) {
	const floor = 5
	addr, script := payoutAddress(t)
	m, miner, seller, buyer, ch := paidChannel(t, 0, "BLACKBOX_PAYMENT_BACKEND="+backend, "BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr, "BLACKBOX_PAYMENT_PAYOUT_SWEEP=true",
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
	t.Logf("%s: close %s confirmed after %d bump(s) by a child paying %d sat", backend, closeID, c.Bump.Count, c.BumpFee())

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
	got, n, payer := paidOnChain(t, m, script, ch.OpenHeight)
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
	t.Logf("%s: sweep %s (%d version(s), %d sat/vB, fee %d sat) paid %d sat to the payout address once, %.1fs after the kill -9; the seller kept %d of %d paid",
		backend, s.Txid, s.Count+1, s.Rate, s.Fee, got, time.Since(killedAt).Seconds(), got, c.Paid)
}

// TestCloseBumpedWithWalletCoins: the same stuck close (2 sat/vB under a 5
// sat/vB miner), but the channel held too little for its payout output to
// pay a child (the sellerEnv start fee: about 700 sat after the close fee,
// against a child fee of about 1,350). The seller's daemon lends the child
// coins of its wallet: the child spends the payout output and a wallet
// coin, keeps the payout output whole and sends the change back to the
// wallet. The close and child confirm; once the miners take low fees again
// the sweep forwards the output to the payout address. Both chain backends.
func TestCloseBumpedWithWalletCoins(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"btcd", "neutrino"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			closeBumpedWithWalletCoins(t, backend)
		})
	}
}

func closeBumpedWithWalletCoins(t *testing.T, backend string) {
	const floor = 5
	addr, script := payoutAddress(t)
	m, miner, seller, buyer, ch := paidChannel(t, 50_000, "BLACKBOX_PAYMENT_BACKEND="+backend, "BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr, "BLACKBOX_PAYMENT_PAYOUT_SWEEP=true",
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
	t.Logf("%s: child %s: %d input(s), fee %d sat from %d sat of wallet coins; the payout output keeps %d sat",
		backend, childID, len(child.TxIn), c.Bump.Fee, c.Bump.Coins[0].Value, payout)
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
	t.Logf("%s: sweep %s paid %d sat to the payout address (fee %d)", backend, s.Txid, payout-s.Fee, s.Fee)
}

// paidOnChain is what the blocks from height from on pay to script: the
// sum, the number of outputs and the last transaction paying it.
func paidOnChain(t *testing.T, m *market, script []byte, from int32) (sum, n int64, last string) {
	t.Helper()
	tip, err := m.btcd.Client().GetBlockCount()
	if err != nil {
		t.Fatal(err)
	}
	for h := int64(from); h <= tip; h++ {
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
					sum += o.Value
					n++
					last = tx.TxHash().String()
				}
			}
		}
	}
	return sum, n, last
}

// TestSweepRestoredFromSeed, on both chain backends: a seller whose
// payouts are swept (payment.payout_sweep, to an external payout address)
// closes a channel; the close confirms at its hold key and the seller
// vanishes (kill -9) before it sweeps (sweep_at is out of reach). Its data
// dir is lost: a new one gets only the seed (`wallet backup` before, the
// offline `wallet restore FILE`), and the node started on it scans the
// chain for its hold keys, records the output and sweeps it to the payout
// address, exactly once.
func TestSweepRestoredFromSeed(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"btcd", "neutrino"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			addr, script := payoutAddress(t)
			m, _, seller, buyer, ch := paidChannel(t, 0, "BLACKBOX_PAYMENT_BACKEND="+backend, "BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr,
				"BLACKBOX_PAYMENT_PAYOUT_SWEEP=true", "BLACKBOX_PAYMENT_SWEEP_AT=100000000", "BLACKBOX_PAYMENT_SWEEP_AFTER=0s")
			if ch.HoldIndex == nil {
				t.Fatalf("the channel's close pays %x: want a hold key of the seller", ch.SellerScript)
			}
			seed := filepath.Join(t.TempDir(), "seed.json")
			if out, err := seller.cli("wallet", "backup", seed); err != nil {
				t.Fatalf("wallet backup: %v\n%s", err, out)
			}
			closeChannel(t, seller, ch)
			c := waitClosed(t, seller, buyer)
			if !c.Unswept() || c.Sweep != nil {
				t.Fatalf("closed channel: sweep %+v, want its output waiting at the hold key", c.Sweep)
			}
			var close wire.MsgTx
			if err := close.Deserialize(bytes.NewReader(c.SpendTx)); err != nil {
				t.Fatal(err)
			}
			held := close.TxOut[0].Value
			// While the output waits, a restore of another seed is refused
			// (it would strand it) and says what to do; the node's own seed
			// restored over itself is not: its hold keys are the same.
			other := t.TempDir()
			if _, err := payment.CreateWalletFiles(other, []byte("test-passphrase"), payment.RegtestConfig()); err != nil {
				t.Fatal(err)
			}
			seller.cliFails("wallet restore of another seed with an output to sweep",
				[]string{"waits at the node's hold key", "sweeps to confirm", "own seed backup", "nothing changed"}, "wallet", "restore", filepath.Join(other, "seed.json"))
			if out, err := seller.cli("wallet", "restore", seed); err != nil || !strings.Contains(out, "restored by the running daemon") {
				t.Fatalf("wallet restore of the node's own seed: %v\n%s", err, out)
			}
			if c2 := seller.channelWith(buyer.peerID()); c2 == nil || !c2.Unswept() {
				t.Fatalf("after restoring its own seed the channel is %+v", c2)
			}
			seller.kill()

			// A fresh data dir with only the seed; sweeps on now.
			seller.dir = t.TempDir()
			seller.env = append(seller.env, "BLACKBOX_PAYMENT_SWEEP_AT=1")
			restore := exec.Command(m.bin, "--data-dir", seller.dir, "wallet", "restore", seed)
			restore.Env = append(os.Environ(), seller.env...)
			if out, err := restore.CombinedOutput(); err != nil || !strings.Contains(string(out), "wallet restored") {
				t.Fatalf("offline wallet restore: %v\n%s", err, out)
			}
			began := time.Now()
			seller.start()
			var r *payment.Channel
			waitFor(t, 180*time.Second, "the restored seller's sweep to confirm", func() bool {
				for _, c := range seller.channelsWith("") {
					if c.Recovered {
						r = c
					}
				}
				return r != nil && r.Sweep != nil && r.Sweep.Confirmed
			})
			took := time.Since(began)
			s := r.Sweep
			if r.SpendTxid != c.SpendTxid || *r.HoldIndex != *c.HoldIndex || len(s.Inputs) != 1 || s.Inputs[0].Value != held || !bytes.Equal(s.PayTo, script) {
				t.Fatalf("recovered %+v, sweep %+v: want the close %s's %d sat at hold key %d, to the payout address", r, s, c.SpendTxid, held, *c.HoldIndex)
			}
			got, n, payer := paidOnChain(t, m, script, ch.OpenHeight)
			if n != 1 || got != held-s.Fee || payer != s.Txid {
				t.Fatalf("the payout address received %d sat in %d payment(s) (last by %s); want %d once, by the sweep %s", got, n, payer, held-s.Fee, s.Txid)
			}
			if h := seller.holdings(); h.Settled != held-s.Fee || h.Sweeping != 0 {
				t.Fatalf("holdings after the sweep: %+v, want %d settled", h, held-s.Fee)
			}
			// The log holds the first seller's scan too (of a new wallet,
			// before any close): the restored node's is the last.
			scans := regexp.MustCompile(`msg="hold keys: scanned the chain[^\n]*`).FindAllString(seller.logs.String(), -1)
			scanned := ""
			if len(scans) > 0 {
				scanned = scans[len(scans)-1]
			}
			if !strings.Contains(scanned, "recovered=1") {
				t.Fatalf("no scan in the log:\n%s", tail(seller.logs.String(), 40))
			}
			t.Logf("%s: %s", backend, scanned)
			// A restart scans no more and sweeps nothing again.
			seller.stop()
			seller.start()
			time.Sleep(3 * time.Second)
			if got2, n2, _ := paidOnChain(t, m, script, ch.OpenHeight); got2 != got || n2 != 1 {
				t.Fatalf("after a restart the payout address holds %d sat in %d payments", got2, n2)
			}
			t.Logf("%s: close %s held %d sat at hold key %d; restored from the seed alone, the node found it and swept it to the payout address in %s (sweep %s, %d vB, fee %d sat at %d sat/vB), paid once",
				backend, c.SpendTxid, held, *c.HoldIndex, took.Round(time.Millisecond), s.Txid, vsizeOf(t, s.Tx), s.Fee, s.Rate)
		})
	}
}

func vsizeOf(t *testing.T, raw []byte) int {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	return vsize(&tx)
}
