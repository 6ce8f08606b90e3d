package payment

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/btcsuite/btcd/wire"
)

// Watching a pending channel's funding (DESIGN.md §7). A funding that never
// reaches the chain would hold the seller's capacity and the buyer's coins
// for ever; one whose inputs another transaction spent in a block never
// will. Both sides watch every Pending channel:
//   - double-spent: an input of the funding is spent by another transaction
//     with at least Confirmations confirmations (buried as deep as a funding
//     must be: a shallow conflict may still be reorged out): the channel
//     fails at once;
//   - never confirmed: the funding has been out of the chain (never mined,
//     evicted from the mempool, or reorged out) for FundingTimeout blocks in
//     a row: the channel fails.
// A failed channel's contracts fail with its reason (WaitOpen and payments
// refuse it; ManagerConfig.OnFail tells the node, which fails the contracts
// it carried and, on the seller's side, counts it against the buyer).

// Funding failure reasons start with these, so callers can tell them apart.
const (
	FailDoubleSpent  = "funding double-spent"
	FailNotConfirmed = "funding not confirmed"
)

// watchFunding is the Pending step's check of a funding with confs
// confirmations at tip. It reports whether the channel failed.
func (m *Manager) watchFunding(ctx context.Context, c *Channel, tip, confs int32) (bool, error) {
	if confs >= 1 {
		if c.PendingSince != 0 {
			return false, m.update(c.ID, func(n *Channel) bool {
				if n.PendingSince == 0 {
					return false
				}
				n.PendingSince = 0
				return true
			})
		}
		return false, nil
	}
	if c.PendingSince == 0 {
		// A new channel counts from its open (OpenChannel and
		// AcceptOpen set it); one reorged out from the first step that
		// sees it out of the chain.
		since := tip
		if err := m.update(c.ID, func(n *Channel) bool {
			if n.PendingSince != 0 || n.State != StatePending {
				return false
			}
			n.PendingSince = since
			return true
		}); err != nil {
			return false, err
		}
		c = m.chans.get(c.ID)
	}
	// The light client knows no mempool: 0 says only that this node sent
	// the funding, so a conflict is looked for in the blocks all along.
	_, light := m.chain.(ScriptChain)
	if confs < 0 || confs == 0 && light {
		// Unknown to the node: evicted, never relayed, or in conflict
		// with a transaction that took its inputs.
		txid, err := m.fundingConflict(ctx, c)
		if err != nil {
			return false, err
		}
		if txid != "" {
			return true, m.fail(c.ID, fmt.Sprintf("%s: its input is spent by %s", FailDoubleSpent, txid))
		}
	}
	if c.PendingSince > 0 && tip-c.PendingSince >= m.cfg.FundingTimeout {
		return true, m.fail(c.ID, fmt.Sprintf("%s: out of the chain for %d blocks (funding_timeout %d)",
			FailNotConfirmed, tip-c.PendingSince, m.cfg.FundingTimeout))
	}
	return false, nil
}

// fundingConflict returns the txid of a transaction, buried at least
// Confirmations deep, that spends an input of c's funding; "" when none.
func (m *Manager) fundingConflict(ctx context.Context, c *Channel) (string, error) {
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(c.FundingTx)); err != nil {
		return "", fmt.Errorf("funding of %s: %w", c.ID, err)
	}
	own := tx.TxHash()
	params, _ := NetParams(m.cfg.Network)
	for _, in := range tx.TxIn {
		// The light client finds a spend through the script spent (the
		// input reveals it; nil: the chain's own SpendOf).
		var pk []byte
		if params != nil {
			pk, _ = spentScript(in, params)
		}
		spend, err := SpendOfScript(ctx, m.chain, in.PreviousOutPoint, pk, c.OpenHeight-6)
		if err != nil {
			return "", fmt.Errorf("funding of %s: input %s: %w", c.ID, in.PreviousOutPoint, err)
		}
		if spend == nil || spend.TxHash() == own {
			continue
		}
		confs, err := TxConfirmations(ctx, m.chain, spend.TxHash(), pk, c.OpenHeight-6)
		if err != nil {
			return "", fmt.Errorf("funding of %s: conflict %s: %w", c.ID, spend.TxHash(), err)
		}
		if confs >= m.cfg.Confirmations {
			return spend.TxHash().String(), nil
		}
	}
	return "", nil
}

// fail moves a pending channel to Failed with why, and tells OnFail.
func (m *Manager) fail(id, why string) error {
	var failed *Channel
	err := m.update(id, func(n *Channel) bool {
		if n.State != StatePending {
			return false
		}
		n.State, n.FailReason = StateFailed, why
		failed = n
		return true
	})
	if err != nil || failed == nil {
		return err
	}
	m.log.Warn("channel failed", "channel", id, "peer", failed.Peer, "role", failed.Role.String(), "why", why)
	if m.onFail != nil {
		m.onFail(failed.clone())
	}
	return nil
}

// update applies change to a copy of the channel under its lock and
// persists it when change reports a change.
func (m *Manager) update(id string, change func(*Channel) bool) error {
	cs, cur := m.chans.lock(id)
	if cs == nil {
		return fmt.Errorf("channel %s: %w", id, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	next := cur.clone()
	if !change(next) {
		return nil
	}
	return m.persist(cs, next)
}

// failedWith says why the channel that carried contractID to peer failed
// (": channel X failed: reason"), or "" when none did: a payment refused
// for it names the cause.
func (p *Payer) failedWith(peer, contractID string) string {
	for _, c := range p.m.Channels() {
		if c.Role == RoleBuyer && c.Peer == peer && c.State == StateFailed && c.Contracts[contractID] > 0 {
			return fmt.Sprintf(": channel %s failed: %s", c.ID, c.FailReason)
		}
	}
	return ""
}

// revivable reports whether a failed channel may still come back: its
// funding was given up as never confirming, but nothing spent its inputs,
// so it may confirm yet (a fee that was too low, rebroadcast by the
// wallet). Its output would then hold the buyer's coins, recoverable only
// through the channel's refund: such a channel stays watched.
func (c *Channel) revivable() bool {
	return c.State == StateFailed && strings.HasPrefix(c.FailReason, FailNotConfirmed) && !strings.Contains(c.FailReason, FailDoubleSpent)
}

// revive is the Failed step of a revivable channel: once its funding is in
// a block after all, the channel is pending again (then open, and closed or
// refunded as any other); once an input of the funding is spent by another
// buried transaction, it is failed for good.
func (m *Manager) revive(ctx context.Context, c *Channel) error {
	confs, err := m.chain.Confirmations(ctx, c.FundingTxid())
	if err != nil {
		return err
	}
	if confs >= 1 {
		err := m.update(c.ID, func(n *Channel) bool {
			if !n.revivable() {
				return false
			}
			n.State, n.PendingSince = StatePending, 0
			n.FailReason = ""
			return true
		})
		if err == nil {
			m.log.Info("channel funding confirmed after the channel failed: watched again (its coins are refunded or closed as usual)", "channel", c.ID, "confs", confs)
		}
		return err
	}
	if confs < 0 {
		txid, err := m.fundingConflict(ctx, c)
		if err != nil || txid == "" {
			return err
		}
		return m.update(c.ID, func(n *Channel) bool {
			if !n.revivable() {
				return false
			}
			n.FailReason = fmt.Sprintf("%s; then %s: its input is spent by %s", n.FailReason, FailDoubleSpent, txid)
			return true
		})
	}
	return nil
}
