package payment

import (
	"fmt"
)

// Reservations after a restart, and for a buyer that names no channel.
//
// The reservations (reserve.go) live in memory: they are not persisted but
// rebuilt. A contract resumed after a restart (pkg/contract resume.go) has
// paid at least its first interval, so the channel records, which are
// persisted with every update, name its channel (Contracts[id] > 0); its
// worst case comes from its signed proposal, kept in the contract store.
// Each side restores the reservation of every contract it resumes before
// it takes or makes a new one (RestoreCapacity, Payer.Restore), whatever
// the channel's room now: the contract was admitted before the restart.
//
// A buyer from before reservations (it sends no open message when it
// reuses an open channel) does not say which channel a contract will pay
// on. The seller then reserves on the channel that buyer picks, the open
// one with the most room (FindRoom), and refuses the contract at once when
// none of the buyer's open channels has its worst case free
// (ReserveUnnamed). The first payment names the channel for certain: a
// reservation on another channel follows it there, and a payment on a
// channel that cannot carry the contract is refused before the job runs
// (FollowPayment).

// contractChannel returns our channel of role to peer that carries
// contractID (it was paid for it), nil when there is none.
func (m *Manager) contractChannel(role Role, peer, contractID string) *Channel {
	var found *Channel
	m.chans.each(func(_ string, c *Channel) {
		if c.Role == role && c.Peer == peer && c.Contracts[contractID] > 0 {
			found = c
		}
	})
	if found == nil {
		return nil
	}
	return found.clone()
}

// restore records amount for contractID on c without checking its room.
func (b *book) restore(c *Channel, contractID string, amount int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.res == nil {
		b.res = map[string]Reservation{}
	}
	b.res[contractID] = Reservation{Channel: c.ID, Amount: amount}
}

// RestoreCapacity is the seller's reservation of contractID, resumed after
// a restart, which may pay up to amount sats in all on the channel from
// buyer peer it was paid on: reserved whatever that channel's room now, and
// counted in the exposure to unconfirmed fundings when its funding is
// still unconfirmed (Admit admitted it before the restart). It returns the
// channel, or "" when no channel carries the contract (nothing reserved).
func (m *Manager) RestoreCapacity(peer, contractID string, amount int64) string {
	c := m.contractChannel(RoleSeller, peer, contractID)
	if c == nil || c.State != StateOpen && c.State != StatePending {
		return ""
	}
	m.capacity.restore(c, contractID, amount)
	if c.State == StatePending && c.ZeroConf {
		m.zc.mu.Lock()
		if m.zc.res == nil {
			m.zc.res = map[string]reservation{}
		}
		m.zc.res[contractID] = reservation{Channel: c.ID, Amount: amount}
		m.zc.mu.Unlock()
	}
	m.log.Info("capacity reserved again for a resumed contract", "channel", c.ID, "contract", contractID,
		"amount_sat", amount, "paid_sat", c.Contracts[contractID])
	return c.ID
}

// Restore is the buyer's RestoreCapacity: contractID, resumed after a
// restart, reserves amount again on the channel to peer it was paid on,
// so that a new contract does not take the room it still needs. It
// returns the channel ("" when none carries the contract).
func (p *Payer) Restore(peer, contractID string, amount int64) string {
	c := p.m.contractChannel(RoleBuyer, peer, contractID)
	if c == nil || c.State != StateOpen && c.State != StatePending {
		return ""
	}
	p.book.restore(c, contractID, amount)
	p.m.log.Info("capacity reserved again for a resumed contract", "channel", c.ID, "contract", contractID,
		"amount_sat", amount, "paid_sat", c.Contracts[contractID])
	return c.ID
}

// ReserveUnnamed is the seller's check of contractID from a buyer that
// reuses an open channel without naming it (a buyer from before
// reservations): among the buyer's open channels, the one such a buyer
// pays on (the most room) reserves amount; when no open channel has amount
// free the error wraps ErrChannelFull. FollowPayment corrects the guess at
// the first payment. It returns the channel reserved on.
func (m *Manager) ReserveUnnamed(peer, contractID string, amount int64) (string, error) {
	var chans []*Channel
	m.chans.each(func(_ string, c *Channel) {
		if c.Role == RoleSeller && c.Peer == peer && c.State == StateOpen {
			chans = append(chans, c.clone())
		}
	})
	m.capacity.mu.Lock()
	defer m.capacity.mu.Unlock()
	if r, ok := m.capacity.res[contractID]; ok {
		return r.Channel, nil
	}
	var best, most *Channel
	var bestFree int64
	for _, c := range chans {
		if most == nil || c.Room() > most.Room() {
			most = c
		}
		if f := Free(c, m.capacity.res); f >= amount && (best == nil || f > bestFree) {
			best, bestFree = c, f
		}
	}
	switch {
	case most == nil:
		return "", fmt.Errorf("reserve contract %s: %w: the buyer holds no open channel to us", contractID, ErrUnknownChannel)
	case best == nil:
		return "", fmt.Errorf("%w: no open channel of the buyer's can carry contract %s: it may pay %d sat, the most free is %d sat (channel %s)",
			ErrChannelFull, contractID, amount, max(Free(most, m.capacity.res), 0), most.ID)
	}
	// The buyer pays on the one with the most room; when that cannot
	// carry it, it is refused at its first payment (FollowPayment).
	pick := most
	if Free(most, m.capacity.res) < amount {
		pick = best
	}
	if err := m.capacity.reserveLocked(pick, contractID, amount); err != nil {
		return "", err
	}
	return pick.ID, nil
}

// FollowPayment is the seller's check of a payment for contractID on
// channel id: a contract reserved on another channel moves its
// reservation here, when this channel can carry it (else the error wraps
// ErrChannelFull and the reservation stays). A contract without a
// reservation, or a channel we do not know, is left to AcceptUpdate.
func (m *Manager) FollowPayment(contractID, id string) error {
	c := m.chans.get(id)
	if c == nil {
		return nil
	}
	m.capacity.mu.Lock()
	defer m.capacity.mu.Unlock()
	r, ok := m.capacity.res[contractID]
	if !ok || r.Channel == id {
		return nil
	}
	if err := m.capacity.reserveLocked(c, contractID, r.Amount); err != nil {
		return fmt.Errorf("payment on channel %s, not %s: %w", id, r.Channel, err)
	}
	m.log.Info("contract's reservation follows its payment to another channel", "contract", contractID, "from", r.Channel, "to", id)
	return nil
}

// ReservationView is one contract's reservation as `channels` shows it:
// Amount its worst case, Outstanding what it may still pay.
type ReservationView struct {
	Channel     string `json:"channel"`
	Contract    string `json:"contract"`
	Amount      int64  `json:"amount_sat"`
	Outstanding int64  `json:"outstanding_sat"`
}

// Reservations lists the seller's reservations (the Manager's book).
func (m *Manager) Reservations() []ReservationView { return m.views(m.capacity.snapshot()) }

// Reservations lists the buyer's reservations.
func (p *Payer) Reservations() []ReservationView { return p.m.views(p.book.snapshot()) }

func (m *Manager) views(res map[string]Reservation) []ReservationView {
	out := make([]ReservationView, 0, len(res))
	for id, r := range res {
		v := ReservationView{Channel: r.Channel, Contract: id, Amount: r.Amount, Outstanding: r.Amount}
		if c := m.chans.get(r.Channel); c != nil {
			v.Outstanding = outstanding(c, id, r)
		}
		out = append(out, v)
	}
	return out
}
