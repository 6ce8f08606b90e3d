package payment

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The seller's close policy: earnings reach the payout address without the
// operator's action, and fees are weighed before they are paid.
//
// A close costs the channel's CloseFee (fixed when the channel opened: the
// buyer signs closes at that fee) out of the seller's share. The policy
// closes a seller's open channel, to the script fixed at open (the payout
// address, or a fresh child of the payout xpub per channel), when
//
//   - what it holds reached payment.close_at, or
//   - no payment moved it for payment.close_idle,
//
// and the close is worth its fee: the seller's output (Paid-CloseFee) is
// above dust and at least the fee itself, so a close never gives miners
// more than it gives the seller. A channel a contract of its buyer still
// uses (Busy) is left alone: closing it would refuse the contract's next
// payment. Before expiry (tip ≥ expiry − safety_margin) Tick closes
// whenever the seller's output is above dust, whatever the fee: the
// alternative is the buyer's refund, which takes it all back. When even
// that output would be dust, nothing can be closed: the buyer refunds the
// whole channel after expiry and the seller's earnings in it are lost; the
// policy warns once per channel (Unclaimable counts them).

// CloseDecision is the policy's verdict on one channel.
type CloseDecision struct {
	// Close is true when the policy closes the channel now.
	Close bool
	// Reason says why (close_at, close_idle) or why not.
	Reason string
}

// Payout is what closing c now would pay the seller: Paid less the close
// fee, or 0 when that is dust (no close can be made).
func (c *Channel) Payout() int64 {
	if !c.CloseWorth() {
		return 0
	}
	return c.Paid - c.CloseFee
}

// FeeWorth reports whether a close of c pays the seller at least its fee
// (and above dust): the policy's test outside the expiry margin.
func (c *Channel) FeeWorth() bool {
	return c.CloseWorth() && c.Paid-c.CloseFee >= c.CloseFee
}

// nearExpiry reports whether tip is within the safety margin of c's expiry,
// where Tick closes whatever the fee.
func (m *Manager) nearExpiry(c *Channel, tip int32) bool {
	return int64(tip) >= int64(c.Expiry)-int64(m.cfg.SafetyMargin)
}

// CloseDue is the policy's verdict on c at tip and now (busy: a contract
// of c's buyer has not ended).
func (m *Manager) CloseDue(c *Channel, tip int32, now time.Time, busy bool) CloseDecision {
	switch {
	case c.Role != RoleSeller || c.State != StateOpen || c.Paid == 0:
		return CloseDecision{Reason: "not an open seller channel with payments"}
	case m.nearExpiry(c, tip):
		return CloseDecision{Reason: "within the safety margin of expiry: closed by Tick if above dust"}
	case !c.FeeWorth():
		return CloseDecision{Reason: fmt.Sprintf("close would pay %d sat for a fee of %d sat", max(c.Paid-c.CloseFee, 0), c.CloseFee)}
	case busy:
		return CloseDecision{Reason: "a contract of its buyer has not ended"}
	case m.cfg.CloseAt > 0 && c.Paid >= m.cfg.CloseAt:
		return CloseDecision{Close: true, Reason: fmt.Sprintf("holds %d sat, close_at is %d", c.Paid, m.cfg.CloseAt)}
	case m.cfg.CloseIdle > 0 && now.Sub(c.Updated) >= m.cfg.CloseIdle:
		return CloseDecision{Close: true, Reason: fmt.Sprintf("idle for %s, close_idle is %s", now.Sub(c.Updated).Round(time.Second), m.cfg.CloseIdle)}
	}
	return CloseDecision{Reason: "below close_at and not idle"}
}

// ClosePolicy applies the close policy to every seller channel: it closes
// those CloseDue says to (busy tells whether a contract of the channel's
// buyer has not ended; nil: none has), and warns once about each channel
// whose earnings will go back to the buyer at expiry because no close can
// pay them. Call it periodically (the node does every few seconds): it
// reads only memory unless it closes.
func (m *Manager) ClosePolicy(ctx context.Context, busy func(c *Channel) bool) error {
	m.mu.Lock()
	tip := m.tip
	m.mu.Unlock()
	if tip == 0 {
		return nil // not ticked yet: the expiry margin is unknown
	}
	now := m.now()
	var due []*Channel
	m.chans.each(func(_ string, c *Channel) {
		if c.Role == RoleSeller && c.State == StateOpen && c.Paid > 0 {
			due = append(due, c.clone())
		}
	})
	slices.SortFunc(due, func(a, b *Channel) int { return a.Created.Compare(b.Created) })
	var errs []error
	for _, c := range due {
		if m.nearExpiry(c, tip) && !c.CloseWorth() {
			m.warnUnclaimable(c)
			continue
		}
		// Ask busy only of a channel the policy would close otherwise:
		// it reads the contracts.
		if d := m.CloseDue(c, tip, now, false); !d.Close {
			continue
		}
		d := m.CloseDue(c, tip, now, busy != nil && busy(c))
		if cur := m.chans.get(c.ID); !d.Close || cur == nil || cur.State != StateOpen || cur.Paid != c.Paid {
			continue // or moved meanwhile (Tick closed it, a payment came): next round
		}
		tx, err := m.Close(ctx, c.ID)
		if err != nil {
			if !errors.Is(err, ErrNotOpen) { // closed meanwhile
				errs = append(errs, err)
			}
			continue
		}
		m.log.Info("close policy: channel closed", "channel", c.ID, "peer", c.Peer, "why", d.Reason,
			"txid", tx.TxHash().String(), "paid_sat", c.Paid, "fee_sat", c.CloseFee, "payout_sat", c.Paid-c.CloseFee)
	}
	return errors.Join(errs...)
}

// warnUnclaimable logs, once per channel and run, that c's earnings go
// back to its buyer.
func (m *Manager) warnUnclaimable(c *Channel) {
	m.mu.Lock()
	if m.warned == nil {
		m.warned = map[string]bool{}
	}
	seen := m.warned[c.ID]
	m.warned[c.ID] = true
	m.mu.Unlock()
	if !seen {
		m.log.Warn("channel expires with earnings no close can pay (the seller's output would be dust): the buyer refunds them after expiry",
			"channel", c.ID, "peer", c.Peer, "paid_sat", c.Paid, "fee_sat", c.CloseFee, "expiry", c.Expiry)
	}
}

// Holdings is where a node's money in channels is, as `wallet`, `status`,
// `earnings`, the dashboard and the metrics show it. Amounts are in sats.
type Holdings struct {
	// InChannels is what the seller's open (and pending) channels hold:
	// the buyers' latest payments, before the close fee.
	InChannels int64 `json:"in_channels_sat"`
	// CloseFee is what closing them all would cost now (each fee was
	// fixed when its channel opened), and AfterClose what the closes that
	// can be made would leave. Unclaimable is what channels whose close
	// would pay only dust hold: theirs back to the buyer at expiry unless
	// more is paid.
	CloseFee    int64 `json:"close_fee_sat"`
	AfterClose  int64 `json:"after_close_sat"`
	Unclaimable int64 `json:"unclaimable_sat"`
	// Closing is what the seller's closes broadcast and not yet confirmed
	// will pay it (after their fees).
	Closing int64 `json:"closing_sat"`
	// Settled is what the seller's confirmed closes paid it (after fees),
	// and SettledFees those fees.
	Settled     int64 `json:"settled_sat"`
	SettledFees int64 `json:"settled_fees_sat"`
	// Sweeping is what confirmed closes paid to the node's own keys and a
	// sweep has not yet forwarded to the payout address with its
	// confirmations (payment.payout_sweep, sweep.go). SweepFee is what
	// forwarding everything not swept yet (in channels, closing,
	// sweeping) will cost: a sweep's fee when one is made, else 68 vB per
	// output at its close's fee rate plus one sweep's own 42 vB; it is
	// taken from AfterClose too.
	Sweeping int64 `json:"sweeping_sat"`
	SweepFee int64 `json:"sweep_fee_sat"`
	// Lost is what the seller's channels held that went back to buyers
	// (refunded after expiry, no close made).
	Lost int64 `json:"lost_sat"`
	// BuyerLocked is, on a buyer, what its open channels still hold for
	// it (capacity less what it paid): back at the seller's close, or by
	// refund after expiry.
	BuyerLocked int64 `json:"buyer_locked_sat"`
}

// Hold sums where the money in chans is.
func Hold(chans []*Channel) Holdings {
	var h Holdings
	var sweepBase int64 // one sweep's own bytes, at the highest rate
	for _, c := range chans {
		if c.Role == RoleBuyer {
			if c.State == StatePending || c.State == StateOpen || c.State == StateClosing {
				h.BuyerLocked += c.Capacity - c.Paid
			}
			continue
		}
		if c.Role != RoleSeller || c.Paid == 0 {
			continue
		}
		ours := len(c.SpendTx) > 0 && (c.SpendFee() > 0 || c.Recovered) // our close is what spent it
		swept := c.HoldIndex != nil
		switch c.State {
		case StatePending, StateOpen:
			h.InChannels += c.Paid
			h.CloseFee += c.CloseFee
			if c.CloseWorth() {
				h.AfterClose += c.Paid - c.CloseFee
				if swept {
					h.AfterClose -= c.sweepCost()
					h.SweepFee += c.sweepCost()
					sweepBase = max(sweepBase, c.sweepCost()/SweepInputVB*SweepBaseVB)
				}
			} else {
				h.Unclaimable += c.Paid
			}
		case StateClosing:
			if ours || c.SpendTxid == "" {
				h.Closing += c.Paid - c.CloseFee
				if swept {
					h.SweepFee += c.sweepCost()
					sweepBase = max(sweepBase, c.sweepCost()/SweepInputVB*SweepBaseVB)
				}
			}
		case StateClosed:
			if ours && swept {
				switch {
				case c.Sweep != nil && c.Sweep.Confirmed:
					// What the payout address got of it, exactly.
					share, in := c.Sweep.FeeShare(c.ID), c.Sweep.input(c.ID)
					h.Settled += in - share
					h.SettledFees += c.Paid - in + share
				case c.Sweep != nil:
					h.Sweeping += c.Sweep.input(c.ID)
					h.SweepFee += c.Sweep.FeeShare(c.ID)
				default:
					h.Sweeping += c.Paid - c.CloseFee
					h.SweepFee += c.sweepCost()
					sweepBase = max(sweepBase, c.sweepCost()/SweepInputVB*SweepBaseVB)
				}
			} else if ours {
				h.Settled += c.Paid - c.CloseFee
				h.SettledFees += c.CloseFee
			} else {
				h.Lost += c.Paid
			}
		}
	}
	h.SweepFee += sweepBase
	if h.InChannels > 0 {
		h.AfterClose = max(h.AfterClose-sweepBase, 0)
	}
	return h
}

// The close policy's defaults (docs/payout.md works them out).
const (
	DefaultCloseIdle = 72 * time.Hour
	DefaultCloseAt   = 20_000
)

// usable reports whether the buyer's channel c may carry a new contract:
// its funding output is not spent as far as the chain knows (a seller's
// close policy may have closed it since the last block; btcd sees the close
// in its mempool). A spend found is recorded (the channel moves to
// Closing); a chain error leaves the channel usable.
func (m *Manager) usable(ctx context.Context, c *Channel) bool {
	if c.State != StateOpen {
		return true
	}
	m.mu.Lock()
	tip := m.tip
	m.mu.Unlock()
	spent, err := m.checkSpent(ctx, c, tip)
	if err != nil {
		m.log.Debug("channel spend check", "channel", c.ID, "err", err)
		return true
	}
	if spent {
		m.log.Info("channel closed by its seller: a new contract opens another", "channel", c.ID, "peer", c.Peer)
	}
	return !spent
}

// PayoutPolicy is where a seller's closes pay and when the close policy
// makes them, as `status` shows it.
type PayoutPolicy struct {
	// Address is payment.payout_address (the node's own wallet address
	// when none was configured); Xpub is set when closes pay fresh
	// addresses of payment.payout_xpub instead.
	Address string `json:"address,omitempty"`
	Xpub    bool   `json:"xpub,omitempty"`
	// Sweep is set when closes pay the node's keys and batched sweeps
	// forward them (payment.payout_sweep): SweepAtSat and
	// SweepAfterSeconds say when.
	Sweep             bool    `json:"sweep,omitempty"`
	SweepAtSat        int64   `json:"sweep_at_sat,omitempty"`
	SweepAfterSeconds float64 `json:"sweep_after_seconds,omitempty"`
	// CloseAtSat and CloseIdleSeconds are payment.close_at and
	// payment.close_idle (0: off).
	CloseAtSat       int64   `json:"close_at_sat"`
	CloseIdleSeconds float64 `json:"close_idle_seconds"`
}

// Payout is this manager's payout policy.
func (m *Manager) Payout() PayoutPolicy {
	p := PayoutPolicy{Address: m.cfg.PayoutAddress, Xpub: m.cfg.PayoutXpub != "",
		CloseAtSat: m.cfg.CloseAt, CloseIdleSeconds: m.cfg.CloseIdle.Seconds()}
	if m.sweeping() {
		p.Sweep, p.SweepAtSat, p.SweepAfterSeconds = true, m.cfg.SweepAt, m.cfg.SweepAfter.Seconds()
	}
	return p
}
