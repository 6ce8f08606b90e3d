package node

import (
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// rebuildPaid raises every contract record's Paid to what the payment
// channels hold for that contract (summed over the channels of its role),
// before the contract engines start. The payment path records a payment in
// the contract (contract.Machine.NotePaid) and in the seller's earnings
// history (history.paid) a moment after the channel update is durable, not
// before the update is sent or acknowledged: a kill -9 in between loses
// those two records, and this (with history.reconcile for the earnings)
// brings them back to the channels' state.
func (n *Node) rebuildPaid(st contract.Store) {
	if n.payments == nil {
		return
	}
	totals := map[contract.Role]map[string]int64{contract.RoleBuyer: {}, contract.RoleSeller: {}}
	for _, c := range n.payments.Channels() {
		role := contract.RoleBuyer
		if c.Role == payment.RoleSeller {
			role = contract.RoleSeller
		}
		for id, sat := range c.Contracts {
			totals[role][id] += sat
		}
	}
	for role, t := range totals {
		if len(t) == 0 {
			continue
		}
		raised, err := contract.RaisePaid(st, role, t)
		if err != nil {
			n.log.Warn("rebuild contracts' payments from the channels", "role", role, "err", err)
			continue
		}
		for _, id := range raised {
			n.log.Info("contract payment rebuilt from its channel after a restart", "contract", id, "role", role, "paid_sats", t[id])
		}
	}
}
