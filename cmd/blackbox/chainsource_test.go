//go:build integration

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The chain source comes and goes (issue 11): btcd down when a node starts,
// btcd restarted under running contracts, the wallet used while the daemon
// runs, and funding errors that say their cause.

// chainOf is the daemon's chain source as status reports it.
func (d *daemon) chainOf() api.ChainSource {
	d.m.t.Helper()
	s, err := d.api().Status(context.Background())
	if err != nil {
		d.m.t.Fatalf("status: %v", err)
	}
	if s.ChainSource == nil {
		d.m.t.Fatalf("status has no chain source: %+v", s)
	}
	return *s.ChainSource
}

// waitChain waits until the daemon's chain source is in state, and its
// wallet at the chain's tip when state is connected.
func (d *daemon) waitChain(timeout time.Duration, state string) api.ChainSource {
	d.m.t.Helper()
	var c api.ChainSource
	waitFor(d.m.t, timeout, d.dir+"'s chain source "+state, func() bool {
		c = d.chainOf()
		return c.State == state && (state != api.ChainConnected || c.WalletHeight > 0 && c.WalletHeight+2 >= c.Height)
	})
	return c
}

// cliFails runs the CLI on the daemon and wants it to fail saying every
// want; it returns the output.
func (d *daemon) cliFails(what string, want []string, args ...string) string {
	t := d.m.t
	t.Helper()
	start := time.Now()
	out, err := d.cli(args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s: %v, want a failure\n%s", what, err, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: %q does not say %q", what, strings.TrimSpace(out), w)
		}
	}
	t.Logf("%s (%s): %s", what, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	return out
}

// TestChainSourceLateStart: a seller and a buyer started while btcd is
// down run, say why they neither sell nor buy (status: not selling, the
// chain source connecting with the error and the next try) and answer
// wallet commands with the cause at once; once btcd starts they sell and
// buy within the backoff, without a restart, and a job runs between them.
func TestChainSourceLateStart(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	m.btcd.Pause()
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())

	s, err := seller.api().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := seller.chainOf()
	if s.Selling || !strings.Contains(s.Reason, "not selling") || !strings.Contains(s.Reason, "chain source down") ||
		!strings.Contains(s.Reason, "not reachable") || c.State != api.ChainConnecting || c.Error == "" || c.NextRetry.IsZero() {
		t.Fatalf("seller with btcd down: selling %v, reason %q, chain %+v", s.Selling, s.Reason, c)
	}
	out, _ := seller.cli("status")
	if !strings.Contains(out, "Chain source:") || !strings.Contains(out, "btcd connecting") || !strings.Contains(out, "next try in") && !strings.Contains(out, "trying again now") {
		t.Errorf("status with btcd down:\n%s", out)
	}
	t.Logf("status with btcd down:\n%s", out)
	if bs, _ := buyer.api().Status(context.Background()); bs.Buying || !strings.Contains(bs.NotBuying, "chain source down") {
		t.Errorf("buyer with btcd down: buying %v: %q", bs.Buying, bs.NotBuying)
	}
	buyer.cliFails("wallet address with btcd down", []string{"chain source down", "not reachable"}, "wallet", "address")

	resumed := time.Now()
	if err := m.btcd.Resume(); err != nil {
		t.Fatal(err)
	}
	// The backoff doubles from 1 s: down for the few seconds above, the
	// next try comes within seconds; a minute and the wallet's first sync
	// bound it.
	waitFor(t, 3*time.Minute, "the seller to sell", func() bool {
		s, err := seller.api().Status(context.Background())
		return err == nil && s.Selling && !s.OnOffer.IsZero()
	})
	t.Logf("selling %s after btcd started", time.Since(resumed).Round(time.Millisecond))
	c = seller.waitChain(time.Minute, api.ChainConnected)
	waitFor(t, 2*time.Minute, "the buyer to buy", func() bool {
		s, err := buyer.api().Status(context.Background())
		return err == nil && s.Buying
	})
	t.Logf("buying %s after btcd started; seller's chain source %+v", time.Since(resumed).Round(time.Millisecond), c)
	out, _ = seller.cli("status")
	if !strings.Contains(out, "btcd connected, height ") {
		t.Errorf("status with btcd back:\n%s", out)
	}

	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())
	j := submit(t, buyer, image, filepath.Join(t.TempDir(), "res"), jobFlags, "sh", "-c", "echo late")
	if j.State != contract.JobDone {
		t.Fatalf("job after a late start: %s %q", j.State, j.Error)
	}
	// The buyer's seed keys its open channel: a restore is refused.
	bk := filepath.Join(t.TempDir(), "seed.json")
	if out, err := buyer.cli("wallet", "backup", bk); err != nil {
		t.Fatalf("wallet backup: %v\n%s", err, out)
	}
	buyer.cliFails("wallet restore with a channel open", []string{"still keys channel", "(buyer, ", "nothing changed"}, "wallet", "restore", bk)
	ch := seller.channelWith(buyer.peerID())
	m.closeOnChain(seller, ch, ch.Paid)
}

// midJob is a seller and a buyer with a job running between them
// ("sleep 30") when btcd was paused.
type midJob struct {
	m             *market
	seller, buyer *daemon
	image, id     string
	before        *payment.Channel // the seller's channel as btcd stopped
	paused        time.Time
}

// pausedMidJob starts a seller and a funded buyer with start
// ((*market).daemon or lightDaemon), runs a job between them and pauses
// btcd under it.
func pausedMidJob(t *testing.T, start func(m *market, extra []string, args ...string) *daemon) midJob {
	t.Helper()
	r := midJob{m: newMarket(t)}
	r.seller = start(r.m, sellerEnv())
	r.buyer = start(r.m, buyerEnv, "--bootstrap", r.seller.bootAddr())
	r.m.fund(r.buyer.proc, 2_000_000)
	r.m.waitMarket(r.buyer, 1)
	r.image = busybox(t, t.TempDir())
	r.id, _ = runningJob(t, r.buyer, r.image, jobFlags, "sleep", "30")
	r.before = r.seller.channelWith(r.buyer.peerID())
	r.m.btcd.Pause()
	r.paused = time.Now()
	return r
}

// TestChainSourceRestartMidContract: btcd stops under a running contract
// and starts again with its chain. The channel stays open and the buyer's
// payments go on while it is down; the job completes; both nodes resync
// (status: connected, the wallet at the tip); the seller's close confirms;
// and the buyer's next job funds a new channel from the resynced wallet
// (no stale "insufficient funds").
func TestChainSourceRestartMidContract(t *testing.T) {
	t.Parallel()
	r := pausedMidJob(t, (*market).daemon)
	m, seller, buyer, image, id, before, paused := r.m, r.seller, r.buyer, r.image, r.id, r.before, r.paused
	buyerID, sellerID := buyer.peerID(), seller.peerID()
	seller.waitChain(30*time.Second, api.ChainConnecting)
	buyer.waitChain(30*time.Second, api.ChainConnecting)
	// Payments need no chain: the seller keeps being paid.
	waitFor(t, 30*time.Second, "a payment while btcd is down", func() bool {
		c := seller.channelWith(buyerID)
		return c != nil && c.Paid > before.Paid
	})
	if s, _ := seller.api().Status(context.Background()); s.Selling || !strings.Contains(s.Reason, "chain source down") {
		t.Errorf("seller with btcd down: selling %v, %q", s.Selling, s.Reason)
	}
	time.Sleep(5 * time.Second)
	if err := m.btcd.Resume(); err != nil {
		t.Fatal(err)
	}
	t.Logf("btcd down for %s", time.Since(paused).Round(time.Millisecond))
	resumed := time.Now()
	// The wallet holds coins all along: while it reconnects and resyncs,
	// a send says that (wallet not synced, chain source down), never
	// "insufficient funds", and it goes through once the wallet is back.
	addr, _ := payoutAddress(t)
	var seen []string
	waitFor(t, 2*time.Minute, "a wallet send after the restart", func() bool {
		out, err := buyer.cli("wallet", "send", addr, "10000")
		if err == nil {
			return true
		}
		if strings.Contains(out, "insufficient funds") {
			t.Fatalf("wallet send %s after btcd came back: %s", time.Since(resumed).Round(time.Millisecond), out)
		}
		if len(seen) == 0 || seen[len(seen)-1] != strings.TrimSpace(out) {
			seen = append(seen, strings.TrimSpace(out))
			t.Logf("wallet send %s after btcd came back: %s", time.Since(resumed).Round(time.Millisecond), strings.TrimSpace(out))
		}
		time.Sleep(time.Second)
		return false
	})
	t.Logf("wallet send went through %s after btcd came back; before, it said: %q", time.Since(resumed).Round(time.Millisecond), seen)

	j := waitJob(t, buyer, id, 2*time.Minute, "ends", ended)
	if j.State != contract.JobDone {
		t.Fatalf("job across the btcd restart: %s %q", j.State, j.Error)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil || ch.State != payment.StateOpen || ch.ID != before.ID || ch.Paid <= before.Paid || ch.Paid > j.Paid {
		t.Fatalf("the seller's channel after the restart: %+v; the job paid %d", ch, j.Paid)
	}
	sc := seller.waitChain(2*time.Minute, api.ChainConnected)
	bc := buyer.waitChain(2*time.Minute, api.ChainConnected)
	t.Logf("resynced %s after btcd came back: seller %+v, buyer %+v", time.Since(resumed).Round(time.Millisecond), sc, bc)
	m.closeOnChain(seller, ch, ch.Paid)
	waitFor(t, time.Minute, "the buyer to see its channel closed", func() bool {
		c := buyer.channelWith(sellerID)
		return c != nil && c.State == payment.StateClosed
	})

	// A new channel, funded by the resynced wallet.
	j2 := submit(t, buyer, image, filepath.Join(t.TempDir(), "res"), jobFlags, "sh", "-c", "echo after")
	if j2.State != contract.JobDone {
		t.Fatalf("job after the restart: %s %q\n%s", j2.State, j2.Error, tail(buyer.logs.String(), 40))
	}
	// The job may have run on the unconfirmed funding (zero-conf); the
	// channel opens once the funding confirms.
	var ch2 *payment.Channel
	waitFor(t, time.Minute, "the second job's channel to open", func() bool {
		chans, err := seller.api().Channels(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ch2 = nil
		for _, c := range chans {
			if c.Peer == buyerID && c.ID != ch.ID {
				ch2 = c
			}
		}
		return ch2 != nil && ch2.State == payment.StateOpen
	})
	if ch2.Paid != j2.Paid {
		t.Fatalf("the second job's channel: %+v (the first was %s); the job paid %d", ch2, ch.ID, j2.Paid)
	}
	t.Logf("after the restart: a new channel %s of %d sat, paid %d", ch2.ID, ch2.Capacity, ch2.Paid)
}

// TestWalletWhileRunning: `wallet send` goes through the running daemon's
// API (btcwallet's database is the daemon's) and moves coins on chain;
// `wallet restore` and `create` refuse while the daemon runs, saying to
// stop it, and change nothing.
func TestWalletWhileRunning(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	d := m.daemon(buyerEnv)
	m.fund(d.proc, 1_000_000)
	addr, script := payoutAddress(t)
	start := time.Now()
	out, err := d.cli("wallet", "send", addr, "250000")
	if err != nil {
		t.Fatalf("wallet send with the daemon running: %v\n%s", err, out)
	}
	t.Logf("wallet send through the daemon: %s in %s", strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
	txid, err := chainhash.NewHashFromStr(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("wallet send printed %q", out)
	}
	waitFor(t, 30*time.Second, "the send to confirm", func() bool {
		tx, err := m.btcd.Client().GetRawTransactionVerbose(txid)
		return err == nil && tx.Confirmations >= 1
	})
	raw, err := m.btcd.Client().GetRawTransaction(txid)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.btcd.Balance(script, raw.MsgTx()); err != nil || got != 250_000 {
		t.Fatalf("the address holds %d sat of the send (%v), want 250000", got, err)
	}
	d.cliFails("send to a bad address", []string{"not an address on regtest"}, "wallet", "send", "bc1qnotanaddress", "1000")

	d.cliFails("wallet create while running", []string{"daemon is running", "stop it first"}, "wallet", "create")

	// wallet restore through the running daemon. Another node's funded
	// wallet is the one to restore.
	other := m.daemon(buyerEnv)
	m.fund(other.proc, 300_000)
	backup := filepath.Join(t.TempDir(), "seed.json")
	if out, err := other.cli("wallet", "backup", backup); err != nil {
		t.Fatalf("wallet backup while running: %v\n%s", err, out)
	}
	balance := func() api.Balance {
		var b api.Balance
		out, err := d.cli("wallet", "balance", "--json")
		if err != nil || json.Unmarshal([]byte(out), &b) != nil {
			t.Fatalf("wallet balance: %v\n%s", err, out)
		}
		return b
	}
	before := balance()
	// A file that is no backup, and a backup under another passphrase,
	// change nothing.
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.json")
	os.WriteFile(garbage, []byte("{not json"), 0o600)
	d.cliFails("restore of a corrupt file", []string{"not a wallet seed backup", "invalid"}, "wallet", "restore", garbage)
	if _, err := payment.CreateWalletFiles(filepath.Join(dir, "w"), []byte("another passphrase"), payment.RegtestConfig()); err != nil {
		t.Fatal(err)
	}
	d.cliFails("restore under another passphrase", []string{"wrong passphrase", "nothing changed"}, "wallet", "restore", filepath.Join(dir, "w", "seed.json"))
	if after := balance(); after.Spendable != before.Spendable || after.Total != before.Total {
		t.Fatalf("a refused restore changed the balance: %+v, then %+v", before, after)
	}
	start = time.Now()
	out, err = d.cli("wallet", "restore", backup)
	if err != nil || !strings.Contains(out, "restored by the running daemon") || !strings.Contains(out, "300000 sat spendable") {
		t.Fatalf("wallet restore while running: %v\n%s", err, out)
	}
	t.Logf("wallet restore through the daemon (%s): %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if b := balance(); b.Spendable != 300_000 {
		t.Fatalf("after the restore the wallet holds %+v, want the restored wallet's 300000 sat", b)
	}
	if s, err := d.api().Status(context.Background()); err != nil || !s.Buying {
		t.Fatalf("after the restore: buying %v %q (%v)", s.Buying, s.NotBuying, err)
	}
	// The restored wallet pays.
	if out, err := d.cli("wallet", "send", addr, "100000"); err != nil {
		t.Fatalf("wallet send from the restored wallet: %v\n%s", err, out)
	}
}

// TestFundingErrorCauses: funding errors say their cause. An empty wallet:
// insufficient funds with the amounts, from `submit` and `wallet send`;
// btcd down: chain source down, from both.
func TestFundingErrorCauses(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())
	addr, _ := payoutAddress(t)
	submitArgs := append(append([]string{"submit", "--image", image}, jobFlags...), "--", "true")

	buyer.cliFails("submit, empty wallet", []string{"insufficient funds", "0 sat spendable", "needs about"}, submitArgs...)
	buyer.cliFails("wallet send, empty wallet", []string{"insufficient funds", "need about", "0 sat spendable"}, "wallet", "send", addr, "100000")

	m.btcd.Pause()
	buyer.waitChain(30*time.Second, api.ChainConnecting)
	buyer.cliFails("submit, btcd down", []string{"chain source down", "not reachable"}, submitArgs...)
	buyer.cliFails("wallet send, btcd down", []string{"chain source down", "not reachable"}, "wallet", "send", addr, "100000")
	if err := m.btcd.Resume(); err != nil {
		t.Fatal(err)
	}
	buyer.waitChain(2*time.Minute, api.ChainConnected)
}
