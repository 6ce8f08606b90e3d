//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// Escrowed jobs with three real processes (buyer, seller, arbiter) on a
// btcd regtest mining a block every half second. Escrows are small: 100
// sats per 2s interval for one core, 1,000 sats of start fee, so a
// 1-minute job is escrowed for 4,000 sats (the smallest escrow used to be
// about 30,000 sats: a release at max_fee_rate had to leave more than
// dust; now it follows the fee source's rate). The escrow's CLTV delay is its own,
// arbiter.delay: 20 blocks here (payment.channel_lifetime keeps its
// default, 2016).

const escrowArbiterFee = 1000

type escrowTrio struct {
	m                       *market
	seller, arbiter, buyer  *daemon
	sellerScript, arbScript []byte
}

func newEscrowTrio(t *testing.T, buyerExtra ...string) *escrowTrio {
	m := newMarket(t)
	m.env = append(m.env, "BLACKBOX_ARBITER_DELAY=20")
	sAddr, sScript := payoutAddress(t)
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+sAddr, "BLACKBOX_METER_PRICING_CORE_HOUR=180000"))
	aAddr, aScript := payoutAddress(t)
	arbiter := m.daemon([]string{"BLACKBOX_METER_MAX_CPU=0", "BLACKBOX_ARBITER_ENABLED=true",
		"BLACKBOX_ARBITER_FEE_SAT=1000", "BLACKBOX_PAYMENT_PAYOUT_ADDRESS=" + aAddr}, "--bootstrap", seller.bootAddr())
	buyer := m.daemon(append(append([]string{}, buyerEnv...), buyerExtra...), "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 2_000_000)
	m.waitMarket(buyer, 1)
	return &escrowTrio{m: m, seller: seller, arbiter: arbiter, buyer: buyer, sellerScript: sScript, arbScript: aScript}
}

// escrows is a node's escrows.
func escrows(t *testing.T, d *daemon) []*payment.EscrowRecord {
	t.Helper()
	out, err := d.cli("arbitrate", "list", "--json")
	if err != nil {
		t.Fatalf("arbitrate list: %v: %s", err, out)
	}
	var es []*payment.EscrowRecord
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("arbitrate list --json: %v: %s", err, out)
	}
	return es
}

// escrowOf is d's escrow of contract id (nil: none).
func escrowOf(t *testing.T, d *daemon, id string) *payment.EscrowRecord {
	t.Helper()
	for _, e := range escrows(t, d) {
		if e.Market != nil && e.Market.Contract == id {
			return e
		}
	}
	return nil
}

func (tr *escrowTrio) waitState(t *testing.T, d *daemon, contractID string, s payment.EscrowState) *payment.EscrowRecord {
	t.Helper()
	var e *payment.EscrowRecord
	waitFor(t, 120*time.Second, "escrow of "+contractID+" to be "+s.String(), func() bool {
		e = escrowOf(t, d, contractID)
		return e != nil && e.State == s
	})
	return e
}

// tx is a confirmed transaction of the regtest chain.
func (tr *escrowTrio) confirmedTx(t *testing.T, txid string) *wire.MsgTx {
	t.Helper()
	h, err := chainhash.NewHashFromStr(txid)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tr.m.btcd.Client().GetRawTransactionVerbose(h)
	if err != nil || v.Confirmations < 1 {
		t.Fatalf("tx %s: %v confirmations, %v", txid, v, err)
	}
	raw, err := tr.m.btcd.Client().GetRawTransaction(h)
	if err != nil {
		t.Fatal(err)
	}
	return raw.MsgTx()
}

func vsize(tx *wire.MsgTx) int {
	return (3*tx.SerializeSizeStripped() + tx.SerializeSize() + 3) / 4
}

func paysTo(tx *wire.MsgTx, script []byte) int64 {
	var n int64
	for _, o := range tx.TxOut {
		if bytes.Equal(o.PkScript, script) {
			n += o.Value
		}
	}
	return n
}

// checkFunding checks the escrow's funding paid the arbiter its fee.
func (tr *escrowTrio) checkFunding(t *testing.T, e *payment.EscrowRecord) {
	t.Helper()
	fund := tr.confirmedTx(t, strings.Split(e.ID, ":")[0])
	if got := paysTo(fund, tr.arbScript); got != escrowArbiterFee {
		t.Fatalf("the funding %s pays the arbiter %d sats, want its fee %d", e.ID, got, escrowArbiterFee)
	}
}

var escrowJobFlags = []string{"--cpus", "1", "--memory", "256MiB", "--time", "1m", "--max-price", "100000"}

// TestEscrowRelease: the buyer funds an escrow for the job's whole price,
// the seller starts once it is confirmed, no channel is opened, and on a
// receipt both accept the release pays the seller's payout address on
// chain; the arbiter got its fee in the funding and nothing from the
// release. Bad input is refused and changes nothing.
func TestEscrowRelease(t *testing.T) {
	t.Parallel()
	tr := newEscrowTrio(t)
	work := t.TempDir()
	image := busybox(t, work)

	// Bad input: an arbiter that is no arbiter.
	out, err := tr.buyer.cli(append(append([]string{"submit", "--detach", "--escrow", tr.seller.peerID(), "--image", image}, escrowJobFlags...), "--", "true")...)
	if err == nil || !strings.Contains(out, "not an arbiter") {
		t.Fatalf("submit --escrow SELLER: %v: %s", err, out)
	}
	if jobs, err := tr.buyer.api().Jobs(context.Background()); err != nil || len(jobs) != 0 {
		t.Fatalf("a refused escrow job left jobs: %v, %v", jobs, err)
	}
	// A dispute of an unknown job.
	if out, err := tr.buyer.cli("dispute", "nosuchjob", "--reason", "x"); err == nil || !strings.Contains(out, "no escrowed job") {
		t.Fatalf("dispute of an unknown job: %v: %s", err, out)
	}

	start := time.Now()
	j := submit(t, tr.buyer, image, filepath.Join(work, "results"), append([]string{"--escrow", tr.arbiter.peerID()}, escrowJobFlags...),
		"sh", "-c", "echo hello > /out/hello.txt; echo done")
	if j.State != contract.JobDone || j.ExitCode != 0 || j.Receipt == nil {
		t.Fatalf("job %s: state %s exit %d error %q\n%s", j.ID, j.State, j.ExitCode, j.Error, tr.buyer.logs.String())
	}
	t.Logf("escrowed job: submit to result %s (funding confirmed before the start, a block every 0.5s)", time.Since(start).Round(time.Millisecond))
	if chs, err := tr.buyer.api().Channels(context.Background()); err != nil || len(chs) != 0 {
		t.Fatalf("an escrowed job opened channels: %+v, %v", chs, err)
	}
	e := tr.waitState(t, tr.seller, j.ContractID, payment.EscrowReleased)
	tr.checkFunding(t, e)
	spend := tr.confirmedTx(t, e.SpendTxid)
	// The job ended long before its minute: the release pays the seller
	// what the receipt billed, less the fee, and the buyer the rest.
	fee := e.Amount - paysTo(spend, tr.sellerScript) - paysTo(spend, e.BuyerScript)
	if j.Billed <= 0 || j.Billed >= e.Amount*2/3 || e.Release != j.Billed || len(spend.TxOut) != 2 ||
		paysTo(spend, tr.sellerScript) != j.Billed-fee || paysTo(spend, e.BuyerScript) != e.Amount-j.Billed || fee <= 0 || fee > 5000 {
		t.Fatalf("release %s of %d sats for a bill of %d (share %d): %d to the seller, %d to the buyer, fee %d",
			e.SpendTxid, e.Amount, j.Billed, e.Release, paysTo(spend, tr.sellerScript), paysTo(spend, e.BuyerScript), fee)
	}
	if paysTo(spend, tr.arbScript) != 0 {
		t.Fatal("the release paid the arbiter")
	}
	if e.Amount != j.Attempts[0].Price {
		t.Fatalf("escrowed %d sats, the contract costs %d", e.Amount, j.Attempts[0].Price)
	}
	be := tr.waitState(t, tr.buyer, j.ContractID, payment.EscrowReleased)
	ae := tr.waitState(t, tr.arbiter, j.ContractID, payment.EscrowReleased)
	if be.SpendTxid != e.SpendTxid || ae.SpendTxid != e.SpendTxid || ae.Market.Decision != "" {
		t.Fatalf("buyer saw %s, arbiter %s (decision %q), seller %s", be.SpendTxid, ae.SpendTxid, ae.Market.Decision, e.SpendTxid)
	}
	fund := tr.confirmedTx(t, strings.Split(e.ID, ":")[0])
	t.Logf("on chain: funding %d vB (escrow, arbiter fee, change), release %d vB", vsize(fund), vsize(spend))
	t.Logf("escrow %s of %d sats: the receipt billed %d; released %d to the seller (after the fee %d), %d back to the buyer; arbiter fee %d in the funding",
		e.ID, e.Amount, j.Billed, paysTo(spend, tr.sellerScript), fee, paysTo(spend, e.BuyerScript), escrowArbiterFee)

	// A small escrow, far below the old floor of about 30,000 sats.
	if e.Amount > 10_000 {
		t.Fatalf("escrow of %d sats: not a small one", e.Amount)
	}

	// Earnings: the seller's show the payout (earned, and the release
	// fee it paid); the buyer's what it spent, got back and paid.
	var earn api.Earnings
	waitFor(t, 60*time.Second, "the seller's earnings to show the escrow payout", func() bool {
		earn, err = tr.seller.api().Earnings(context.Background(), 0)
		return err == nil && len(earn.Escrow.Payouts) == 1
	})
	p := earn.Escrow.Payouts[0]
	if p.Escrow != e.ID || p.Role != "seller" || p.Kind != "release" || p.Earned != j.Billed || p.FeesPaid != fee || p.ToBuyer != e.Amount-j.Billed {
		t.Fatalf("seller's escrow payout %+v", p)
	}
	if earn.Escrow.EarnedSat != j.Billed || earn.Escrow.FeesSat != fee || earn.Today.EarnedSat < j.Billed || earn.Today.FeesSat < fee {
		t.Fatalf("seller's earnings: escrow %+v, today earned %d fees %d", earn.Escrow, earn.Today.EarnedSat, earn.Today.FeesSat)
	}
	var bearn api.Earnings
	waitFor(t, 60*time.Second, "the buyer's earnings to show its escrow spending", func() bool {
		bearn, err = tr.buyer.api().Earnings(context.Background(), 0)
		return err == nil && len(bearn.Escrow.Payouts) == 1
	})
	if bp := bearn.Escrow.Payouts[0]; bp.Role != "buyer" || bp.Spent != j.Billed || bp.ToBuyer != e.Amount-j.Billed || bp.ArbiterFee != escrowArbiterFee || bp.FundingFee <= 0 || bp.FeesPaid != 0 {
		t.Fatalf("buyer's escrow payout %+v", bp)
	}
	if bearn.Escrow.SpentSat != j.Billed || bearn.Escrow.RefundedSat != e.Amount-j.Billed || bearn.Escrow.ArbiterFeesSat != escrowArbiterFee {
		t.Fatalf("buyer's escrow spending %+v", bearn.Escrow)
	}
	out, err = tr.seller.cli("earnings")
	if err != nil || !strings.Contains(out, "Escrows (period): earned") || !strings.Contains(out, "release") {
		t.Fatalf("earnings: %v\n%s", err, out)
	}
	t.Logf("seller's earnings: %+v", earn.Escrow)
	t.Logf("buyer's escrow spending: spent %d, refunded %d, arbiter fees %d, funding fees about %d", bearn.Escrow.SpentSat, bearn.Escrow.RefundedSat, bearn.Escrow.ArbiterFeesSat, bearn.Escrow.FundingFeesSat)
}

// TestEscrowDisputeForSeller: the buyer (arbiter.release: manual) does not
// release; the seller disputes with its signed receipt, the arbiter sees
// the case and decides for the seller, and after the CLTV delay the seller
// completes the payout alone with the arbiter's signature. A second
// decision is refused and changes nothing.
func TestEscrowDisputeForSeller(t *testing.T) {
	t.Parallel()
	tr := newEscrowTrio(t, "BLACKBOX_ARBITER_RELEASE=manual")
	work := t.TempDir()
	image := busybox(t, work)
	j := submit(t, tr.buyer, image, filepath.Join(work, "results"), append([]string{"--escrow", tr.arbiter.peerID()}, escrowJobFlags...),
		"sh", "-c", "echo hello > /out/hello.txt; echo done")
	if j.State != contract.JobDone || j.Receipt == nil {
		t.Fatalf("job %s: state %s error %q", j.ID, j.State, j.Error)
	}
	se := tr.waitState(t, tr.seller, j.ContractID, payment.EscrowFunded)
	time.Sleep(5 * time.Second) // the buyer holds the release back
	if e := escrowOf(t, tr.seller, j.ContractID); e.State != payment.EscrowFunded {
		t.Fatalf("held escrow is %s", e.State)
	}
	out, err := tr.seller.cli("dispute", j.ContractID, "--reason", "delivered with a signed receipt; the buyer does not release")
	if err != nil {
		t.Fatalf("dispute: %v: %s", err, out)
	}
	ae := tr.waitState(t, tr.arbiter, j.ContractID, payment.EscrowDisputed)
	out, err = tr.arbiter.cli("arbitrate", "show", ae.ID)
	if err != nil || !strings.Contains(out, "receipt (signed by the seller): reason exited") || !strings.Contains(out, j.Receipt.Outputs[0].SHA256) {
		t.Fatalf("arbitrate show: %v\n%s", err, out)
	}
	if out, err := tr.arbiter.cli("arbitrate", "decide", ae.ID, "--pay", "seller"); err != nil {
		t.Fatalf("decide: %v: %s", err, out)
	}
	out, err = tr.arbiter.cli("arbitrate", "decide", ae.ID, "--pay", "buyer")
	if err == nil || !strings.Contains(out, "decided already") {
		t.Fatalf("a second decision: %v: %s", err, out)
	}
	if e := escrowOf(t, tr.arbiter, j.ContractID); e.Market.Decision != "seller" {
		t.Fatalf("the second decision changed the first: %q", e.Market.Decision)
	}
	e := tr.waitState(t, tr.seller, j.ContractID, payment.EscrowArbitrated)
	spend := tr.confirmedTx(t, e.SpendTxid)
	if got := paysTo(spend, tr.sellerScript); got <= 0 || got < se.Amount-100_000 {
		t.Fatalf("arbitrated payout %s pays the seller %d of %d", e.SpendTxid, got, se.Amount)
	}
	if spend.LockTime < e.Delay {
		t.Fatalf("arbitrated payout locktime %d before the delay %d", spend.LockTime, e.Delay)
	}
	// The escrow's own delay (arbiter.delay 20), not channel_lifetime (2016).
	if d := int64(e.Delay) - int64(se.OpenHeight); d < 14 || d > 20 {
		t.Fatalf("escrow delay of %d blocks, want about arbiter.delay 20", d)
	}
	t.Logf("escrow delay %d blocks (arbiter.delay), the payout confirmed in a block after %d", int64(e.Delay)-int64(se.OpenHeight), e.Delay)
	// The arbitrated payout is in the seller's earnings: the whole escrow
	// earned, the payout's fee paid.
	waitFor(t, 60*time.Second, "the arbitrated payout in the seller's earnings", func() bool {
		earn, err := tr.seller.api().Earnings(context.Background(), 0)
		if err != nil || len(earn.Escrow.Payouts) != 1 {
			return false
		}
		p := earn.Escrow.Payouts[0]
		if p.Kind != "payout_seller" || p.Earned != e.Amount || p.FeesPaid != e.Amount-paysTo(spend, tr.sellerScript) {
			t.Fatalf("seller's arbitrated payout %+v", p)
		}
		return true
	})
	tr.checkFunding(t, e)
	tr.waitState(t, tr.buyer, j.ContractID, payment.EscrowArbitrated)
	t.Logf("escrow %s: decided for the seller, %d sats paid by %s after block %d", e.ID, paysTo(spend, tr.sellerScript), e.SpendTxid, e.Delay)
}

// TestEscrowSellerVanishes: the seller is killed (kill -9) while the job
// runs; the buyer disputes, the arbiter decides for the buyer, and after
// the CLTV delay the buyer is refunded with the arbiter's signature,
// without the seller.
func TestEscrowSellerVanishes(t *testing.T) {
	t.Parallel()
	tr := newEscrowTrio(t)
	work := t.TempDir()
	image := busybox(t, work)
	id := submitDetached(t, tr.buyer, image, append([]string{"--escrow", tr.arbiter.peerID()}, escrowJobFlags...), "sleep", "50")
	var j *contract.JobStatus
	waitFor(t, 120*time.Second, "the job to run", func() bool {
		j = tr.buyer.job(id)
		return j.State == contract.JobRunning
	})
	be := tr.waitState(t, tr.buyer, j.ContractID, payment.EscrowFunded)
	tr.seller.kill()
	waitFor(t, 120*time.Second, "the attempt to fail", func() bool {
		j = tr.buyer.job(id)
		return len(j.Attempts) > 0 && j.Attempts[0].State == contract.StateFailed
	})
	// No other seller: the job would search on; stop it.
	if out, err := tr.buyer.cli("cancel", id); err != nil {
		t.Fatalf("cancel: %v: %s", err, out)
	}
	if out, err := tr.buyer.cli("dispute", id, "--reason", "the seller vanished before delivering"); err != nil {
		t.Fatalf("dispute: %v: %s", err, out)
	}
	// The funding confirmed, nothing else moves the buyer's wallet: what
	// it holds now plus the refund is what it must hold after.
	before := tr.buyer.balance()
	ae := tr.waitState(t, tr.arbiter, be.Market.Contract, payment.EscrowDisputed)
	out, err := tr.arbiter.cli("arbitrate", "show", ae.ID)
	if err != nil || !strings.Contains(out, "receipt: none") {
		t.Fatalf("arbitrate show: %v\n%s", err, out)
	}
	if out, err := tr.arbiter.cli("arbitrate", "decide", ae.ID, "--pay", "buyer"); err != nil {
		t.Fatalf("decide: %v: %s", err, out)
	}
	e := tr.waitState(t, tr.buyer, be.Market.Contract, payment.EscrowArbitrated)
	spend := tr.confirmedTx(t, e.SpendTxid)
	if got := paysTo(spend, e.BuyerScript); got <= 0 || got < e.Amount-100_000 {
		t.Fatalf("refund %s pays the buyer %d of %d", e.SpendTxid, got, e.Amount)
	}
	if paysTo(spend, tr.sellerScript) != 0 {
		t.Fatal("the refund paid the seller")
	}
	// The refund is in the buyer's escrow spending: nothing spent, the
	// escrow back less the fee it paid.
	waitFor(t, 60*time.Second, "the refund in the buyer's earnings", func() bool {
		earn, err := tr.buyer.api().Earnings(context.Background(), 0)
		if err != nil || len(earn.Escrow.Payouts) != 1 {
			return false
		}
		if p := earn.Escrow.Payouts[0]; p.Kind != "payout_buyer" || p.Spent != 0 || p.ToBuyer != paysTo(spend, e.BuyerScript) ||
			p.FeesPaid != e.Amount-p.ToBuyer || earn.Escrow.RefundedSat != p.ToBuyer {
			t.Fatalf("buyer's refund %+v (escrow %+v)", p, earn.Escrow)
		}
		return true
	})
	// The refund reached the buyer's wallet.
	refund := paysTo(spend, e.BuyerScript)
	waitFor(t, 60*time.Second, "the refund in the buyer's wallet", func() bool {
		return tr.buyer.balance().Total == before.Total+refund
	})
	t.Logf("buyer's wallet: %d sat total before the refund, %d after (refund %d sat, escrow %d, payout fee %d, %d vB)",
		before.Total, before.Total+refund, refund, e.Amount, e.Amount-refund, vsize(spend))
	// The seller comes back: it sees the escrow paid out to the buyer, and
	// its killed job's container goes.
	tr.seller.start()
	se := tr.waitState(t, tr.seller, be.Market.Contract, payment.EscrowArbitrated)
	if se.SpendTxid != e.SpendTxid {
		t.Fatalf("the seller saw spend %s, the buyer made %s", se.SpendTxid, e.SpendTxid)
	}
	waitFor(t, 60*time.Second, "the killed job's container to be gone", func() bool { return tr.m.jobContainers(be.Market.Contract) == 0 })
	// Recorded once: a restart of the buyer counts the refund again
	// neither in its earnings nor in its wallet.
	tr.buyer.stop()
	tr.buyer.start()
	tr.buyer.waitChain(60*time.Second, api.ChainConnected)
	time.Sleep(3 * time.Second) // a few blocks' ticks
	earn, err := tr.buyer.api().Earnings(context.Background(), 0)
	if err != nil || len(earn.Escrow.Payouts) != 1 || earn.Escrow.RefundedSat != refund {
		t.Fatalf("after a restart the buyer's escrow spending is %+v (%v), want the one refund of %d", earn.Escrow, err, refund)
	}
	if b := tr.buyer.balance(); b.Total != before.Total+refund {
		t.Fatalf("after a restart the buyer's wallet holds %d, want %d", b.Total, before.Total+refund)
	}
	if out, err := tr.buyer.cli("earnings"); err != nil || strings.Count(out, "payout_buyer") > 1 {
		t.Fatalf("earnings: %v\n%s", err, out)
	}
	t.Logf("escrow %s: refunded %d sats to the buyer by %s after block %d, without the seller", e.ID, paysTo(spend, e.BuyerScript), e.SpendTxid, e.Delay)
}

// TestEscrowSplit: the buyer (arbiter.release: manual) disputes a
// delivered job; the arbiter splits the escrow, 2,000 sats to the seller
// and the rest less the fee to the buyer, and after the delay one of them
// completes it. A malformed decision is refused and changes nothing. The
// buyer's fee rate is 20 sat/vB: a 1-minute job (4,000 sats) is below the
// smallest escrow worth funding at that rate, and refused before anything
// exists, with the minimum and why; a 10-minute one (31,000) is not.
func TestEscrowSplit(t *testing.T) {
	t.Parallel()
	tr := newEscrowTrio(t, "BLACKBOX_ARBITER_RELEASE=manual", "BLACKBOX_PAYMENT_MIN_FEE_RATE=20", "BLACKBOX_PAYMENT_FALLBACK_FEE_RATE=20")
	work := t.TempDir()
	image := busybox(t, work)
	out, err := tr.buyer.cli("submit", "--detach", "--escrow", tr.arbiter.peerID(), "--image", image, "--cpus", "1", "--memory", "256MiB", "--time", "1m", "--max-price", "100000", "--", "true")
	if err == nil || !strings.Contains(out, "below the smallest escrow worth funding now") || !strings.Contains(out, "sat/vB") {
		t.Fatalf("a too small escrow: %v: %s", err, out)
	}
	if jobs, err := tr.buyer.api().Jobs(context.Background()); err != nil || len(jobs) != 0 {
		t.Fatalf("a refused small escrow left jobs: %v, %v", jobs, err)
	}
	t.Logf("too small: %s", strings.TrimSpace(out))
	j := submit(t, tr.buyer, image, filepath.Join(work, "results"), []string{"--escrow", tr.arbiter.peerID(), "--cpus", "1", "--memory", "256MiB", "--time", "10m", "--max-price", "100000"},
		"sh", "-c", "echo half")
	if j.State != contract.JobDone || j.Receipt == nil {
		t.Fatalf("job %s: state %s error %q", j.ID, j.State, j.Error)
	}
	tr.waitState(t, tr.buyer, j.ContractID, payment.EscrowFunded)
	if out, err := tr.buyer.cli("dispute", j.ID, "--reason", "half the work is missing"); err != nil {
		t.Fatalf("dispute: %v: %s", err, out)
	}
	ae := tr.waitState(t, tr.arbiter, j.ContractID, payment.EscrowDisputed)
	for _, bad := range []string{"split:abc", "split:0", "split:99999999", "everyone"} {
		if out, err := tr.arbiter.cli("arbitrate", "decide", ae.ID, "--pay", bad); err == nil {
			t.Fatalf("decide --pay %s: %s", bad, out)
		}
	}
	// Shares that leave one side dust after the fee: refused with the
	// range, before anything is recorded.
	for _, share := range []int64{100, ae.Amount - 300} {
		out, err := tr.arbiter.cli("arbitrate", "decide", ae.ID, "--pay", fmt.Sprintf("split:%d", share))
		if err == nil || !strings.Contains(out, "is between 294 and") || !strings.Contains(out, "--pay seller or --pay buyer") {
			t.Fatalf("decide --pay split:%d of %d: %v: %s", share, ae.Amount, err, out)
		}
		t.Logf("split:%d refused: %s", share, strings.TrimSpace(out))
	}
	if e := escrowOf(t, tr.arbiter, j.ContractID); e.Market.Decision != "" || e.Split != 0 {
		t.Fatalf("a refused decision left %q split %d", e.Market.Decision, e.Split)
	}
	if out, err := tr.arbiter.cli("arbitrate", "decide", ae.ID, "--pay", "split:2000"); err != nil {
		t.Fatalf("decide: %v: %s", err, out)
	}
	e := tr.waitState(t, tr.buyer, j.ContractID, payment.EscrowArbitrated)
	spend := tr.confirmedTx(t, e.SpendTxid)
	fee := e.Amount - paysTo(spend, tr.sellerScript) - paysTo(spend, e.BuyerScript)
	if paysTo(spend, tr.sellerScript) != 2000 || paysTo(spend, e.BuyerScript) <= 0 || fee <= 0 || fee > 10_000 {
		t.Fatalf("split %s pays the seller %d and the buyer %d of %d", e.SpendTxid, paysTo(spend, tr.sellerScript), paysTo(spend, e.BuyerScript), e.Amount)
	}
	tr.waitState(t, tr.seller, j.ContractID, payment.EscrowArbitrated)
	t.Logf("escrow %s split: %d sats to the seller, %d to the buyer, fee %d", e.ID, paysTo(spend, tr.sellerScript), paysTo(spend, e.BuyerScript), fee)
}
