package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// holdingsLines says where the money in channels is, one line each: in
// open channels as a seller (what closing them costs now, what it leaves,
// what no close can pay yet), closing, settled, lost, and locked as a
// buyer. Lines with nothing are left out, except the first. sats formats
// an amount (earnings' ungrouped, the wallet's grouped).
func holdingsLines(h payment.Holdings, sats func(int64) string) []string {
	first := "in channels: nothing"
	if h.InChannels > 0 {
		first = fmt.Sprintf("in channels: %s; closing them now costs %s in fees and leaves %s", sats(h.InChannels), sats(h.CloseFee), sats(h.AfterClose))
		if h.SweepFee > 0 {
			first = fmt.Sprintf("in channels: %s; closing them now costs %s in fees, sweeping them to the payout address about %s more, and leaves %s",
				sats(h.InChannels), sats(h.CloseFee), sats(h.SweepFee), sats(h.AfterClose))
		}
		if h.Unclaimable > 0 {
			first += fmt.Sprintf(" (%s of it no close can pay yet: the seller's output would be dust; back to the buyer at expiry unless more is paid)", sats(h.Unclaimable))
		}
	}
	lines := []string{first}
	if h.Closing > 0 {
		lines = append(lines, fmt.Sprintf("closing: %s to the payout address, once the closes confirm", sats(h.Closing)))
	}
	if h.Sweeping > 0 {
		lines = append(lines, fmt.Sprintf("sweeping: %s from the node's keys to the payout address (the sweep's fee, about %s, is taken from it)", sats(h.Sweeping), sats(h.SweepFee)))
	}
	if h.Settled > 0 {
		lines = append(lines, fmt.Sprintf("settled: %s paid to the payout address (after %s in close fees)", sats(h.Settled), sats(h.SettledFees)))
	}
	if h.Lost > 0 {
		lines = append(lines, fmt.Sprintf("lost: %s refunded to buyers (no close could pay it before expiry)", sats(h.Lost)))
	}
	if h.BuyerLocked > 0 {
		lines = append(lines, fmt.Sprintf("locked as a buyer: %s (back at the seller's close, or by refund after expiry)", sats(h.BuyerLocked)))
	}
	return lines
}

// channelHoldings reads the channels from the daemon, or from the database
// when none runs; ok is false when neither can be read (payments off).
func (a *App) channelHoldings(ctx context.Context) (payment.Holdings, bool) {
	list, err := a.client().Channels(ctx)
	if errors.Is(err, api.ErrNoDaemon) {
		list, err = a.loadChannels()
	}
	if err != nil {
		return payment.Holdings{}, false
	}
	return payment.Hold(list), true
}

// writeHoldings prints holdingsLines under a label, aligned.
func writeHoldings(w io.Writer, label string, h payment.Holdings) {
	pad := strings.Repeat(" ", len(label))
	for i, l := range holdingsLines(h, sats) {
		if i == 0 {
			fmt.Fprintf(w, "%s%s\n", label, l)
		} else {
			fmt.Fprintf(w, "%s%s\n", pad, l)
		}
	}
}

// payoutLine says where closes pay and when the close policy makes them.
func payoutLine(p payment.PayoutPolicy) string {
	to := p.Address
	if p.Xpub {
		to = "a fresh address of payment.payout_xpub per channel"
	}
	var when []string
	if p.CloseAtSat > 0 {
		when = append(when, fmt.Sprintf("at %s held", sats(p.CloseAtSat)))
	}
	if p.CloseIdleSeconds > 0 {
		when = append(when, fmt.Sprintf("after %s idle", time.Duration(p.CloseIdleSeconds*float64(time.Second))))
	}
	policy := "closed before expiry only (close_at and close_idle are off)"
	if len(when) > 0 {
		policy = "closed " + strings.Join(when, " or ") + " when the close pays at least its fee, and before expiry"
	}
	if p.Sweep {
		var at []string
		if p.SweepAtSat > 0 {
			at = append(at, fmt.Sprintf("once %s wait", sats(p.SweepAtSat)))
		}
		if p.SweepAfterSeconds > 0 {
			at = append(at, fmt.Sprintf("after %s", time.Duration(p.SweepAfterSeconds*float64(time.Second))))
		}
		if len(at) == 0 {
			at = []string{"at once"}
		}
		to = fmt.Sprintf("%s through the node's keys (closes and sweeps can be fee-bumped; a batched sweep runs %s)", to, strings.Join(at, " or "))
	}
	return fmt.Sprintf("to %s; channels %s", to, policy)
}
