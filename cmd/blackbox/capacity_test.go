//go:build integration

package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// reserveFlags submit a job whose worst case is the seller's 20,000 sat
// start fee (reservingMarket).
var reserveFlags = []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "100000"}

// reservingMarket starts a seller of 2 CPUs and a 20,000 sat start fee and
// a funded buyer whose channels hold twice that worst case, each with
// extra added to its environment, once the buyer sees the seller's offer.
// It returns them and a busybox image.
func reservingMarket(t *testing.T, extra []string) (seller, buyer *daemon, image string) {
	t.Helper()
	m := newMarket(t)
	seller = m.daemon(sellerEnv(append([]string{"BLACKBOX_METER_MAX_CPU=2", "BLACKBOX_METER_PRICING_START_FEE=20000"}, extra...)...))
	buyer = m.daemon(append(append(slices.Clone(buyerEnv), extra...),
		"BLACKBOX_PAYMENT_CHANNEL_MIN_CAPACITY=10000", // channels of twice the contract
		"BLACKBOX_PAYMENT_CHANNEL_REFILL_AT=1",        // no background open: the count of channels is exact
	), "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	return seller, buyer, busybox(t, t.TempDir())
}

// contractsOf returns d's contracts (GET /v1/contracts) and those of them
// not settled.
func contractsOf(t *testing.T, d *daemon) (api.Contracts, []*contract.Record) {
	t.Helper()
	cs, err := d.api().Contracts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var unsettled []*contract.Record
	for _, r := range cs.Contracts {
		if r.State != contract.StateSettled {
			unsettled = append(unsettled, r)
		}
	}
	return cs, unsettled
}

// TestConcurrentContractsReserveCapacity: two jobs submitted at once to one
// seller, each of whose worst case (a 20,000 sat start fee) fits the room
// of the buyer's first channel (twice one job, less its close fee) but not
// both. Before capacity reservations both started on that channel and the
// second's first payment failed after the seller had set up its job. Now
// the second reserves on a channel of its own: both complete on their first
// attempt, each channel carries one contract and was never paid beyond its
// room, and the seller settled both (no payment refused).
func TestConcurrentContractsReserveCapacity(t *testing.T) {
	t.Parallel()
	seller, buyer, image := reservingMarket(t, nil)
	ids := []string{
		submitDetached(t, buyer, image, reserveFlags, "echo", "one"),
		submitDetached(t, buyer, image, reserveFlags, "echo", "two"),
	}
	for _, id := range ids {
		j := waitJob(t, buyer, id, 120*time.Second, "ends", ended)
		if j.State != contract.JobDone || j.ExitCode != 0 || len(j.Attempts) != 1 {
			t.Errorf("job %s: %s exit %d %q, attempts %+v", id, j.State, j.ExitCode, j.Error, j.Attempts)
		}
	}
	ctx := context.Background()
	chans, err := buyer.api().Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 2 {
		t.Errorf("the buyer has %d channels; want 2 (the second contract did not fit the first)", len(chans))
	}
	for _, c := range chans {
		if len(c.Contracts) != 1 || c.Paid > c.Capacity-c.CloseFee {
			t.Errorf("channel %s: capacity %d, close fee %d, paid %d by %d contracts; want one contract within its room",
				c.ID, c.Capacity, c.CloseFee, c.Paid, len(c.Contracts))
		}
	}
	cs, unsettled := contractsOf(t, seller)
	for _, r := range unsettled {
		t.Errorf("seller's contract %s is %s (%s)", r.ID[:12], r.State, r.Why)
	}
	if len(cs.Contracts) != 2 {
		t.Errorf("the seller holds %d contracts; want 2", len(cs.Contracts))
	}
	if t.Failed() {
		t.Logf("buyer:\n%s\nseller:\n%s", buyer.logs.String(), seller.logs.String())
	}
}

// TestReservationsSurviveRestarts: a long job A runs on the buyer's first
// channel (twice one job's worst case) when the buyer is killed (kill -9)
// and started again, and then the seller is. Each side reserves A's worst
// case again at its start (the reservations live in memory; they are
// rebuilt from the contracts it resumes), so a second job B, whose worst
// case fits the channel's room beside what A has paid but not beside
// what A may still pay, goes to a new channel on its first attempt
// instead of taking the room A still needs. A and B complete and settle,
// and every reservation is freed when its contract ends (the resumed one
// too).
func TestReservationsSurviveRestarts(t *testing.T) {
	t.Parallel()
	seller, buyer, image := reservingMarket(t, []string{"BLACKBOX_CONTRACT_RESTART_GRACE=60s"})
	ctx := context.Background()
	idA, ja := runningJob(t, buyer, image, reserveFlags, "sh", "-c", "sleep 25; echo a")
	cidA := ja.ContractID
	// reserved returns d's reservation of contract cid (as seller or
	// buyer) once it has one.
	reserved := func(d *daemon, cid string) payment.ReservationView {
		t.Helper()
		var got payment.ReservationView
		waitFor(t, 10*time.Second, "the reservation of "+cid[:12], func() bool {
			res, err := d.api().Reservations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range append(res.Seller, res.Buyer...) {
				if r.Contract == cid {
					got = r
					return true
				}
			}
			return false
		})
		return got
	}
	before := reserved(buyer, cidA)
	total := before.Amount
	if s := reserved(seller, cidA); s.Channel != before.Channel || s.Amount != total {
		t.Fatalf("A's reservation: buyer %+v, seller %+v", before, s)
	}
	ch1 := before.Channel

	buyer.kill()
	buyer.start()
	if r := reserved(buyer, cidA); r.Channel != ch1 || r.Amount != total || r.Outstanding <= 0 {
		t.Fatalf("the buyer's reservation of A after its kill -9: %+v, before %+v", r, before)
	}
	seller.kill()
	seller.start()
	if r := reserved(seller, cidA); r.Channel != ch1 || r.Amount != total || r.Outstanding <= 0 {
		t.Fatalf("the seller's reservation of A after its kill -9: %+v, before %+v", r, before)
	}
	// B fits what ch1 has not paid, not what A may still pay.
	var c1 *payment.Channel
	chans, err := buyer.api().Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chans {
		if c.ID == ch1 {
			c1 = c
		}
	}
	if c1 == nil || c1.Room() < total {
		t.Fatalf("channel %s (%+v) cannot hold B's %d sat beside what A paid: the test proves nothing", ch1, c1, total)
	}
	idB := submitDetached(t, buyer, image, reserveFlags, "echo", "b")
	jb := waitJob(t, buyer, idB, 90*time.Second, "ends", ended)
	if jb.State != contract.JobDone || len(jb.Attempts) != 1 {
		t.Fatalf("job B: %s %q, attempts %+v; want done on its first attempt", jb.State, jb.Error, jb.Attempts)
	}
	ja = waitJob(t, buyer, idA, 90*time.Second, "ends", ended)
	if ja.State != contract.JobDone || len(ja.Attempts) != 1 || ja.Attempts[0].ContractID != cidA {
		t.Fatalf("job A across both restarts: %s %q, attempts %+v", ja.State, ja.Error, ja.Attempts)
	}
	cidB := jb.Attempts[0].ContractID
	if chans, err = buyer.api().Channels(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range chans {
		if c.Contracts[cidB] > 0 && c.ID == ch1 {
			t.Errorf("B paid on A's channel %s: it took room A still needed", ch1)
		}
		if c.Paid > c.Capacity-c.CloseFee {
			t.Errorf("channel %s paid %d beyond its room %d", c.ID, c.Paid, c.Capacity-c.CloseFee)
		}
	}
	if len(chans) != 2 {
		t.Errorf("the buyer has %d channels; want 2 (B did not fit beside A)", len(chans))
	}
	waitFor(t, 60*time.Second, "both contracts settled at the seller and every reservation freed", func() bool {
		cs, unsettled := contractsOf(t, seller)
		settled := len(cs.Contracts) - len(unsettled)
		rs, _ := seller.api().Reservations(ctx)
		rb, _ := buyer.api().Reservations(ctx)
		return settled == 2 && len(rs.Seller)+len(rs.Buyer)+len(rb.Seller)+len(rb.Buyer) == 0
	})
	t.Logf("A (%d sat worst case) resumed on %s across the buyer's and the seller's kill -9; B went to a new channel", total, ch1[:12])
}
