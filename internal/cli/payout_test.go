package cli

import (
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// TestHoldingsLines: what status, earnings and wallet balance say about the
// money in channels: the cost and result of closing now, what no close can
// pay, closing, settled, lost and a buyer's locked capacity; an older
// daemon's three numbers still show.
func TestHoldingsLines(t *testing.T) {
	h := payment.Holdings{InChannels: 1200, CloseFee: 684, AfterClose: 858, Unclaimable: 200,
		Closing: 462, Settled: 1000, SettledFees: 342, Lost: 11, BuyerLocked: 99_000}
	got := strings.Join(holdingsLines(h, sats), "\n")
	for _, want := range []string{
		"in channels: 1,200 sat; closing them now costs 684 sat in fees and leaves 858 sat",
		"200 sat of it no close can pay yet",
		"closing: 462 sat",
		"settled: 1,000 sat paid to the payout address (after 342 sat in close fees)",
		"lost: 11 sat",
		"locked as a buyer: 99,000 sat",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if l := holdingsLines(payment.Holdings{}, sats); len(l) != 1 || l[0] != "in channels: nothing" {
		t.Errorf("nothing: %q", l)
	}
	old := api.Earnings{InChannelsSat: 900, CloseFeeSat: 342, AfterCloseSat: 558}
	if l := closeLine(old); l != "In open channels: 900 sat; closing them now costs 342 sat in fees and leaves 558 sat" {
		t.Errorf("older daemon: %q", l)
	}
}

func TestPayoutLine(t *testing.T) {
	p := payment.PayoutPolicy{Address: "bcrt1qexample", CloseAtSat: 20_000, CloseIdleSeconds: 72 * 3600}
	if got := payoutLine(p); got != "to bcrt1qexample; channels closed at 20,000 sat held or after 72h0m0s idle when the close pays at least its fee, and before expiry" {
		t.Errorf("defaults: %q", got)
	}
	p = payment.PayoutPolicy{Xpub: true}
	if got := payoutLine(p); got != "to a fresh address of payment.payout_xpub per channel; channels closed before expiry only (close_at and close_idle are off)" {
		t.Errorf("xpub, no policy: %q", got)
	}
}

// TestSweepLines: with swept payouts, what closing and sweeping would cost
// and what a sweep under way holds are said, and the payout line says when
// a sweep runs.
func TestSweepLines(t *testing.T) {
	h := payment.Holdings{InChannels: 20_000, CloseFee: 342, SweepFee: 178, AfterClose: 19_480, Sweeping: 5_000}
	got := strings.Join(holdingsLines(h, sats), "\n")
	for _, want := range []string{
		"closing them now costs 342 sat in fees, sweeping them to the payout address about 178 sat more, and leaves 19,480 sat",
		"sweeping: 5,000 sat from the node's keys to the payout address",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	p := payment.PayoutPolicy{Address: "bcrt1qexample", Sweep: true, SweepAtSat: 50_000, SweepAfterSeconds: 86400}
	if got := payoutLine(p); !strings.HasPrefix(got, "to bcrt1qexample through the node's keys (closes and sweeps can be fee-bumped; a batched sweep runs once 50,000 sat wait or after 24h0m0s);") {
		t.Errorf("swept: %q", got)
	}
}
