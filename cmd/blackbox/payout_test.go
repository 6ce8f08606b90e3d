//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/chainhash"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// holdings is what the seller's `wallet balance --json` says about its money
// in channels.
func (d *daemon) holdings() payment.Holdings {
	d.m.t.Helper()
	out, err := d.cli("wallet", "balance", "--json")
	if err != nil {
		d.m.t.Fatalf("wallet balance --json: %v: %s", err, out)
	}
	var b struct {
		Channels *payment.Holdings `json:"channels"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.Channels == nil {
		d.m.t.Fatalf("wallet balance --json: %v\n%s", err, out)
	}
	return *b.Channels
}

// channelsWith is the daemon's channels with peer, oldest first.
func (d *daemon) channelsWith(peerID string) []*payment.Channel {
	d.m.t.Helper()
	var out []*payment.Channel
	list, err := d.api().Channels(context.Background())
	if err != nil {
		d.m.t.Fatalf("channels: %v", err)
	}
	for _, c := range list {
		if c.Peer == peerID {
			out = append(out, c)
		}
	}
	return out
}

// payoutMetric reads blackbox_payout_sats{state} from the daemon's /metrics.
func (d *daemon) payoutMetric(state string) int64 {
	d.m.t.Helper()
	resp, err := http.Get("http://" + metricsAddr(d.m.t, d.m.bin, d.proc) + "/metrics")
	if err != nil {
		d.m.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := `blackbox_payout_sats{state="` + state + `"} `
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				d.m.t.Fatalf("metric %s: %q", state, l)
			}
			return int64(f)
		}
	}
	d.m.t.Fatalf("no blackbox_payout_sats{state=%q} in /metrics", state)
	return 0
}

// txSize is a transaction's fee and virtual size as btcd has it.
type txSize struct{ vsize, fee int64 }

// onChain reads txid from btcd: its vsize, its fee (what its inputs held
// less what it pays; inputs looked up on chain) and what it pays script.
func (m *market) onChain(txid string, script []byte) (txSize, int64) {
	t := m.t
	t.Helper()
	h, err := chainhash.NewHashFromStr(txid)
	if err != nil {
		t.Fatal(err)
	}
	v, err := m.btcd.Client().GetRawTransactionVerbose(h)
	if err != nil {
		t.Fatalf("tx %s: %v", txid, err)
	}
	if v.Confirmations < 1 {
		t.Fatalf("tx %s unconfirmed", txid)
	}
	raw, err := m.btcd.Client().GetRawTransaction(h)
	if err != nil {
		t.Fatal(err)
	}
	var in, out, paid int64
	for _, ti := range raw.MsgTx().TxIn {
		prev, err := m.btcd.Client().GetRawTransaction(&ti.PreviousOutPoint.Hash)
		if err != nil {
			t.Fatalf("input %s of %s: %v", ti.PreviousOutPoint, txid, err)
		}
		in += prev.MsgTx().TxOut[ti.PreviousOutPoint.Index].Value
	}
	for i, o := range raw.MsgTx().TxOut {
		out += o.Value
		if bytes.Equal(o.PkScript, script) {
			paid += o.Value
			// Still unspent at the payout address, confirmed.
			res, err := m.btcd.Client().GetTxOut(h, uint32(i), false)
			if err != nil || res == nil || res.Confirmations < 1 {
				t.Fatalf("payout output %s:%d: %+v, %v", txid, i, res, err)
			}
		}
	}
	return txSize{vsize: int64(v.Vsize), fee: in - out}, paid
}

// TestClosePolicyPayout: a seller at the default prices (start fee
// included) with a payout address earns from a buyer's jobs; what no close
// can pay yet is shown as such and not closed, even when idle; once the
// channel holds payment.close_at and the buyer's contract has ended, the
// close policy closes it on its own, and the payout address receives on
// chain exactly what `wallet balance` said before the close would be left,
// at the fee it said. Then, restarted with a payout xpub and close_idle, a
// new channel is closed after close_idle to a fresh address of the xpub.
// The real funding and close sizes give the on-chain bytes per contract.
func TestClosePolicyPayout(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	work := t.TempDir()
	addr, script := payoutAddress(t)
	const closeAt = 800
	// Direct payouts (payout_sweep off): the address gets the close's own
	// output, the 462 sat status predicts (too small to be swept: a sweep
	// of it would pay less than its fee).
	seller := m.daemon([]string{"BLACKBOX_PAYMENT_PAYOUT_ADDRESS=" + addr, "BLACKBOX_PAYMENT_PAYOUT_SWEEP=false",
		fmt.Sprintf("BLACKBOX_PAYMENT_CLOSE_AT=%d", closeAt), "BLACKBOX_PAYMENT_CLOSE_IDLE=0s"}, "--metrics-addr", "127.0.0.1:0")
	sellerID := seller.peerID()
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, work)
	// Default prices, default --max-price: a minute of one core.
	flags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m"}
	run := func(i int, cmd ...string) *contract.JobStatus {
		t.Helper()
		j := submit(t, buyer, image, filepath.Join(work, fmt.Sprintf("res%d", i)), flags, cmd...)
		if j.State != contract.JobDone || j.Paid <= 200 {
			t.Fatalf("job %d: %s paid %d: %s\n%s", i, j.State, j.Paid, j.Error, seller.logs.String())
		}
		return j
	}

	// `market` shows the start fee, and a job's cost includes it.
	out, err := buyer.cli("market", "--time", "1m")
	if err != nil || !strings.Contains(out, "START FEE") || !strings.Contains(out, "200 sat") {
		t.Fatalf("market does not show the 200 sat start fee: %v\n%s", err, out)
	}

	// Three jobs: ~603 sat, a close would leave ~261 sat after its 342
	// sat fee: dust, so nothing can be closed, and the seller is told so.
	var paid int64
	for i := range 3 {
		j := run(i, "echo", "hi")
		paid += j.Paid
		if fee := j.Attempts[len(j.Attempts)-1].StartFee; fee != 200 {
			t.Fatalf("job %d: start fee %d, want the default 200", i, fee)
		}
	}
	waitFor(t, 30*time.Second, "the seller to hold the three payments", func() bool {
		cs := seller.channelsWith(buyerID)
		return len(cs) == 1 && cs[0].Paid == paid
	})
	ch := seller.channelsWith(buyerID)[0]
	h := seller.holdings()
	if h.InChannels != paid || h.CloseFee != ch.CloseFee || h.AfterClose != 0 || h.Unclaimable != paid {
		t.Fatalf("holdings with %d sat paid and a %d sat close fee: %+v", paid, ch.CloseFee, h)
	}
	st, err := seller.cli("status")
	if err != nil || !strings.Contains(st, "no close can pay yet") || !strings.Contains(st, "to "+addr+"; channels closed at 800 sat held when") {
		t.Fatalf("status does not say the channel cannot be closed yet, or where and when closes pay: %v\n%s", err, st)
	}
	chOut, err := seller.cli("channels")
	if err != nil || !strings.Contains(chOut, "CLOSE FEE") || !strings.Contains(chOut, fmt.Sprintf("%d sat", ch.CloseFee)) {
		t.Fatalf("channels does not show the close fee: %v\n%s", err, chOut)
	}

	// The fourth job runs for a while: the channel holds close_at, but a
	// contract of its buyer runs, so it stays open; what a close would
	// cost and leave is shown.
	id := submitDetached(t, buyer, image, flags, "sh", "-c", "sleep 8")
	waitFor(t, 60*time.Second, "the fourth job's first payment", func() bool {
		cs := seller.channelsWith(buyerID)
		return len(cs) == 1 && cs[0].Paid >= closeAt
	})
	before := seller.holdings()
	ch = seller.channelsWith(buyerID)[0]
	if ch.State != payment.StateOpen || before.CloseFee != ch.CloseFee || before.AfterClose != ch.Paid-ch.CloseFee {
		t.Fatalf("while the job runs: channel %s, holdings %+v", ch.State, before)
	}
	// The same numbers in earnings (what status and the dashboard show)
	// and in the metrics.
	if e := seller.earnings(); e.Holdings != before || e.CloseFeeSat != before.CloseFee || e.AfterCloseSat != before.AfterClose {
		t.Fatalf("earnings show %+v (close fee %d, after close %d); wallet balance %+v", e.Holdings, e.CloseFeeSat, e.AfterCloseSat, before)
	}
	if fee, left := seller.payoutMetric("close_fee"), seller.payoutMetric("after_close"); fee != before.CloseFee || left != before.AfterClose {
		t.Fatalf("metrics: close fee %d, after close %d; want %+v", fee, left, before)
	}
	t.Logf("before the close: in channels %d sat, close fee %d sat, after close %d sat", before.InChannels, before.CloseFee, before.AfterClose)
	waitJob(t, buyer, id, 2*time.Minute, "the fourth job to end", ended)
	waitFor(t, 90*time.Second, "the close policy to close the channel and the close to confirm", func() bool {
		cs := seller.channelsWith(buyerID)
		return len(cs) == 1 && cs[0].State == payment.StateClosed
	})
	ch = seller.channelsWith(buyerID)[0]
	if !strings.Contains(seller.logs.String(), "close_at is 800") {
		t.Fatalf("the close was not the policy's close_at\n%s", tail(seller.logs.String(), 40))
	}
	closeTx, got := m.onChain(ch.SpendTxid, script)
	if got != ch.Paid-ch.CloseFee || closeTx.fee != before.CloseFee {
		t.Fatalf("the payout address received %d sat at a fee of %d; the channel paid %d with a close fee of %d", got, closeTx.fee, ch.Paid, ch.CloseFee)
	}
	// What was shown before the close is what arrived, within the sats a
	// final interval's bill may add.
	if d := got - before.AfterClose; d < 0 || d > 2 {
		t.Fatalf("shown before the close: %d sat left; received %d", before.AfterClose, got)
	}
	after := seller.holdings()
	if after.Settled != got || after.SettledFees != closeTx.fee || after.InChannels != 0 {
		t.Fatalf("holdings after the close: %+v", after)
	}
	if m := seller.payoutMetric("settled"); m != got {
		t.Fatalf("metrics: settled %d, want %d", m, got)
	}
	if bal, err := seller.cli("wallet", "balance"); err != nil || !strings.Contains(bal, fmt.Sprintf("settled: %d sat paid to the payout address (after %d sat in close fees)", got, closeTx.fee)) {
		t.Fatalf("wallet balance does not show what settled: %v\n%s", err, bal)
	}
	fund, err := chainhash.NewHashFromStr(strings.Split(ch.ID, ":")[0])
	if err != nil {
		t.Fatal(err)
	}
	fundTx, _ := m.onChain(fund.String(), nil)
	contracts1 := len(ch.Contracts)
	t.Logf("close_at: %d contracts, %d sat paid; payout %d sat to %s; funding %d vB (fee %d), close %d vB (fee %d = %d sat/vB)",
		contracts1, ch.Paid, got, addr, fundTx.vsize, fundTx.fee, closeTx.vsize, closeTx.fee, closeTx.fee/closeTx.vsize)

	// Restarted with a payout xpub and close_idle: a new channel; two jobs
	// (a close would pay dust) stay open however idle; two more make it
	// worth its fee, and it closes once idle, to a child of the xpub.
	master, err := hdkeychain.NewMaster(bytes.Repeat([]byte{7}, 32), btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	xpub, err := master.Neuter()
	if err != nil {
		t.Fatal(err)
	}
	const idle = 10 * time.Second
	seller.stop()
	seller.env = append(seller.env, "BLACKBOX_PAYMENT_PAYOUT_ADDRESS=", "BLACKBOX_PAYMENT_PAYOUT_XPUB="+xpub.String(),
		"BLACKBOX_PAYMENT_CLOSE_AT=0", "BLACKBOX_PAYMENT_CLOSE_IDLE="+idle.String())
	seller.start()
	if seller.peerID() != sellerID {
		t.Fatal("the seller changed identity")
	}
	m.waitMarket(buyer, 1)
	if st, err := seller.cli("status"); err != nil || !strings.Contains(st, "to a fresh address of payment.payout_xpub per channel; channels closed after 10s idle") {
		t.Fatalf("status after the restart: %v\n%s", err, st)
	}
	paid = 0
	for i := range 2 {
		paid += run(10+i, "echo", "hi").Paid
	}
	time.Sleep(2 * idle)
	cs := seller.channelsWith(buyerID)
	if len(cs) != 2 || cs[1].State != payment.StateOpen || cs[1].Paid != paid {
		t.Fatalf("after two jobs and 2×close_idle: want the new channel open with %d sat: %+v", paid, cs)
	}
	for i := range 2 {
		paid += run(20+i, "echo", "hi").Paid
	}
	waitFor(t, 90*time.Second, "the idle channel to close and the close to confirm", func() bool {
		cs := seller.channelsWith(buyerID)
		return len(cs) == 2 && cs[1].State == payment.StateClosed
	})
	ch2 := seller.channelsWith(buyerID)[1]
	if !strings.Contains(seller.logs.String(), "close_idle is 10s") {
		t.Fatalf("the close was not the policy's close_idle\n%s", tail(seller.logs.String(), 40))
	}
	cfg := payment.Config{Network: "regtest", PayoutXpub: xpub.String()}
	child := -1
	for i := range 20 {
		if s, _ := cfg.PayoutScript(uint32(i)); bytes.Equal(s, ch2.SellerScript) {
			child = i
		}
	}
	if child < 0 || bytes.Equal(ch2.SellerScript, script) {
		t.Fatalf("the second channel pays %x: not a child of the xpub", ch2.SellerScript)
	}
	close2, got2 := m.onChain(ch2.SpendTxid, ch2.SellerScript)
	if got2 != ch2.Paid-ch2.CloseFee || close2.fee != ch2.CloseFee {
		t.Fatalf("the xpub address received %d at a fee of %d; want %d - %d", got2, close2.fee, ch2.Paid, ch2.CloseFee)
	}
	t.Logf("close_idle: %d contracts, %d sat paid; payout %d sat to xpub child %d; close %d vB", len(ch2.Contracts), ch2.Paid, got2, child, close2.vsize)

	// On-chain bytes per contract, from these real transactions: one
	// funding and one close per channel, however many contracts it carries.
	perChannel := fundTx.vsize + closeTx.vsize
	for _, n := range []int64{1, 10, 100} {
		t.Logf("on-chain bytes per contract at %d per channel: (%d funding + %d close) / %d = %.1f vB", n, fundTx.vsize, closeTx.vsize, n, float64(perChannel)/float64(n))
	}
}
