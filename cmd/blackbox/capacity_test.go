//go:build integration

package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

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
	m := newMarket(t)
	seller := m.daemon(sellerEnv("BLACKBOX_METER_MAX_CPU=2", "BLACKBOX_METER_PRICING_START_FEE=20000"))
	buyer := m.daemon(append(slices.Clone(buyerEnv),
		"BLACKBOX_PAYMENT_CHANNEL_MIN_CAPACITY=10000", // channels of twice the contract
		"BLACKBOX_PAYMENT_CHANNEL_REFILL_AT=1",        // no background open: the count below is exact
	), "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	image := busybox(t, t.TempDir())
	flags := []string{"--cpus", "1", "--memory", "128MiB", "--time", "1m", "--max-price", "100000"}
	ids := []string{
		submitDetached(t, buyer, image, flags, "echo", "one"),
		submitDetached(t, buyer, image, flags, "echo", "two"),
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
	cs, err := seller.api().Contracts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range cs.Contracts {
		if r.State != contract.StateSettled {
			t.Errorf("seller's contract %s is %s (%s)", r.ID[:12], r.State, r.Why)
		}
	}
	if len(cs.Contracts) != 2 {
		t.Errorf("the seller holds %d contracts; want 2", len(cs.Contracts))
	}
	if t.Failed() {
		t.Logf("buyer:\n%s\nseller:\n%s", buyer.logs.String(), seller.logs.String())
	}
}
