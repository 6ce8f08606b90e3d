package node

import (
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// channelFailed is the payment manager's OnFail: a channel whose funding was
// double-spent or never confirmed (payment/fundwatch.go). On the seller's
// side the contracts it carried fail with its reason (one still waiting for
// the channel to open fails by itself: WaitOpen returns the reason; a
// running job runs on until its buyer, who can pay no more, stops paying),
// and the buyer whose funding it was gets the evidence, with the channel's
// reason: a proven double-spend is deliberate fraud against the seller
// (OutcomeFundingDoubleSpent, which blocks the buyer at once), a funding
// that never confirmed may be a fee too low (OutcomeFundingUnconfirmed,
// half a failed contract). Both are this node's own observations, kept in
// its book; they are never attested to others. On
// the buyer's side its engine fails its contracts: their next payment is
// refused with the channel's reason.
func (n *Node) channelFailed(c *payment.Channel) {
	if c.Role != payment.RoleSeller {
		// The buyer's engine fails its contracts itself: its next
		// payment on the channel is refused with the reason.
		return
	}
	why := contract.ChannelFailedPrefix + c.ID + ": " + c.FailReason
	var m *contract.Machine
	if n.seller != nil {
		m = n.seller.Machine()
	} else if n.db != nil {
		// No seller engine runs: the records are the database's.
		m = contract.NewMachine(store.NewContractStore(n.db), contract.Timeouts{}, nil, n.log)
	}
	if m != nil {
		for id := range c.Contracts {
			r, err := m.Get(contract.RoleSeller, id)
			if err != nil || !contract.CanMove(r.State, contract.StateFailed) {
				continue
			}
			if _, err := m.Move(contract.RoleSeller, id, contract.StateFailed, why, nil); err != nil {
				n.log.Warn("fail contract of a failed channel", "contract", id, "channel", c.ID, "err", err)
				continue
			}
			n.log.Info("contract failed with its channel", "contract", id, "channel", c.ID, "why", c.FailReason)
		}
	}
	if n.book == nil {
		return
	}
	buyer, err := peer.Decode(c.Peer)
	if err != nil {
		return
	}
	o := reputation.OutcomeFundingUnconfirmed
	if strings.HasPrefix(c.FailReason, payment.FailDoubleSpent) {
		o = reputation.OutcomeFundingDoubleSpent
	}
	if err := n.book.Observe(reputation.Observation{Peer: buyer, ContractID: "channel:" + c.ID, Outcome: o, At: time.Now(), Reason: c.FailReason}); err != nil {
		n.log.Warn("reputation: record failed funding", "peer", buyer, "channel", c.ID, "err", err)
		return
	}
	n.log.Info("reputation: failed funding counted against the buyer", "peer", buyer, "channel", c.ID, "outcome", o.String(), "why", c.FailReason)
}
