package payment

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// PayerConfig is the buyer's channel policy. Zero fields take the
// defaults documented on each.
type PayerConfig struct {
	// MinCapacity is the smallest channel opened, in satoshis (default
	// 100,000). A channel is also at least twice the contract that opens
	// it.
	MinCapacity int64
	// MaxCapacity bounds, in satoshis, how large the buyer's recent
	// volume makes a channel (default 10,000,000); it never makes one too
	// small for the contract that opens it (see Size).
	MaxCapacity int64
	// VolumeHours sizes a new channel for this many hours of the buyer's
	// spend to its seller at the pace of the last hour (default 24).
	VolumeHours int64
	// RefillAt is the share of a channel's capacity, paid or reserved by
	// its contracts, past which the next channel to its seller is opened
	// in the background, before a contract finds no room (default 0.8;
	// 1: only when a contract does not fit).
	RefillAt float64
	// OpenWait bounds how long WaitOpen callers wait for a new channel to
	// confirm (default 5m); EnsureChannel no longer waits (the seller
	// decides whether it works on an unconfirmed funding, zeroconf.go).
	OpenWait time.Duration
	// Poll is how often a waiting open re-checks the chain (default 500ms).
	Poll time.Duration
	// FundRetries is how many times an open is retried, a second apart,
	// when the wallet reports insufficient funds: a wallet that has just
	// seen new blocks may still be catching up on which coins are mature
	// (default 4).
	FundRetries int
}

func (c *PayerConfig) defaults() {
	if c.MinCapacity <= 0 {
		c.MinCapacity = 100_000
	}
	if c.MaxCapacity <= 0 {
		c.MaxCapacity = 10_000_000
	}
	if c.VolumeHours <= 0 {
		c.VolumeHours = 24
	}
	if c.RefillAt <= 0 || c.RefillAt > 1 {
		c.RefillAt = 0.8
	}
	if c.OpenWait <= 0 {
		c.OpenWait = 5 * time.Minute
	}
	if c.Poll <= 0 {
		c.Poll = 500 * time.Millisecond
	}
	if c.FundRetries <= 0 {
		c.FundRetries = 4
	}
}

// Capacity is the size of the channel a Payer opens for a contract of
// amount sats with no recent spend to its seller: Size(amount, 0).
func (c PayerConfig) Capacity(amount int64) int64 { return c.Size(amount, 0) }

// Size is the capacity of a new channel for a contract of amount sats when
// the buyer's contracts to the same seller came to recent sats in the last
// hour: VolumeHours of that pace, within MaxCapacity, and at least
// MinCapacity and twice the contract.
func (c PayerConfig) Size(amount, recent int64) int64 {
	c.defaults()
	floor := max(c.MinCapacity, 2*amount)
	volume := recent
	if recent > 0 && c.VolumeHours > c.MaxCapacity/recent {
		volume = c.MaxCapacity // the product would overflow
	} else {
		volume = recent * c.VolumeHours
	}
	return max(floor, min(c.MaxCapacity, volume))
}

// Payer is the buyer's side of the channels to its sellers: it reuses an
// open channel to a seller with room for a contract or funds a new one
// (EnsureChannel), and signs each contract's cumulative payments on the
// channel it started on (Pay).
type Payer struct {
	m   *Manager
	cfg PayerConfig
	// opening serializes channel opens: the wallet picks coins when it
	// builds a funding transaction and knows them spent only once it is
	// published, so two opens at once may spend the same coin (and two
	// contracts to one seller would open two channels).
	opening sync.Mutex
	// book holds each running contract's reservation on its channel
	// (reserve.go); vol the recent spend per seller and the background
	// opens under way (payerbook.go).
	book book
	vol  volume
}

// NewPayer returns a Payer over m's channels.
func NewPayer(m *Manager, cfg PayerConfig) *Payer {
	cfg.defaults()
	return &Payer{m: m, cfg: cfg}
}

// Room is what a channel can still pay.
func (c *Channel) Room() int64 { return c.Capacity - c.CloseFee - c.Paid }

// find is FindRoom over the manager's channels.
func (p *Payer) find(peer string, need int64, contractID string) *Channel {
	return FindRoom(p.m.Channels(), peer, need, contractID)
}

// FindRoom returns, of chans, the buyer's channel to peer that carries
// contractID (when given and it has one), else the pending or open one
// with the most room of at least need; nil when there is none. The Payer
// pays a contract to peer on that channel, so a channel is funded only
// when FindRoom finds none.
func FindRoom(chans []*Channel, peer string, need int64, contractID string) *Channel {
	var best *Channel
	for _, c := range chans {
		if c.Role != RoleBuyer || c.Peer != peer {
			continue
		}
		if c.State != StateOpen && c.State != StatePending {
			continue
		}
		if contractID != "" && c.Contracts[contractID] > 0 {
			return c // a contract stays on the channel it started on
		}
		if c.Room() >= need && (best == nil || c.Room() > best.Room()) {
			best = c
		}
	}
	return best
}

// EnsureChannel makes sure a channel to peer can pay amount more satoshis:
// it reuses a pending or open one with room, or funds a new one under
// terms (the seller's, as encoded by SellerTerms.Encode) sized
// Capacity(amount). It reserves nothing: concurrent contracts use
// EnsureContract. It returns the open request to
// hand the seller: the new channel's, or a reused channel's while its
// funding is unconfirmed (the seller checks it again); nil for a reused
// open channel. It does not wait for the funding's confirmations: the
// seller decides whether it works on it unconfirmed (zeroconf.go) or
// waits for them.
func (p *Payer) EnsureChannel(ctx context.Context, peer string, terms []byte, amount int64) (*OpenRequest, error) {
	if c := p.find(peer, amount, ""); c != nil && p.m.usable(ctx, c) {
		return p.reuse(c.ID)
	}
	t, err := DecodeSellerTerms(terms)
	if err != nil {
		return nil, err
	}
	c, req, err := p.open(ctx, peer, t, amount)
	if err != nil || c == nil {
		return nil, err
	}
	if req == nil { // opened by another contract meanwhile
		return p.reuse(c.ID)
	}
	return req, nil
}

// reuse is EnsureChannel's answer for an existing channel id.
func (p *Payer) reuse(id string) (*OpenRequest, error) {
	c, err := p.m.Channel(id)
	if err != nil {
		return nil, err
	}
	switch c.State {
	case StateOpen:
		return nil, nil
	case StatePending:
		return c.ReopenRequest(), nil
	}
	return nil, fmt.Errorf("channel %s is %s: %w %s", id, c.State, ErrNotOpen, c.FailReason)
}

// open funds a channel to peer unless one with room appeared while it
// waited for its turn (then req is nil).
func (p *Payer) open(ctx context.Context, peer string, t SellerTerms, amount int64) (*Channel, *OpenRequest, error) {
	p.opening.Lock()
	defer p.opening.Unlock()
	if c := p.find(peer, amount, ""); c != nil {
		return c, nil, nil
	}
	return p.openChannel(ctx, peer, t, p.cfg.Capacity(amount))
}

// openChannel funds a channel of capacity to peer, retrying while the
// wallet reports insufficient funds (p.opening held).
func (p *Payer) openChannel(ctx context.Context, peer string, t SellerTerms, capacity int64) (*Channel, *OpenRequest, error) {
	for try := 0; ; try++ {
		c, req, err := p.m.OpenChannel(ctx, OpenParams{Peer: peer, Seller: t, Capacity: capacity})
		if err == nil {
			return c, req, nil
		}
		if !errors.Is(err, ErrInsufficientFunds) || try >= p.cfg.FundRetries {
			// err says "open channel: …" already.
			return nil, nil, fmt.Errorf("%w (channel to %s)", err, peer)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("open channel to %s: %w", peer, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// Pay brings contractID's cumulative total on its channel to peer up to
// total and returns the update to send. It is idempotent: a total already
// paid returns the latest update again.
func (p *Payer) Pay(ctx context.Context, peer, contractID string, total int64) (*Update, error) {
	u, durable, err := p.pay(ctx, peer, contractID, total, false)
	if err != nil {
		return nil, err
	}
	if err := durable(); err != nil {
		return nil, err
	}
	return u, nil
}

// PayAsync is Pay returning the update while it is still being persisted
// (Manager.PayAsync): send it at once, and count it paid only once durable
// returned nil. The caller pays a contract one update at a time (durable
// returned before its next PayAsync of the same contract).
func (p *Payer) PayAsync(ctx context.Context, peer, contractID string, total int64) (u *Update, durable func() error, err error) {
	return p.pay(ctx, peer, contractID, total, true)
}

// durableNow is the durable of an update persisted before it was returned.
func durableNow() error { return nil }

func (p *Payer) pay(ctx context.Context, peer, contractID string, total int64, async bool) (*Update, func() error, error) {
	c := p.channelOf(peer, contractID)
	if c == nil {
		return nil, nil, fmt.Errorf("pay %s for %s: %w: no open channel%s", peer, contractID, ErrUnknownChannel, p.failedWith(peer, contractID))
	}
	delta := total - c.Contracts[contractID]
	if delta > 0 {
		if async {
			return p.m.PayAsync(ctx, c.ID, contractID, delta)
		}
		u, err := p.m.Pay(ctx, c.ID, contractID, delta)
		return u, durableNow, err
	}
	u, err := p.m.LatestUpdate(c.ID, contractID)
	if err != nil {
		return nil, nil, err
	}
	if u == nil {
		return nil, nil, fmt.Errorf("pay %s for %s: %w: nothing paid yet", peer, contractID, ErrLowerAmount)
	}
	return u, durableNow, nil
}

// FundingVSize is the virtual size of a typical channel funding
// transaction: one P2WPKH input, the P2WSH channel output and a P2WPKH
// change output. A wallet that needs more inputs pays a little more.
const FundingVSize = 154

// FundingFee is about what funding a channel costs in fees now: the fee
// rate OpenChannel would pay times FundingVSize.
func (m *Manager) FundingFee(ctx context.Context) int64 {
	return m.cfg.FeeRate(ctx, m.chain, 6) * FundingVSize
}

// WaitOpen ticks the manager every poll until channel id is open, for at
// most wait; a channel that closed or failed meanwhile is an error.
func (m *Manager) WaitOpen(ctx context.Context, id string, wait, poll time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	// opened says whether the channel is open (nil), not yet (errPending)
	// or never will be.
	opened := func() error {
		c, err := m.Channel(id)
		if err != nil {
			return err
		}
		switch c.State {
		case StateOpen:
			return nil
		case StateClosed, StateFailed, StateClosing:
			return fmt.Errorf("channel %s is %s: %w %s", id, c.State, ErrNotOpen, c.FailReason)
		}
		return errPending
	}
	for {
		if err := opened(); err != errPending {
			return err
		}
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("channel %s: %w", id, err)
		}
		// The tick may have seen the confirmation: no poll's wait then.
		if err := opened(); err != errPending {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("channel %s not confirmed in %s: %w", id, wait, ctx.Err())
		case <-time.After(poll):
		}
	}
}

var errPending = errors.New("channel not open yet")

// TurnWait bounds how long AcceptUpdateInOrder holds an update back.
const TurnWait = 10 * time.Second

// AcceptUpdateInOrder is AcceptUpdate for a seller whose buyer runs several
// contracts on one channel: their updates travel on their own streams, so
// update n+1 may arrive before update n, or before the stream that opens
// the channel has been accepted. Checked at once it would be refused
// (unknown channel, or contract amounts that do not add up). It first
// checks that msg is for contractID, then holds the update back until the
// channel is open and holds update Seq-1 (or later), or is gone, or
// TurnWait has passed; AcceptUpdate then decides.
func (m *Manager) AcceptUpdateInOrder(ctx context.Context, peer, contractID string, msg []byte) (*Update, error) {
	u, err := DecodeUpdate(msg)
	if err != nil {
		return nil, err
	}
	if u.ContractID != contractID {
		return nil, fmt.Errorf("payment update for contract %q sent for %q: %w", u.ContractID, contractID, ErrMalformed)
	}
	// Past TurnWait, the updates in between are taken as lost: what they
	// paid is kept, for no contract (acceptUpdate's gap).
	return m.acceptUpdate(ctx, peer, msg, !m.waitTurn(ctx, u))
}

// waitTurn returns when update u can be checked in order (see
// AcceptUpdateInOrder), false when it gave up waiting (TurnWait or ctx).
// It wakes on every persisted channel change.
func (m *Manager) waitTurn(ctx context.Context, u *Update) bool {
	ctx, cancel := context.WithTimeout(ctx, TurnWait)
	defer cancel()
	id := u.ChannelID.String()
	for {
		changed := m.changes()
		c := m.chans.get(id)
		switch {
		case c != nil && usable(c) && c.Seq+1 >= u.Seq:
			return true
		case c != nil && c.State != StateOpen && c.State != StatePending:
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// changes returns a channel closed at the next persisted channel change.
func (m *Manager) changes() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.changed
}

// notify wakes everything waiting on changes.
func (m *Manager) notify() {
	m.mu.Lock()
	if m.changed != nil {
		close(m.changed)
		m.changed = nil
	}
	m.mu.Unlock()
}
