//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// feeMiner mines a block every half second: every mempool transaction
// (btcd's generate) while floor is 0, else only the packages paying at
// least floor sat/vB (btcdtest.MinePackages), as a fee-minded miner does.
// A test holds mu to mine a block of its own in between.
type feeMiner struct {
	floor atomic.Int64
	mu    sync.Mutex
}

func startFeeMiner(m *market) *feeMiner {
	fm := &feeMiner{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			fm.mu.Lock()
			if f := fm.floor.Load(); f > 0 {
				if _, _, err := m.btcd.MinePackages(f); err != nil {
					m.t.Logf("mine packages: %v", err)
				}
			} else {
				m.btcd.Generate(1)
			}
			fm.mu.Unlock()
		}
	}()
	m.t.Cleanup(func() { cancel(); wg.Wait() })
	return fm
}

// TestCloseFeeBumped: a seller whose payouts go to its own wallet (the
// default) closes a channel whose close fee, fixed when the buyer opened it
// at the regtest fallback rate, is below what the miners now take. The
// miner here mines like a fee-minded one (btcdtest.MinePackages: only
// packages paying at least 5 sat/vB; btcd's `generate` would take every
// mempool transaction). The seller's daemon, by itself, pays for the close
// with a child spending its payout output, signed by its wallet, and bumps
// it until the pair is mined.
func TestCloseFeeBumped(t *testing.T) {
	t.Parallel()
	const floor = 5
	// A start fee large enough that the payout output can pay a child.
	m, miner, seller, buyer, ch := paidChannel(t, 0, "BLACKBOX_PAYMENT_BUMP_AFTER=1", "BLACKBOX_METER_PRICING_START_FEE=20000")

	miner.floor.Store(floor)
	closeID := closeChannel(t, seller, ch)
	raw, err := m.btcd.Client().GetRawTransaction(closeID)
	if err != nil {
		t.Fatalf("close %s not in the mempool: %v", closeID, err)
	}
	closeVS := payment.VSize(raw.MsgTx())
	closeRate := float64(ch.CloseFee) / float64(closeVS)
	if closeRate >= floor {
		t.Fatalf("the close pays %.1f sat/vB: the test needs it below the miners' %d", closeRate, floor)
	}
	c := waitClosed(t, seller, buyer)
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

// TestFundingDoubleSpent: a buyer's channel funding, still unconfirmed, is
// double-spent: its input is spent again with the buyer wallet's own key
// (derived here from the wallet's seed) and a miner mines the conflict
// directly (the mempool refuses it: the funding does not signal
// replacement). The buyer's daemon fails the channel with the reason and
// the job fails with it. A seller that holds the channel
// (today a buyer hands it over only once confirmed; with a zero-conf first
// contract it does before) fails it too, fails its contract, and counts
// the double-spend against the buyer in its reputation book.
func TestFundingDoubleSpent(t *testing.T) {
	t.Parallel()
	m, miner, seller, buyer, id, bch := unminedFunding(t)
	if bch.State != payment.StatePending {
		t.Fatalf("buyer's channel %s, want pending", bch.State)
	}
	var funding wire.MsgTx
	if err := funding.Deserialize(bytes.NewReader(bch.FundingTx)); err != nil {
		t.Fatal(err)
	}
	conflict := doubleSpend(t, m, buyer, &funding)
	if _, err := m.btcd.Client().SendRawTransaction(conflict, false); err == nil {
		t.Fatal("the mempool took the conflict: the test wants it mined directly")
	}
	miner.mu.Lock()
	_, err := m.btcd.MineTxs(conflict)
	miner.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want := "funding double-spent: its input is spent by " + conflict.TxHash().String()
	waitFor(t, 60*time.Second, "the buyer to fail the channel", func() bool {
		bch = buyer.channelWith(seller.peerID())
		return bch.State == payment.StateFailed
	})
	if bch.FailReason != want {
		t.Fatalf("buyer's fail reason %q, want %q", bch.FailReason, want)
	}
	j := waitJob(t, buyer, id, 120*time.Second, "ends", ended)
	if j.State != contract.JobFailed || !strings.Contains(j.Error, "funding double-spent") {
		t.Fatalf("job %s on a double-spent channel: %s %q", j.ID, j.State, j.Error)
	}
	sch := seller.channelWith(buyer.peerID())
	if sch == nil {
		t.Fatalf("the seller never held the channel: the buyer hands it over once broadcast")
	}
	waitFor(t, 60*time.Second, "the seller to fail the channel", func() bool {
		sch = seller.channelWith(buyer.peerID())
		return sch.State == payment.StateFailed
	})
	if sch.FailReason != want {
		t.Fatalf("seller's fail reason %q, want %q", sch.FailReason, want)
	}
	if r := seller.contractRec(j.ContractID); r == nil || r.State != contract.StateFailed || !strings.Contains(r.Why, "funding double-spent") {
		t.Fatalf("seller's contract %s: %+v", j.ContractID, r)
	}
	score := abuseCounted(t, seller, buyer)
	t.Logf("channel failed on both sides: %s; job: %s; buyer's score at the seller %.2f (%.1f evidence)",
		want, j.Error, score.Mean, score.Evidence)
}

// TestFundingDoubleSpentInReorg: the double-spend a seller meets on a
// confirmed funding. A job runs on an open channel; the block holding the
// funding is reorged out (invalidateblock) and a miner mines a conflict
// spending the funding's input, signed with the buyer wallet's key, on the
// new branch. Both daemons move the channel from open back to pending and
// then to failed with the reason; the seller fails the running contract the
// channel carried with it, and counts the double-spend against the buyer in
// its reputation book; the buyer's job fails at its next payment, with the
// reason.
func TestFundingDoubleSpentInReorg(t *testing.T) {
	t.Parallel()
	m := newMarketMining(t, 0)
	miner := startFeeMiner(m)
	work := t.TempDir()
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	id, j := runningJob(t, buyer, busybox(t, work), jobFlags, "sh", "-c", "sleep 40; echo done")
	var sch *payment.Channel
	waitFor(t, 30*time.Second, "the seller's open channel carrying the contract", func() bool {
		sch = seller.channelWith(buyer.peerID())
		return sch != nil && sch.State == payment.StateOpen && sch.Contracts[j.ContractID] > 0
	})
	var funding wire.MsgTx
	if err := funding.Deserialize(bytes.NewReader(sch.FundingTx)); err != nil {
		t.Fatal(err)
	}
	conflict := doubleSpend(t, m, buyer, &funding)

	miner.mu.Lock()
	fid := funding.TxHash()
	res, err := m.btcd.Client().GetRawTransactionVerbose(&fid)
	if err != nil || res.BlockHash == "" {
		miner.mu.Unlock()
		t.Fatalf("funding %s not in a block: %v", fid, err)
	}
	bh, _ := chainhash.NewHashFromStr(res.BlockHash)
	if err := m.btcd.InvalidateBlock(bh); err != nil {
		miner.mu.Unlock()
		t.Fatal(err)
	}
	_, err = m.btcd.MineTxs(conflict)
	miner.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}

	want := "funding double-spent: its input is spent by " + conflict.TxHash().String()
	var bch *payment.Channel
	waitFor(t, 60*time.Second, "both sides to fail the channel", func() bool {
		sch, bch = seller.channelWith(buyer.peerID()), buyer.channelWith(seller.peerID())
		return sch.State == payment.StateFailed && bch.State == payment.StateFailed
	})
	if sch.FailReason != want || bch.FailReason != want {
		t.Fatalf("fail reasons %q / %q, want %q", sch.FailReason, bch.FailReason, want)
	}
	var r *contract.Record
	waitFor(t, 30*time.Second, "the seller's contract to fail", func() bool {
		r = seller.contractRec(j.ContractID)
		return r != nil && r.State == contract.StateFailed
	})
	if !strings.Contains(r.Why, "funding double-spent") {
		t.Fatalf("seller's contract failed with %q", r.Why)
	}
	score := abuseCounted(t, seller, buyer)
	j = waitJob(t, buyer, id, 120*time.Second, "ends", ended)
	if j.State != contract.JobFailed || !strings.Contains(j.Error, "funding double-spent") {
		t.Fatalf("job %s on a double-spent channel: %s %q", j.ID, j.State, j.Error)
	}
	t.Logf("both sides: %s; seller's contract: %s; buyer's score at the seller %.2f (%.1f evidence); job: %s",
		want, r.Why, score.Mean, score.Evidence, j.Error)
}

// TestFundingNeverConfirms: with payment.funding_timeout at 6 blocks, a
// buyer's funding at the fallback rate (2 sat/vB) sits in the mempool while
// the miners take only 5 sat/vB and up: after 6 blocks the buyer's daemon
// fails the channel, and the job fails with the reason.
func TestFundingNeverConfirms(t *testing.T) {
	t.Parallel()
	m, _, seller, buyer, id, bch := unminedFunding(t, "BLACKBOX_PAYMENT_FUNDING_TIMEOUT=6")
	start := bch.OpenHeight
	waitFor(t, 90*time.Second, "the buyer to fail the channel", func() bool {
		bch = buyer.channelWith(seller.peerID())
		return bch.State == payment.StateFailed
	})
	if !strings.HasPrefix(bch.FailReason, payment.FailNotConfirmed) {
		t.Fatalf("fail reason %q", bch.FailReason)
	}
	fid := bch.FundingTxid()
	res, err := m.btcd.Client().GetRawTransactionVerbose(&fid)
	if err != nil || res.Confirmations != 0 {
		t.Fatalf("funding %s: %v; want it in the mempool, unmined", fid, err)
	}
	if bch.PendingSince != start {
		t.Fatalf("counted from height %d, the channel opened at %d", bch.PendingSince, start)
	}
	j := waitJob(t, buyer, id, 120*time.Second, "ends", ended)
	if j.State != contract.JobFailed || !strings.Contains(j.Error, payment.FailNotConfirmed) {
		t.Fatalf("job %s on a never-confirmed channel: %s %q", j.ID, j.State, j.Error)
	}
	t.Logf("channel failed: %s; job: %s", bch.FailReason, j.Error)
}

// TestRefundFeeBumped: the seller vanishes after a job; at the channel's
// expiry the buyer's daemon refunds at the fallback rate (2 sat/vB), below
// what the miner now takes (5 sat/vB), and replaces the refund with
// higher-fee versions (RBF) until one is mined.
func TestRefundFeeBumped(t *testing.T) {
	t.Parallel()
	m := newMarketMining(t, 0)
	miner := startFeeMiner(m)
	work := t.TempDir()
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(append([]string{"BLACKBOX_PAYMENT_CHANNEL_LIFETIME=60", "BLACKBOX_PAYMENT_BUMP_AFTER=1"}, buyerEnv...),
		"--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	j := submit(t, buyer, busybox(t, work), filepath.Join(work, "res"), jobFlags, "sh", "-c", "echo paid")
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("job %s: state %s paid %d error %q", j.ID, j.State, j.Paid, j.Error)
	}
	sellerID := seller.peerID()
	// The job may have run on the unconfirmed funding (zero-conf): the
	// floor goes up once the funding is mined, or it never would be.
	waitFor(t, 60*time.Second, "the buyer's channel to open", func() bool {
		ch := buyer.channelWith(sellerID)
		return ch != nil && ch.State == payment.StateOpen
	})
	seller.stop() // it never closes
	miner.floor.Store(5)
	var bch *payment.Channel
	waitFor(t, 120*time.Second, "the buyer's refund to be bumped and confirm", func() bool {
		bch = buyer.channelWith(sellerID)
		return bch != nil && bch.State == payment.StateClosed
	})
	if bch.Bump == nil || bch.Bump.Count < 1 || len(bch.Bump.Replaced) != bch.Bump.Count {
		t.Fatalf("refund confirmed without replacements: %+v\n%s", bch.Bump, buyer.logs.String())
	}
	var refund wire.MsgTx
	if err := refund.Deserialize(bytes.NewReader(bch.SpendTx)); err != nil {
		t.Fatal(err)
	}
	if bch.SpendTxid != refund.TxHash().String() {
		t.Fatalf("the channel was spent by %s, not the latest refund %s", bch.SpendTxid, refund.TxHash())
	}
	first, _ := chainhash.NewHashFromStr(bch.Bump.Replaced[0])
	if _, err := m.btcd.Client().GetRawTransactionVerbose(first); err == nil {
		t.Fatalf("the first refund %s, below the miner's floor, is still known", first)
	}
	fee := bch.SpendFee()
	rate := float64(fee) / float64(payment.VSize(&refund))
	if rate < 5 || rate > 200 {
		t.Fatalf("refund mined at %.1f sat/vB, want in [5, max_fee_rate 200]", rate)
	}
	t.Logf("refund replaced %d time(s), mined at %.1f sat/vB (fee %d sat); the buyer got back %d of %d",
		bch.Bump.Count, rate, fee, bch.Capacity-fee, bch.Capacity)
}

// paidChannel starts a market mined by a feeMiner (every transaction until
// a test sets its floor), a seller with sellerVars added to sellerEnv (and
// sellerFunds sat in its wallet when > 0; on the light client when
// sellerVars say BLACKBOX_PAYMENT_BACKEND=neutrino) and a funded buyer, runs one
// paid job and returns the seller's open channel once it holds the
// payment.
func paidChannel(t *testing.T, sellerFunds int64, sellerVars ...string) (*market, *feeMiner, *daemon, *daemon, *payment.Channel) {
	t.Helper()
	m := newMarketMining(t, 0)
	miner := startFeeMiner(m)
	work := t.TempDir()
	start := (*market).daemon
	if slices.Contains(sellerVars, "BLACKBOX_PAYMENT_BACKEND=neutrino") {
		start = (*market).lightDaemon // the seller on the light client
	}
	seller := start(m, sellerEnv(sellerVars...))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	if sellerFunds > 0 {
		m.fund(seller.proc, sellerFunds)
	}
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
	return m, miner, seller, buyer, ch
}

// closeChannel closes ch through the seller's CLI and returns the close's
// txid (the last word it prints).
func closeChannel(t *testing.T, seller *daemon, ch *payment.Channel) *chainhash.Hash {
	t.Helper()
	out, err := seller.cli("channel", "close", ch.ID)
	if err != nil {
		t.Fatalf("channel close: %v: %s\n%s", err, out, seller.logs.String())
	}
	f := strings.Fields(out)
	closeID, err := chainhash.NewHashFromStr(f[len(f)-1])
	if err != nil {
		t.Fatalf("channel close printed %q: %v", out, err)
	}
	return closeID
}

// waitClosed waits for the seller's channel with buyer to be closed (its
// close, bumped as needed, confirmed) and returns it.
func waitClosed(t *testing.T, seller, buyer *daemon) *payment.Channel {
	t.Helper()
	waitFor(t, 120*time.Second, "the close to be bumped and confirm", func() bool {
		c := seller.channelWith(buyer.peerID())
		return c != nil && c.State == payment.StateClosed
	})
	return seller.channelWith(buyer.peerID())
}

// unminedFunding starts a seller and a funded buyer (buyerExtra added to
// its environment) under a miner that, once the market is up, takes only 5
// sat/vB and up, and submits a job: the buyer's funding, at the fallback
// rate of 2 sat/vB, stays in the mempool. It returns the job's ID and the
// buyer's channel.
func unminedFunding(t *testing.T, buyerExtra ...string) (*market, *feeMiner, *daemon, *daemon, string, *payment.Channel) {
	t.Helper()
	m := newMarketMining(t, 0)
	miner := startFeeMiner(m)
	work := t.TempDir()
	// The seller takes no unconfirmed funding (payment.zero_conf_max 0):
	// the contract waits in funded for the confirmations, holding the
	// pending channel, so the funding's fate decides it.
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_ZERO_CONF_MAX=0"))
	buyer := m.daemon(append(buyerExtra, buyerEnv...), "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	miner.floor.Store(5)
	id := submitDetached(t, buyer, busybox(t, work), jobFlags, "sh", "-c", "echo never")
	var bch *payment.Channel
	waitFor(t, 60*time.Second, "the buyer's funding", func() bool {
		bch = buyer.channelWith(seller.peerID())
		return bch != nil
	})
	return m, miner, seller, buyer, id, bch
}

// buyerScore is a seller's view of a buyer (`blackbox reputation PEER --json`).
type buyerScore struct {
	Mean     float64 `json:"mean"`
	Evidence float64 `json:"evidence"`
	Blocked  bool    `json:"blocked"`
	Sources  []struct {
		Outcomes map[string]float64 `json:"outcomes"`
		Bad      float64            `json:"bad"`
	} `json:"sources"`
	Notes []struct {
		Outcome string `json:"outcome"`
		Reason  string `json:"reason"`
	} `json:"notes"`
}

// abuseCounted returns the seller's view of the buyer, which must hold the
// buyer's double-spend as its own observation of fraud: funding_double_spent,
// ten failed contracts' weight (the buyer is blocked at once), with the
// reason; `reputation PEER` prints it.
func abuseCounted(t *testing.T, seller, buyer *daemon) buyerScore {
	t.Helper()
	out, err := seller.cli("reputation", buyer.peerID(), "--json")
	if err != nil {
		t.Fatalf("reputation: %v: %s", err, out)
	}
	var score buyerScore
	if err := json.Unmarshal([]byte(out), &score); err != nil {
		t.Fatalf("reputation --json: %v\n%s", err, out)
	}
	if score.Evidence < 9.9 || !score.Blocked || len(score.Sources) == 0 || score.Sources[0].Outcomes["funding_double_spent"] <= 0 ||
		score.Sources[0].Bad < 9.9 || len(score.Notes) == 0 || !strings.HasPrefix(score.Notes[len(score.Notes)-1].Reason, payment.FailDoubleSpent+": its input is spent by ") {
		t.Fatalf("the seller's view of the buyer after its double-spend: %s", out)
	}
	if out, err := seller.cli("reputation", buyer.peerID()); err != nil || !strings.Contains(out, "funding_double_spent (channel:") || !strings.Contains(out, "status    blocked") {
		t.Fatalf("reputation: %v\n%s", err, out)
	}
	return score
}

// doubleSpend returns a transaction spending the inputs of funding (coins of
// buyer's wallet) to a key of the test's, signed with the wallet's keys
// derived from its seed (BIP 84, as btcwallet derives them).
func doubleSpend(t *testing.T, m *market, buyer *daemon, funding *wire.MsgTx) *wire.MsgTx {
	t.Helper()
	b, err := payment.ReadBackup(filepath.Join(buyer.dir, "wallet", "seed.json"))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := b.Open([]byte("test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	master, err := hdkeychain.NewMaster(seed, btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	// btcwallet's BIP 84 scope: m/84'/0'/0' on every network (its
	// KeyScopeBIP0084 has coin 0), derived the non-standard (legacy) way.
	acct := master
	for _, i := range []uint32{84, 0, 0} {
		if acct, err = acct.DeriveNonStandard(hdkeychain.HardenedKeyStart + i); err != nil { //nolint:staticcheck // as btcwallet
			t.Fatal(err)
		}
	}
	keys := map[string]*btcec.PrivateKey{}
	for branch := uint32(0); branch < 2; branch++ {
		for i := uint32(0); i < 40; i++ {
			for _, derive := range []func(*hdkeychain.ExtendedKey, uint32) (*hdkeychain.ExtendedKey, error){
				(*hdkeychain.ExtendedKey).Derive, (*hdkeychain.ExtendedKey).DeriveNonStandard, //nolint:staticcheck // as btcwallet
			} {
				br, err := derive(acct, branch)
				if err != nil {
					t.Fatal(err)
				}
				k, err := derive(br, i)
				if err != nil {
					t.Fatal(err)
				}
				priv, err := k.ECPrivKey()
				if err != nil {
					t.Fatal(err)
				}
				a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(priv.PubKey().SerializeCompressed()), btcdtest.Params)
				s, _ := txscript.PayToAddrScript(a)
				keys[string(s)] = priv
			}
		}
	}
	to, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	toAddr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(to.PubKey().SerializeCompressed()), btcdtest.Params)
	toScript, _ := txscript.PayToAddrScript(toAddr)
	tx := wire.NewMsgTx(2)
	prevs := txscript.NewMultiPrevOutFetcher(nil)
	var total int64
	for _, in := range funding.TxIn {
		prev, err := m.btcd.Client().GetRawTransaction(&in.PreviousOutPoint.Hash)
		if err != nil {
			t.Fatalf("funding input %s: %v", in.PreviousOutPoint, err)
		}
		po := prev.MsgTx().TxOut[in.PreviousOutPoint.Index]
		prevs.AddPrevOut(in.PreviousOutPoint, po)
		total += po.Value
		tx.AddTxIn(wire.NewTxIn(&in.PreviousOutPoint, nil, nil))
	}
	tx.AddTxOut(wire.NewTxOut(total-3*200, toScript))
	hashes := txscript.NewTxSigHashes(tx, prevs)
	for i, in := range tx.TxIn {
		po := prevs.FetchPrevOutput(in.PreviousOutPoint)
		key := keys[string(po.PkScript)]
		if key == nil {
			t.Fatalf("funding input %s pays %x: not a key of the buyer's wallet's first addresses", in.PreviousOutPoint, po.PkScript)
		}
		wit, err := txscript.WitnessSignature(tx, hashes, i, po.Value, po.PkScript, txscript.SigHashAll, key, true)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[i].Witness = wit
	}
	return tx
}
