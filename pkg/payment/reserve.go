package payment

import (
	"errors"
	"fmt"
	"sync"
)

// Capacity reservations: several contracts run on one channel at once, and
// each may pay up to its worst-case total (price cap × intervals + start
// fee). A channel's room (Room) counts only what was paid; two contracts
// that both fit in the room left would both start, and the second's
// payments would fail once the first had spent it (after the seller had
// set up its job). So each contract reserves its worst case on the channel
// it starts on, on both sides: the buyer picks a channel whose Free room
// holds the contract, and the seller refuses, before it takes the image, a
// contract its channel cannot carry. A reservation shrinks as its contract
// pays (what it paid is in Paid already) and goes when the contract ends:
// what it did not spend is free again.

// ErrChannelFull is why a contract does not fit a channel: the channel's
// capacity is paid or reserved by other contracts.
var ErrChannelFull = errors.New("channel full")

// Reservation is a contract's worst-case total on a channel.
type Reservation struct {
	Channel string
	// Amount is the most the contract may pay in all, in satoshis.
	Amount int64
}

// outstanding is what contract id may still pay on c under r.
func outstanding(c *Channel, id string, r Reservation) int64 {
	return max(0, r.Amount-c.Contracts[id])
}

// Reserved is what the contracts reserved on c may still pay.
func Reserved(c *Channel, res map[string]Reservation) int64 {
	var s int64
	for id, r := range res {
		if r.Channel == c.ID {
			s += outstanding(c, id, r)
		}
	}
	return s
}

// Free is what c can still promise a new contract: its room less what the
// contracts reserved on it may still pay.
func Free(c *Channel, res map[string]Reservation) int64 {
	return c.Room() - Reserved(c, res)
}

// Committed is the share (0 to 1) of c's usable capacity (capacity less the
// close fee) that is paid or reserved.
func Committed(c *Channel, res map[string]Reservation) float64 {
	usable := c.Capacity - c.CloseFee
	if usable <= 0 {
		return 1
	}
	return min(1, float64(usable-Free(c, res))/float64(usable))
}

// book holds a node's reservations, by contract ID.
type book struct {
	mu  sync.Mutex
	res map[string]Reservation
}

// reserve records amount for contractID on c when c's free room holds it;
// a contract already reserved on c keeps its reservation (asking again
// succeeds). Otherwise the error wraps ErrChannelFull and says why.
func (b *book) reserve(c *Channel, contractID string, amount int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reserveLocked(c, contractID, amount)
}

func (b *book) reserveLocked(c *Channel, contractID string, amount int64) error {
	if b.res == nil {
		b.res = map[string]Reservation{}
	}
	if r, ok := b.res[contractID]; ok && r.Channel == c.ID {
		return nil
	}
	others := make(map[string]Reservation, len(b.res))
	n := 0
	for id, r := range b.res {
		if id != contractID {
			others[id] = r
			if r.Channel == c.ID {
				n++
			}
		}
	}
	need := amount - c.Contracts[contractID]
	if free := Free(c, others); need > free {
		return fmt.Errorf("%w: channel %s cannot carry contract %s: it may pay %d sat more, %d sat are free (capacity %d, close fee %d, paid %d, %d sat reserved by %d other contract(s))",
			ErrChannelFull, c.ID, contractID, need, max(free, 0), c.Capacity, c.CloseFee, c.Paid, Reserved(c, others), n)
	}
	b.res[contractID] = Reservation{Channel: c.ID, Amount: amount}
	return nil
}

// release drops contractID's reservation.
func (b *book) release(contractID string) {
	b.mu.Lock()
	delete(b.res, contractID)
	b.mu.Unlock()
}

// get returns contractID's reservation.
func (b *book) get(contractID string) (Reservation, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.res[contractID]
	return r, ok
}

// snapshot returns a copy of the reservations.
func (b *book) snapshot() map[string]Reservation {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]Reservation, len(b.res))
	for id, r := range b.res {
		out[id] = r
	}
	return out
}

// ReserveCapacity is the seller's check of a contract on channel id: the
// channel must hold contractID's worst-case total amount besides what it
// was paid and what its other running contracts may still pay. It
// reserves the amount until ReleaseCapacity; a refusal wraps ErrChannelFull
// (or ErrUnknownChannel) and reserves nothing.
func (m *Manager) ReserveCapacity(id, contractID string, amount int64) error {
	c := m.chans.get(id)
	if c == nil {
		return fmt.Errorf("reserve on %s: %w", id, ErrUnknownChannel)
	}
	return m.capacity.reserve(c, contractID, amount)
}

// ReleaseCapacity drops contractID's capacity reservation (its contract
// ended): what it did not pay is free for other contracts.
func (m *Manager) ReleaseCapacity(contractID string) { m.capacity.release(contractID) }
