package payment

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// The buyer's side of capacity reservations (reserve.go): each contract
// reserves its worst-case total on the channel it starts on, a contract
// that does not fit any channel to its seller opens another, the next
// channel opens in the background once the ones there are mostly
// committed, and a new channel is sized by the buyer's recent spend to
// that seller (PayerConfig.Size).

// Payer returns the buyer's channel policy of c.
func (c *Config) Payer() PayerConfig {
	return PayerConfig{MinCapacity: c.ChannelMinCapacity, MaxCapacity: c.ChannelMaxCapacity,
		VolumeHours: c.ChannelVolumeHours, RefillAt: c.ChannelRefillAt}
}

// validateChannels checks the channel sizing keys. Zero (a config built
// before they existed) takes the default.
func (c *Config) validateChannels() error {
	switch {
	case c.ChannelMinCapacity < 0 || c.ChannelMinCapacity > 0 && c.ChannelMinCapacity < 10_000:
		return fmt.Errorf("channel_min_capacity: %d sat is below 10000 (a channel must pay its close fee and more)", c.ChannelMinCapacity)
	case c.ChannelMaxCapacity < 0 || c.ChannelMaxCapacity > 0 && c.ChannelMaxCapacity < c.ChannelMinCapacity:
		return fmt.Errorf("channel_max_capacity: %d sat is below channel_min_capacity %d", c.ChannelMaxCapacity, c.ChannelMinCapacity)
	case c.ChannelMaxCapacity > 21e14:
		return fmt.Errorf("channel_max_capacity: %d sat is more bitcoin than there is", c.ChannelMaxCapacity)
	case c.ChannelVolumeHours < 0 || c.ChannelVolumeHours > 24*366:
		return fmt.Errorf("channel_volume_hours: %d must be between 1 and 8784 (a year)", c.ChannelVolumeHours)
	case c.ChannelRefillAt < 0 || c.ChannelRefillAt > 1 || c.ChannelRefillAt != c.ChannelRefillAt:
		return fmt.Errorf("channel_refill_at: %g must be a share of a channel, above 0 and at most 1", c.ChannelRefillAt)
	}
	return nil
}

// volumeWindow is how far back the recent spend to a seller is summed.
const volumeWindow = time.Hour

// refillTimeout bounds a background open.
const refillTimeout = 2 * time.Minute

// volume is the recent spend per seller and the background opens under way.
type volume struct {
	mu    sync.Mutex
	spent []spend
	// refilling holds the sellers a background open runs for.
	refilling map[string]bool
}

type spend struct {
	peer   string
	at     time.Time
	amount int64
}

// note records a contract of amount to peer now.
func (v *volume) note(peer string, amount int64, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	keep := v.spent[:0]
	for _, s := range v.spent {
		if now.Sub(s.at) < volumeWindow {
			keep = append(keep, s)
		}
	}
	v.spent = append(keep, spend{peer: peer, at: now, amount: amount})
}

// recent is what the contracts to peer came to in the last volumeWindow.
func (v *volume) recent(peer string, now time.Time) int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	var sum int64
	for _, s := range v.spent {
		if s.peer == peer && now.Sub(s.at) < volumeWindow {
			sum += s.amount
		}
	}
	return sum
}

// EnsureContract is EnsureChannel for contractID, which may pay up to
// amount sats in all: it reserves amount on a channel to peer whose free
// room (Free: room less what the other contracts there may still pay)
// holds it, preferring open channels to pending ones, or funds a new
// channel for it, sized by the recent spend to peer (PayerConfig.Size).
// It returns the channel's open request (for an open channel too: the
// seller checks the contract fits before it sets up the job). Asked again
// for the same contract, it names the same channel. Pay then pays the
// contract on that channel; Release frees what it did not spend.
func (p *Payer) EnsureContract(ctx context.Context, peer, contractID string, terms []byte, amount int64) (*OpenRequest, error) {
	if r, ok := p.book.get(contractID); ok {
		return p.handOver(r.Channel)
	}
	c, err := p.claim(ctx, peer, contractID, amount)
	if err != nil {
		return nil, err
	}
	if c == nil {
		t, err := DecodeSellerTerms(terms)
		if err != nil {
			return nil, err
		}
		if c, err = p.openFor(ctx, peer, t, contractID, amount); err != nil {
			return nil, err
		}
	}
	p.vol.note(peer, amount, p.m.now())
	p.maybeRefill(peer, terms, amount)
	return p.handOver(c.ID)
}

// Release drops contractID's reservation: its contract ended, and what it
// did not pay is free for other contracts.
func (p *Payer) Release(contractID string) { p.book.release(contractID) }

// Reservation returns contractID's reservation, if it has one.
func (p *Payer) Reservation(contractID string) (Reservation, bool) { return p.book.get(contractID) }

// handOver is EnsureContract's answer for channel id: its open request
// while it is pending or open.
func (p *Payer) handOver(id string) (*OpenRequest, error) {
	c, err := p.m.Channel(id)
	if err != nil {
		return nil, err
	}
	if c.State != StateOpen && c.State != StatePending {
		return nil, fmt.Errorf("channel %s is %s: %w %s", id, c.State, ErrNotOpen, c.FailReason)
	}
	return c.ReopenRequest(), nil
}

// channelOf is the channel contractID pays on: its reservation's, else
// the one FindRoom names.
func (p *Payer) channelOf(peer, contractID string) *Channel {
	if r, ok := p.book.get(contractID); ok {
		if c, err := p.m.Channel(r.Channel); err == nil {
			return c
		}
	}
	return p.find(peer, 0, contractID)
}

// pick returns, of the channels to peer not in skip, the one to reserve
// amount on: open before pending, then the most free room; nil if none
// has amount free.
func (p *Payer) pick(peer string, amount int64, skip map[string]bool) *Channel {
	res := p.book.snapshot()
	var best *Channel
	var bestFree int64
	for _, c := range p.m.Channels() {
		if c.Role != RoleBuyer || c.Peer != peer || skip[c.ID] || c.State != StateOpen && c.State != StatePending {
			continue
		}
		f := Free(c, res)
		if f < amount {
			continue
		}
		better := best == nil || c.State == StateOpen && best.State != StateOpen ||
			c.State == best.State && f > bestFree
		if better {
			best, bestFree = c, f
		}
	}
	return best
}

// claim reserves amount for contractID on a usable channel to peer with
// room for it; nil when there is none.
func (p *Payer) claim(ctx context.Context, peer, contractID string, amount int64) (*Channel, error) {
	skip := map[string]bool{}
	for {
		c := p.pick(peer, amount, skip)
		if c == nil {
			return nil, nil
		}
		skip[c.ID] = true
		if !p.m.usable(ctx, c) {
			continue
		}
		cur, err := p.m.Channel(c.ID)
		if err != nil || cur.State != StateOpen && cur.State != StatePending {
			continue
		}
		// Another contract may have reserved on it since pick: reserve
		// checks the room again, atomically.
		if p.book.reserve(cur, contractID, amount) == nil {
			return cur, nil
		}
	}
}

// openFor funds a channel for contractID and reserves amount on it, unless
// a channel with room appeared while it waited for its turn.
func (p *Payer) openFor(ctx context.Context, peer string, t SellerTerms, contractID string, amount int64) (*Channel, error) {
	p.opening.Lock()
	defer p.opening.Unlock()
	var err error
	for range 3 {
		var c *Channel
		if c, err = p.claim(ctx, peer, contractID, amount); c != nil || err != nil {
			return c, err
		}
		size := p.cfg.Size(amount, p.vol.recent(peer, p.m.now()))
		if c, _, err = p.openChannel(ctx, peer, t, size); err != nil {
			return nil, err
		}
		if err = p.book.reserve(c, contractID, amount); err == nil {
			return c, nil
		}
		// Another contract's claim saw the new channel as soon as it was
		// recorded and took its room first: it has a channel, this one
		// looks again.
		err = fmt.Errorf("new channel %s of %d sat: %w", c.ID, size, err)
	}
	return nil, err
}

// needsRefill reports whether every channel to peer with room for another
// contract of amount is committed past RefillAt (or there is none).
func (p *Payer) needsRefill(peer string, amount int64) bool {
	res := p.book.snapshot()
	for _, c := range p.m.Channels() {
		if c.Role != RoleBuyer || c.Peer != peer || c.State != StateOpen && c.State != StatePending {
			continue
		}
		if Free(c, res) >= amount && Committed(c, res) < p.cfg.RefillAt {
			return false
		}
	}
	return true
}

// maybeRefill opens the next channel to peer in the background when the
// ones there are committed past RefillAt, so that a later contract finds
// room (one open per seller at a time).
func (p *Payer) maybeRefill(peer string, terms []byte, amount int64) {
	if p.cfg.RefillAt >= 1 || !p.needsRefill(peer, amount) {
		return
	}
	t, err := DecodeSellerTerms(terms)
	if err != nil {
		return
	}
	p.vol.mu.Lock()
	if p.vol.refilling[peer] {
		p.vol.mu.Unlock()
		return
	}
	if p.vol.refilling == nil {
		p.vol.refilling = map[string]bool{}
	}
	p.vol.refilling[peer] = true
	p.vol.mu.Unlock()
	go func() {
		defer func() {
			p.vol.mu.Lock()
			delete(p.vol.refilling, peer)
			p.vol.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), refillTimeout)
		defer cancel()
		p.opening.Lock()
		defer p.opening.Unlock()
		if !p.needsRefill(peer, amount) {
			return
		}
		size := p.cfg.Size(amount, p.vol.recent(peer, p.m.now()))
		c, _, err := p.openChannel(ctx, peer, t, size)
		if err != nil {
			p.m.log.Warn("background channel open failed", "peer", peer, "capacity", size, "err", err)
			return
		}
		p.m.log.Info("channel opened in the background: the channels to the seller are mostly committed",
			"channel", c.ID, "peer", peer, "capacity", size, "refill_at", p.cfg.RefillAt)
	}()
}
