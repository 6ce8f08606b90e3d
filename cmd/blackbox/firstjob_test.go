//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
)

// TestFirstJobRealBlockTimes: a first job with a new seller, with the
// defaults that could not both hold on a chain with 10-minute blocks
// (payment.confirmations 3, contract.fund_timeout 2m), on a regtest chain
// whose miner is stopped, then one that mines a block every 5 s.
//
// Scaling: 10 minutes of mainnet are 5 s here (×1/120). What depends on
// block time scales: contract.funding_wait (2h, twelve blocks) is 60 s;
// what does not stays as it is: fund_timeout (the buyer's channel open
// and job stream no longer wait for a block: its 2 minutes bound the
// wallet and the network), the billing interval and the job.
//
//  1. Miner stopped, defaults: the job starts on the unconfirmed funding
//     within payment.zero_conf_max and completes with no block at all;
//     the seller's status shows its exposure. Once with a seller on btcd,
//     once with a buyer and a seller on the light client (no RPC
//     settings: payment.backend's default).
//  2. Miner stopped, a seller whose zero_conf_max is below the job's price
//     and whose funding_wait is 20 s: the funding is never mined, the
//     contract ends with funding_unconfirmed and nothing is paid.
//  3. A block every 5 s, the same kind of seller with funding_wait 60 s:
//     the job waits at the exposure bound, `submit` prints the funding's
//     confirmations (k/3), and the job completes once they are there.
func TestFirstJobRealBlockTimes(t *testing.T) {
	t.Parallel()
	m := newMarketMining(t, 0) // the miner is stopped
	// The defaults under test, over the market's own (1 confirmation).
	defaults := []string{"BLACKBOX_PAYMENT_CONFIRMATIONS=3"}
	buyer := m.daemon(append(append([]string{}, buyerEnv...), defaults...))
	fundUTXOs(t, m, buyer, 3, 2_000_000)
	image := busybox(t, t.TempDir())
	ctx := context.Background()

	// zeroConf: a first job with the defaults on a seller new to the
	// buyer starts on the unconfirmed funding and completes, no block
	// mined; the seller's status shows its exposure. Both backends: btcd
	// checks the funding's inputs with gettxout, the light client in the
	// blocks its filters find (payment/zeroconflight.go).
	zeroConf := func(t *testing.T, buyer *daemon, region string, seller *daemon) {
		waitOffer(t, buyer, seller)
		tip := m.btcd.Tip(t)
		events, err := submitEvents(t, buyer, image, filepath.Join(t.TempDir(), "res"),
			[]string{"--region", region, "--time", "1m", "--max-price", "1000"}, "sh", "-c", "echo first job")
		last := events[len(events)-1]
		if err != nil || last.Status == nil || last.Status.State != contract.JobDone {
			t.Fatalf("first job: %v: %+v\n%s", err, last, seller.logs.String())
		}
		var f *contract.Funding
		for _, e := range events {
			if e.Funding != nil {
				f = e.Funding
			}
		}
		if f == nil || !f.Ready || !f.ZeroConf || f.Confirmations != 0 || f.Needed != 3 {
			t.Fatalf("submit's funding event %+v, want started on 0/3 confirmations", f)
		}
		if got := m.btcd.Tip(t); got != tip {
			t.Fatalf("a block was mined (%d → %d): the test proves nothing", tip, got)
		}
		st, err := seller.api().Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		z := st.ZeroConf
		paid := last.Status.Paid
		if z == nil || z.MaxSat != 10_000 || len(z.Channels) != 1 || z.ExposureSat != z.Channels[0].PaidSat || z.ExposureSat < 1 || z.ExposureSat > z.MaxSat {
			t.Fatalf("seller's exposure %+v (the buyer paid %d sat)", z, paid)
		}
		started := -1.0
		for _, e := range events {
			if started < 0 && e.State == contract.JobRunning {
				started = e.ElapsedSeconds
			}
		}
		t.Logf("first job started %.1fs after submit and was done in %.1fs on an unconfirmed funding (no block mined): paid %d sat, seller's exposure %d of %d sat",
			started, last.ElapsedSeconds, paid, z.ExposureSat, z.MaxSat)
		out, err := seller.cli("status")
		if err != nil || !regexp.MustCompile(`Unconfirmed fundings:\s+exposure \d+ of 10000 sat`).MatchString(out) {
			t.Fatalf("status: %v\n%s", err, out)
		}
		seller.stop()
	}
	t.Run("zero-conf with the defaults", func(t *testing.T) {
		zeroConf(t, buyer, "r1", m.daemon(append([]string{"BLACKBOX_REGION=r1"}, defaults...), "--bootstrap", buyer.bootAddr()))
	})
	t.Run("zero-conf with the defaults on the light client", func(t *testing.T) {
		// Buyer and seller with no RPC settings (payment.backend's
		// default): neutrino against btcd's P2P port.
		lb := m.lightDaemon(append(append([]string{}, buyerEnv...), defaults...))
		fundUTXOs(t, m, lb, 1, 2_000_000)
		seller := m.lightDaemon(append([]string{"BLACKBOX_REGION=r4"}, defaults...), "--bootstrap", lb.bootAddr())
		for _, d := range []*daemon{lb, seller} {
			if out, err := d.cli("status"); err != nil || !strings.Contains(out, "regtest via the light client") {
				t.Fatalf("status of %s: %v, want the light client\n%s", d.dir, err, out)
			}
		}
		zeroConf(t, lb, "r4", seller)
		// No block was mined: the buyer's funding is its own unconfirmed
		// transaction, kept in its data dir. After a kill -9 its light
		// client knows it again at start and broadcasts it again.
		chans, err := lb.api().Channels(ctx)
		if err != nil || len(chans) != 1 {
			t.Fatalf("the light buyer's channels: %v %v", chans, err)
		}
		funding := chans[0].FundingTxid().String()
		lb.kill()
		lb.start()
		waitFor(t, 60*time.Second, "the restarted light buyer to broadcast its funding again", func() bool {
			loaded, again := false, false
			for _, l := range strings.Split(lb.logs.String(), "\n") {
				loaded = loaded || strings.Contains(l, "own unconfirmed transactions loaded")
				again = again || strings.Contains(l, "own unconfirmed transaction broadcast again after a restart") && strings.Contains(l, funding)
			}
			return loaded && again
		})
		lb.stop()
	})

	// A seller that works for at most 1,000 sat unconfirmed; the job
	// costs up to 7,000 (thirty 2 s intervals at 200 sat and a start fee
	// of 1,000).
	strict := func(region, wait string) *daemon {
		return m.daemon(sellerEnv(append([]string{"BLACKBOX_REGION=" + region, "BLACKBOX_PAYMENT_ZERO_CONF_MAX=1000",
			"BLACKBOX_CONTRACT_FUNDING_WAIT=" + wait}, defaults...)...), "--bootstrap", buyer.bootAddr())
	}
	jobFlags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "10000"}

	t.Run("a funding never mined", func(t *testing.T) {
		seller := strict("r3", "20s")
		waitOffer(t, buyer, seller)
		tip := m.btcd.Tip(t)
		events, _ := submitEvents(t, buyer, image, filepath.Join(t.TempDir(), "res"),
			append([]string{"--region", "r3"}, jobFlags...), "sh", "-c", "echo never")
		last := events[len(events)-1]
		j := last.Status
		if j == nil || j.State != contract.JobFailed || !strings.Contains(j.Error, string(contract.RefuseFundingUnconfirmed)) || j.Paid != 0 {
			t.Fatalf("job %+v", last)
		}
		if a := j.Attempts[len(j.Attempts)-1]; a.Reason != contract.ReasonFundingUnconfirmed {
			t.Fatalf("attempt %+v, want the reason funding_unconfirmed", a)
		}
		var waited bool
		for _, e := range events {
			waited = waited || e.Funding != nil && !e.Funding.Ready && e.Funding.Needed == 3
		}
		if !waited {
			t.Fatalf("submit never showed the wait for confirmations: %+v", events)
		}
		if got := m.btcd.Tip(t); got != tip {
			t.Fatalf("a block was mined (%d → %d)", tip, got)
		}
		cs, err := seller.api().Contracts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range cs.Contracts {
			if r.Paid != 0 || r.State.Holds() || !strings.HasPrefix(r.Why, "funding_unconfirmed: ") {
				t.Fatalf("seller's contract %s: %s, paid %d, why %q", r.ID, r.State, r.Paid, r.Why)
			}
		}
		st, _ := seller.api().Status(ctx)
		if st.ZeroConf == nil || st.ZeroConf.ExposureSat != 0 {
			t.Fatalf("seller's exposure %+v, want nothing worked for", st.ZeroConf)
		}
		t.Logf("never mined: %s", j.Error)
		seller.stop()
	})

	t.Run("a block every 5s", func(t *testing.T) {
		seller := strict("r2", "60s")
		waitOffer(t, buyer, seller)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Second):
					m.btcd.Generate(1)
				}
			}
		})
		defer func() { close(stop); wg.Wait() }()
		args := append([]string{"--data-dir", buyer.dir, "submit", "--image", image, "--out", filepath.Join(t.TempDir(), "res"), "--region", "r2"}, jobFlags...)
		c := exec.Command(m.bin, append(args, "--", "sh", "-c", "echo after the confirmations")...)
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		t.Logf("submit printed:\n%s", stderr.String())
		if err != nil || !strings.Contains(stdout.String(), "after the confirmations") {
			t.Fatalf("submit: %v\n%s%s\n%s", err, stdout.String(), stderr.String(), seller.logs.String())
		}
		waits := regexp.MustCompile(`funding: ([0-2])/3 confirmations, next block (in about \S+|any moment)`).FindAllStringSubmatch(stderr.String(), -1)
		if len(waits) == 0 {
			t.Fatalf("submit printed no funding: k/3 confirmations line:\n%s", stderr.String())
		}
		if !strings.Contains(stderr.String(), "funding: 3/3 confirmations, confirmed") {
			t.Fatalf("submit did not print that the funding confirmed:\n%s", stderr.String())
		}
		cs, err := seller.api().Contracts(ctx)
		if err != nil || len(cs.Contracts) != 1 {
			t.Fatalf("seller's contracts: %v %+v", err, cs)
		}
		r := cs.Contracts[0]
		var ran bool
		for _, h := range r.History {
			ran = ran || h.To == contract.StateRunning
		}
		if r.State != contract.StateSettled || !ran || r.Paid < 1200 {
			t.Fatalf("seller's contract %s paid %d: %+v", r.State, r.Paid, r.History)
		}
	})
}

// fundUTXOs pays n outputs of sats each to d's wallet, mines them and
// waits until the wallet can spend them all: each first channel of the
// test spends one, its change unconfirmed with the miner stopped.
func fundUTXOs(t *testing.T, m *market, d *daemon, n int, sats int64) {
	t.Helper()
	out, err := d.cli("wallet", "address")
	if err != nil {
		t.Fatalf("wallet address: %v: %s", err, out)
	}
	addr, err := btcutil.DecodeAddress(strings.TrimSpace(out), btcdtest.Params)
	if err != nil {
		t.Fatalf("wallet address %q: %v", out, err)
	}
	script, _ := txscript.PayToAddrScript(addr)
	for range n {
		if _, _, err := m.btcd.Send(script, sats); err != nil {
			t.Fatal(err)
		}
	}
	m.btcd.MustGenerate(t, 1)
	waitFor(t, 60*time.Second, "the buyer's wallet sees its coins", func() bool {
		out, err := d.cli("wallet", "balance", "--json")
		var bal api.Balance
		return err == nil && json.Unmarshal([]byte(out), &bal) == nil && bal.Spendable >= int64(n)*sats
	})
}

// waitOffer waits until the buyer sees seller's offer.
func waitOffer(t *testing.T, buyer, seller *daemon) {
	t.Helper()
	id := seller.peerID()
	waitFor(t, 90*time.Second, "the buyer sees the seller's offer", func() bool {
		offers, err := buyer.api().Market(context.Background(), api.MarketRequest{TimeoutSeconds: 5})
		for _, o := range offers {
			if err == nil && o.Seller == id {
				return true
			}
		}
		return false
	})
}
