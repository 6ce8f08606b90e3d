//go:build integration

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
)

// earnings runs `blackbox earnings --json` on the daemon.
func (d *daemon) earnings(args ...string) api.Earnings {
	d.m.t.Helper()
	out, err := d.cli(append([]string{"earnings", "--json"}, args...)...)
	if err != nil {
		d.m.t.Fatalf("earnings --json: %v: %s", err, out)
	}
	var e api.Earnings
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		d.m.t.Fatalf("earnings --json: %v\n%s", err, out)
	}
	return e
}

// TestEarningsHistory: a seller runs a buyer's job; `blackbox earnings` on
// the seller shows its payments pending while it runs, then that contract's
// payments in an open channel, the job and its outcome; `status` shows them
// as earned today; the history is read from the database while the daemon
// is stopped and survives its restart; once the channel is closed on chain
// the money is settled and the close fee counted. The buyer's history shows
// the funding fee it paid, and the market's median is known to a cheap and
// a dear seller.
func TestEarningsHistory(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	work := t.TempDir()
	addr, _ := payoutAddress(t)
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS=" + addr))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)

	// While the job runs, what it paid is pending and the machine is busy.
	id, _ := runningJob(t, buyer, busybox(t, work), jobFlags, "sh", "-c", "sleep 8; echo hi")
	waitFor(t, 30*time.Second, "pending earnings and a busy machine", func() bool {
		e := seller.earnings()
		return e.Today.PendingSat > 0 && e.Today.EarnedSat == e.Today.PendingSat && e.Today.Jobs == 1 && e.Today.Busy > 0
	})
	j := waitJob(t, buyer, id, 60*time.Second, "ends", ended)
	if j.State != contract.JobDone || j.Paid <= 0 {
		t.Fatalf("job %s: state %s paid %d error %q", j.ID, j.State, j.Paid, j.Error)
	}
	ch := seller.channelWith(buyer.peerID())
	if ch == nil || ch.Contracts[j.ContractID] != j.Paid {
		t.Fatalf("seller's channel with the buyer: %+v", ch)
	}

	// The seller's history: the contract's payments, in an open channel.
	var e api.Earnings
	waitFor(t, 30*time.Second, "the seller's history to show the contract", func() bool {
		e = seller.earnings()
		return e.Today.Contracts["completed"] == 1
	})
	check := func(when string, e api.Earnings) {
		t.Helper()
		for name, tt := range map[string]api.EarningsTotals{"today": e.Today, "week": e.Week, "month": e.Month} {
			if tt.EarnedSat != j.Paid || tt.ChannelSat != j.Paid || tt.SettledSat != 0 || tt.PendingSat != 0 ||
				tt.Jobs != 1 || tt.Contracts["completed"] != 1 || tt.NetSat != j.Paid-tt.FeesSat {
				t.Fatalf("%s, %s: %+v; want %d sats earned in a channel, 1 job, 1 completed", when, name, tt, j.Paid)
			}
		}
		if e.InChannelsSat != j.Paid || e.CloseFeeSat != ch.CloseFee || e.AfterCloseSat != j.Paid-ch.CloseFee {
			t.Fatalf("%s: in channels %d, close fee %d, left %d; want %d, %d, %d", when,
				e.InChannelsSat, e.CloseFeeSat, e.AfterCloseSat, j.Paid, ch.CloseFee, j.Paid-ch.CloseFee)
		}
	}
	check("after the job", e)
	out, err := seller.cli("status")
	want := fmt.Sprintf("24 h %d sat", j.Paid)
	if err != nil || !strings.Contains(out, "Earned (net of fees):") || !strings.Contains(out, want) {
		t.Fatalf("status does not show %q earned today: %v\n%s", want, err, out)
	}
	out, err = seller.cli("earnings", "--since", "1d")
	if err != nil || !strings.Contains(out, "In open channels: "+fmt.Sprint(j.Paid)+" sat") || !strings.Contains(out, "completed 1") {
		t.Fatalf("earnings --since 1d: %v\n%s", err, out)
	}
	t.Logf("earnings --since 1d:\n%s", out)

	// Stopped, the node's history is read from its database; a restart
	// keeps it.
	seller.stop()
	stopped := seller.earnings()
	check("with the daemon stopped", stopped)
	if len(stopped.NoWork) != 1 || stopped.NoWork[0].Code != "daemon" {
		t.Fatalf("with the daemon stopped, why no work: %+v", stopped.NoWork)
	}
	seller.start()
	check("after a restart", seller.earnings("--since", "7d"))

	// Closed on chain: settled, and the close fee is this node's fee.
	m.closeOnChain(seller, seller.channelWith(buyer.peerID()), j.Paid)
	waitFor(t, 30*time.Second, "the close fee in the seller's history", func() bool {
		e = seller.earnings()
		return e.Today.FeesSat == ch.CloseFee
	})
	if e.Today.SettledSat != j.Paid || e.Today.ChannelSat != 0 || e.Today.NetSat != j.Paid-ch.CloseFee || e.InChannelsSat != 0 {
		t.Fatalf("after the close: %+v, in channels %d; want %d settled, net %d", e.Today, e.InChannelsSat, j.Paid, j.Paid-ch.CloseFee)
	}
	// A second seller asks twice the price per core: for the first seller's
	// resources the market's median is above its own price, and the
	// second is told that its price is above the median.
	dear := m.daemon(sellerEnv("BLACKBOX_METER_PRICING_CORE_HOUR=720000"), "--bootstrap", seller.bootAddr())
	var d api.Earnings
	waitFor(t, 90*time.Second, "the market's median in both sellers' histories", func() bool {
		e, d = seller.earnings(), dear.earnings()
		return e.MarketMedianPerHour > 0 && d.MarketMedianPerHour > 0
	})
	if e.MarketMedianPerHour <= e.OwnPerHour || hasReason(e.NoWork, "price") {
		t.Errorf("cheap seller: median %.0f, own %.0f, no work %+v", e.MarketMedianPerHour, e.OwnPerHour, e.NoWork)
	}
	if d.OwnPerHour <= d.MarketMedianPerHour*1.1 || !hasReason(d.NoWork, "price") {
		t.Errorf("dear seller: median %.0f, own %.0f, no work %+v", d.MarketMedianPerHour, d.OwnPerHour, d.NoWork)
	}
	out, _ = dear.cli("status")
	t.Logf("status of the dear seller:\n%s", out)

	// The buyer earned nothing and paid its channel's funding fee.
	if b := buyer.earnings(); b.Today.EarnedSat != 0 || b.Today.FeesSat <= 0 {
		t.Fatalf("buyer's history: %+v; want nothing earned and a funding fee", b.Today)
	}
}

func hasReason(rs []api.NoWorkReason, code string) bool {
	for _, r := range rs {
		if r.Code == code {
			return true
		}
	}
	return false
}

// TestEarningsSurviveKill: the seller is killed (SIGKILL) in the middle of
// a job; after a restart on the same data dir, its history holds every
// sat its channel holds for the contract (a payment is recorded before it
// is acknowledged) and the contract's outcome.
func TestEarningsSurviveKill(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	work := t.TempDir()
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	_, j := runningJob(t, buyer, busybox(t, work), jobFlags, "sleep", "60")
	seller.kill()
	seller.start()
	ch := seller.channelWith(buyer.peerID())
	if ch == nil || ch.Contracts[j.ContractID] <= 0 {
		t.Fatalf("seller's channel with the buyer after the kill: %+v", ch)
	}
	var e api.Earnings
	waitFor(t, 30*time.Second, "the killed contract's outcome in the history", func() bool {
		e = seller.earnings()
		return e.Today.Contracts["failed"] == 1
	})
	held := seller.channelWith(buyer.peerID()).Contracts[j.ContractID]
	if e.Today.EarnedSat != held || e.Today.ChannelSat != held || e.Today.Jobs != 1 || e.InChannelsSat != held {
		t.Fatalf("after the kill: %+v, in channels %d; want %d earned in a channel, 1 job", e.Today, e.InChannelsSat, held)
	}
}
