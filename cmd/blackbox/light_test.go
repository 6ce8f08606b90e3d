//go:build integration

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// lightDaemon starts `blackbox serve` on the embedded light client with no
// RPC settings at all: only the wallet passphrase, regtest, and btcd's P2P
// port as its one Bitcoin peer (regtest has no DNS seeds).
func (m *market) lightDaemon(extra []string, args ...string) *daemon {
	m.t.Helper()
	lm := *m
	lm.env = nil
	for _, e := range m.env {
		if !strings.HasPrefix(e, "BLACKBOX_PAYMENT_RPC_") {
			lm.env = append(lm.env, e)
		}
	}
	lm.env = append(lm.env, "BLACKBOX_PAYMENT_BACKEND=neutrino", "BLACKBOX_PAYMENT_PEERS="+m.btcd.P2PHost)
	return lm.daemon(extra, args...)
}

// TestLightMarket: a buyer and a seller on the light client with no RPC
// settings, and a seller on btcd's RPC. The buyer's first job goes to one
// seller, the second, with that seller gone, to the other; each seller
// closes its channel and the payout confirms on chain. Status says which chain source each node uses and where its fee
// rate came from.
func TestLightMarket(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	work := t.TempDir()
	light := m.lightDaemon(sellerEnv())
	rpc := m.daemon(sellerEnv(), "--bootstrap", light.bootAddr())
	buyer := m.lightDaemon(buyerEnv, "--bootstrap", light.bootAddr())
	for _, c := range []struct {
		d    *daemon
		want string
	}{{light, "regtest via the light client"}, {buyer, "regtest via the light client"}, {rpc, "regtest via btcd"}} {
		out, err := c.d.cli("status")
		if err != nil || !strings.Contains(out, c.want) || !strings.Contains(out, "sat/vB (") {
			t.Fatalf("status of %s: %v, want %q with the fee source\n%s", c.d.dir, err, c.want, out)
		}
	}
	out, _ := buyer.cli("status", "--json")
	if !strings.Contains(out, `"backend": "neutrino"`) || !strings.Contains(out, `"fee_source": "`) {
		t.Fatalf("status --json of the light buyer:\n%s", out)
	}
	m.fund(buyer.proc, 2_000_000)
	m.waitMarket(buyer, 2)

	image := busybox(t, work)
	// run runs a job, checks the seller that took it holds its payment,
	// closes that seller's channel and checks the payout on chain.
	run := func(sellers ...*daemon) *daemon {
		t.Helper()
		id := submitDetached(t, buyer, image, jobFlags, "sh", "-c", "sleep 3; echo hi")
		j := waitJob(t, buyer, id, 90*time.Second, "ends", ended)
		if j.State != contract.JobDone || j.Paid <= 0 {
			t.Fatalf("job %s: state %s paid %d error %q\n%s", j.ID, j.State, j.Paid, j.Error, buyer.logs.String())
		}
		seller := sellerOf(t, j.Seller.String(), sellers...)
		ch := seller.channelWith(buyer.peerID())
		if ch == nil || ch.Contracts[j.ContractID] != j.Paid {
			t.Fatalf("seller's channel with the buyer: %+v", ch)
		}
		payout := m.closeOnChain(seller, ch, ch.Paid)
		t.Logf("job %s on %s: paid %d, payout %d confirmed on chain", j.ID, seller.dir, j.Paid, payout)
		return seller
	}
	// The first job goes to either (the buyer explores); with that seller
	// gone, the second goes to the other: both backends sell and settle.
	first := run(light, rpc)
	first.stop()
	other := map[*daemon]*daemon{light: rpc, rpc: light}[first]
	run(other)
}

// BenchmarkLightSync: the light client's cost. A regtest chain of 1,000
// blocks (plus the harness's 130), a seller on the light client started on
// a fresh data dir: the light client's first sync (headers and filter
// headers, from the daemon's "light client synced" log line), the whole
// start until the API answers (the wallet created and synced through the
// light client as well) and the peak RSS by then; a restart on its data
// dir after 10 more blocks; then BLACKBOX_BENCH_IDLE (60s) idle on a quiet
// chain: CPU share of a core and RSS (goals: < 1% and < 80 MiB).
func BenchmarkLightSync(b *testing.B) {
	m := newMarketMining(b, 0)
	idle := benchEnvDuration(b, "BLACKBOX_BENCH_IDLE", time.Minute)
	settle := benchEnvDuration(b, "BLACKBOX_BENCH_SETTLE", 10*time.Second)
	for left := 1000; left > 0; left -= 100 {
		if _, err := m.btcd.Generate(100); err != nil {
			b.Fatal(err)
		}
	}
	d := m.lightDaemon(sellerEnv())
	first := syncTook(b, d)
	start, peak := d.ready.Seconds(), procKiB(b, d.cmd.Process.Pid, "VmHWM")/1024
	b.Logf("first start: light client synced %d blocks in %s; API up after %.2fs; peak RSS %.0f MiB", m.btcd.Tip(b), first, start, peak)
	d.stop()
	if _, err := m.btcd.Generate(10); err != nil {
		b.Fatal(err)
	}
	d.start()
	again := syncTook(b, d)
	restart, rpeak := d.ready.Seconds(), procKiB(b, d.cmd.Process.Pid, "VmHWM")/1024
	b.Logf("restart: light client caught up 10 blocks in %s; API up after %.2fs; peak RSS %.0f MiB", again, restart, rpeak)
	time.Sleep(settle)
	figs := measureIdle(b, map[string]*daemon{"light seller": d}, idle)
	// row prints a figure; below, when non-zero, is the goal it must stay
	// under (the same goals as the full node's seller: the peak at start
	// and the idle daemon).
	row := func(figure string, v float64, unit string, below float64) {
		goal, met := "-", "-"
		if below > 0 {
			goal, met = fmt.Sprintf("< %g %s", below, unit), yesNo(v < below)
		}
		fmt.Printf("BENCHROW %s = %.2f %s|-|-|%s|%s\n", figure, v, unit, goal, met)
	}
	row("light client first sync, 1,130 regtest blocks", first.Seconds(), "s", 0)
	row("light seller first start (sync + new wallet)", start, "s", 0)
	row("light seller first start peak RSS", peak, "MiB", 120)
	row("light client restart sync (10 new blocks)", again.Seconds(), "s", 0)
	row("light seller restart", restart, "s", 0)
	row("light seller restart peak RSS", rpeak, "MiB", 120)
	row(fmt.Sprintf("light seller idle CPU (%.0fs)", idle.Seconds()), figs["light seller"].cpuPct, "% core", 1)
	row("light seller idle RSS", figs["light seller"].rssMiB, "MiB", 80)
}

// syncTook is the took= of the daemon's last "light client synced" line.
func syncTook(b *testing.B, d *daemon) time.Duration {
	b.Helper()
	logs := d.logs.String()
	i := strings.LastIndex(logs, `msg="light client synced"`)
	if i < 0 {
		b.Fatalf("no light client sync in the log:\n%s", tail(logs, 30))
	}
	line, _, _ := strings.Cut(logs[i:], "\n")
	_, v, ok := strings.Cut(line, "took=")
	if !ok {
		b.Fatalf("no took= in %q", line)
	}
	took, err := time.ParseDuration(strings.Fields(v)[0])
	if err != nil {
		b.Fatalf("took= in %q: %v", line, err)
	}
	return took
}

// TestLightChainSourceRestart: a buyer and a seller on the light client,
// whose one Bitcoin peer (btcd over P2P) stops mid-contract and starts
// again with its chain. Status says the chain source is down and back;
// the channel stays open and the payments go on meanwhile; the job
// completes; the seller's close confirms and the buyer sees it closed.
func TestLightChainSourceRestart(t *testing.T) {
	t.Parallel()
	r := pausedMidJob(t, (*market).lightDaemon)
	m, seller, buyer, id, before, paused := r.m, r.seller, r.buyer, r.id, r.before, r.paused
	buyerID, sellerID := buyer.peerID(), seller.peerID()
	for _, d := range []*daemon{seller, buyer} {
		c := d.waitChain(90*time.Second, api.ChainConnecting)
		t.Logf("%s saw its peer gone after %s: %q", d.dir, time.Since(paused).Round(time.Millisecond), c.Error)
	}
	waitFor(t, 30*time.Second, "a payment while the peer is down", func() bool {
		c := seller.channelWith(buyerID)
		return c != nil && c.Paid > before.Paid
	})
	if err := m.btcd.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	t.Logf("btcd down for %s", resumed.Sub(paused).Round(time.Millisecond))
	j := waitJob(t, buyer, id, 2*time.Minute, "ends", ended)
	if j.State != contract.JobDone {
		t.Fatalf("job across the peer's restart: %s %q", j.State, j.Error)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.State != payment.StateOpen || ch.ID != before.ID || ch.Paid <= before.Paid {
		t.Fatalf("the seller's channel after the restart: %+v (before %+v)", ch, before)
	}
	sc := seller.waitChain(3*time.Minute, api.ChainConnected)
	bc := buyer.waitChain(3*time.Minute, api.ChainConnected)
	t.Logf("NUMBERS light client back at the tip %s after its peer came back: seller %+v, buyer %+v", time.Since(resumed).Round(time.Millisecond), sc, bc)
	m.closeOnChain(seller, ch, ch.Paid)
	waitFor(t, 2*time.Minute, "the buyer to see its channel closed", func() bool {
		c := buyer.channelWith(sellerID)
		return c != nil && c.State == payment.StateClosed
	})
}

// TestLightBuyerLearnsSellersClose: a seller closes its channel with a
// light buyer, and the close waits in the mempool (the miners take nothing
// below 1,000 sat/vB now). The light buyer sees the close only once a
// block holds it, so its next job names that channel; the seller refuses
// it with the closing transaction, and the buyer checks it, counts the
// channel closing and runs the job with the same seller on a new channel
// (before, the job failed as the buyer's own fault).
func TestLightBuyerLearnsSellersClose(t *testing.T) {
	t.Parallel()
	m := newMarketMining(t, 0)
	miner := startFeeMiner(m)
	work := t.TempDir()
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_BUMP_AFTER=6"))
	buyer := m.lightDaemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 2_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, work)
	flags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "60000"}
	j := submit(t, buyer, image, filepath.Join(work, "res1"), flags, "sh", "-c", "echo one")
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("first job: state %s paid %d error %q", j.State, j.Paid, j.Error)
	}
	var ch *payment.Channel
	waitFor(t, 60*time.Second, "the channel to be open on both sides", func() bool {
		ch = seller.channelWith(buyer.peerID())
		b := buyer.channelWith(seller.peerID())
		return ch != nil && ch.State == payment.StateOpen && ch.Paid == j.Paid && b != nil && b.State == payment.StateOpen
	})

	miner.floor.Store(1000)
	out, err := seller.cli("channel", "close", ch.ID)
	if err != nil {
		t.Fatalf("channel close: %v: %s", err, out)
	}
	f := strings.Fields(out)
	closeID := f[len(f)-1]

	j = submit(t, buyer, image, filepath.Join(work, "res2"), flags, "sh", "-c", "echo two")
	if j.State != contract.JobDone {
		t.Fatalf("second job: state %s error %q attempts %+v\n%s", j.State, j.Error, j.Attempts, buyer.logs.String())
	}
	if len(j.Attempts) != 2 || j.Attempts[0].Seller != j.Attempts[1].Seller || !strings.Contains(j.Attempts[0].Why, "closing") {
		t.Fatalf("second job's attempts: %+v, want a refusal for the closing channel, then the same seller", j.Attempts)
	}
	var old *payment.Channel
	for _, c := range buyer.channelsWith(seller.peerID()) {
		if c.ID == ch.ID {
			old = c
		}
	}
	if old == nil || old.State != payment.StateClosing || old.SpendTxid != closeID {
		t.Fatalf("the buyer's record of the closed channel: %+v, want closing by %s", old, closeID)
	}
	h, _ := chainhash.NewHashFromStr(closeID)
	if res, err := m.btcd.Client().GetRawTransactionVerbose(h); err != nil || res.Confirmations != 0 {
		t.Fatalf("the close %s should still be unmined: %v %+v", closeID, err, res)
	}
	if !strings.Contains(buyer.logs.String(), "seller had closed the channel") {
		t.Fatalf("the buyer did not log the close it learned")
	}
}
