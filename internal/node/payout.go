package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// closePolicyEvery is how often the close policy looks at the channels: it
// reads memory only, unless a channel is due.
const closePolicyEvery = 5 * time.Second

// runClosePolicy applies the payment manager's close policy (close_at,
// close_idle) until ctx ends: the seller's earnings reach its payout
// address without the operator's action.
func (n *Node) runClosePolicy(ctx context.Context) {
	t := time.NewTicker(closePolicyEvery)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := n.payments.ClosePolicy(ctx, n.channelBusy)
		if err != nil && ctx.Err() == nil {
			lvl := slog.LevelWarn
			if err.Error() == lastErr {
				lvl = slog.LevelDebug
			}
			n.log.Log(ctx, lvl, "close policy", "err", err)
			lastErr = err.Error()
		} else {
			lastErr = ""
		}
	}
}

// channelBusy reports whether a seller contract with c's buyer has not
// ended: it may still pay through c (its next interval, its final bill),
// and a contract just accepted pays through the channel it finds open.
func (n *Node) channelBusy(c *payment.Channel) bool {
	if n.seller == nil {
		return false
	}
	recs, err := n.seller.Machine().List(contract.RoleSeller)
	if err != nil {
		return true // unknown: do not close
	}
	for _, r := range recs {
		if r.Peer.String() == c.Peer && !r.State.Final() {
			return true
		}
	}
	return false
}
