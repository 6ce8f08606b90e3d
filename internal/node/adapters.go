package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/sandbox"
	"github.com/libp2p/go-libp2p/core/peer"
)

// This file adapts the concrete subsystems to the small interfaces the
// contract engines consume.

var (
	_ contract.Runner          = sandboxRunner{}
	_ contract.PaymentReceiver = (*channelReceiver)(nil)
	_ contract.Payer           = (*channelPayer)(nil)
)

// sandboxRunner runs contracted jobs in the sandbox, each under the
// runtime its contract agreed, or defaultRuntime (one the node offers)
// when the contract names none.
type sandboxRunner struct {
	sb             *sandbox.Sandbox
	defaultRuntime string
}

func (r sandboxRunner) ImportImage(ctx context.Context, rd io.Reader, digest string) (string, error) {
	img, err := r.sb.ImportImage(ctx, rd, digest)
	return img.Name, err
}

func (r sandboxRunner) Pull(ctx context.Context, ref string) (string, error) {
	img, err := r.sb.Pull(ctx, ref)
	return img.Name, err
}

func (r sandboxRunner) Run(ctx context.Context, spec contract.RunSpec) (*contract.RunResult, error) {
	rt := spec.Runtime
	if rt == "" {
		rt = r.defaultRuntime
	}
	job := sandbox.Job{
		ID:      spec.ContractID,
		Image:   spec.Image,
		Args:    spec.Args,
		Env:     spec.Env,
		Runtime: rt,
		// The seller verified these files against the contract's digests.
		InputDir: spec.InputDir,
		Limits: sandbox.Limits{
			CPUMillis:   int64(spec.Resources.CPUMillis),
			MemoryBytes: int64(spec.Resources.MemoryBytes),
			DiskBytes:   int64(spec.Resources.DiskBytes),
			WallClock:   spec.WallClock,
		},
		Stdout: spec.Stdout,
		Stderr: spec.Stderr,
		Output: spec.Output,
	}
	res, err := r.sb.Run(ctx, job)
	if err != nil {
		return nil, err
	}
	return &contract.RunResult{
		ExitCode: res.ExitCode,
		Reason:   string(res.Reason),
		Error:    res.Error,
		Usage: contract.Usage{
			CPUTime:    res.CPUTime,
			PeakMemory: uint64(max(res.PeakMemory, 0)),
			OOMKills:   uint64(max(res.OOMKills, 0)),
			Wall:       res.Wall,
		},
	}, nil
}

// encodeTerms and decodeTerms carry the seller's payment terms inside a
// contract acceptance: version, key, payout script, each length-prefixed.
func encodeTerms(t payment.SellerTerms) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(len(t.Key)))
	b = append(b, t.Key...)
	b = binary.AppendUvarint(b, uint64(len(t.PayoutScript)))
	return append(b, t.PayoutScript...)
}

func decodeTerms(b []byte) (payment.SellerTerms, error) {
	var t payment.SellerTerms
	if len(b) < 1 || b[0] != 1 || len(b) > 1024 {
		return t, errors.New("seller payment terms: unknown version or too long")
	}
	b = b[1:]
	field := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errors.New("seller payment terms: truncated")
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, nil
	}
	var err error
	if t.Key, err = field(); err != nil {
		return t, err
	}
	if t.PayoutScript, err = field(); err != nil {
		return t, err
	}
	if len(t.Key) != 33 || len(t.PayoutScript) == 0 || len(b) != 0 {
		return t, errors.New("seller payment terms: malformed")
	}
	return t, nil
}

// openWait bounds how long a channel may take to confirm before it is used.
const openWait = 5 * time.Minute

// waitOpen ticks the manager until channel id is open.
func waitOpen(ctx context.Context, m *payment.Manager, id string) error {
	ctx, cancel := context.WithTimeout(ctx, openWait)
	defer cancel()
	for {
		c, err := m.Channel(id)
		if err != nil {
			return err
		}
		switch c.State {
		case payment.StateOpen:
			return nil
		case payment.StateClosed, payment.StateFailed:
			return fmt.Errorf("channel %s is %s: %s", id, c.State, c.FailReason)
		}
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("channel %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("channel %s not confirmed in %s: %w", id, openWait, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// channelReceiver is the seller's side of the payment channels.
type channelReceiver struct{ m *payment.Manager }

func (r *channelReceiver) Terms() ([]byte, error) {
	t, err := r.m.SellerTerms()
	if err != nil {
		return nil, err
	}
	return encodeTerms(t), nil
}

func (r *channelReceiver) AcceptOpen(ctx context.Context, buyer peer.ID, msg []byte) error {
	c, err := r.m.AcceptOpen(ctx, buyer.String(), msg)
	if err != nil {
		return err
	}
	return waitOpen(ctx, r.m, c.ID)
}

func (r *channelReceiver) AcceptUpdate(ctx context.Context, buyer peer.ID, contractID string, msg []byte) (int64, error) {
	u, err := payment.DecodeUpdate(msg)
	if err != nil {
		return 0, err
	}
	if u.ContractID != contractID {
		return 0, fmt.Errorf("payment update for contract %q sent for %q", u.ContractID, contractID)
	}
	r.waitTurn(ctx, u)
	if _, err := r.m.AcceptUpdate(ctx, buyer.String(), msg); err != nil {
		return 0, err
	}
	return u.ContractAmount, nil
}

// turnWait bounds how long an update waits for its turn.
const turnWait = 10 * time.Second

// waitTurn waits until update u can be checked in order: a buyer running
// several contracts on one channel sends their updates on their own
// streams, so update n+1 may arrive before update n, or before the stream
// that opens the channel has been accepted. Checked early, it would be
// refused (unknown channel, or contract amounts that do not add up) and
// its contract would fail. It returns when the channel is open and holds
// update u.Seq-1 (or later), when the channel is gone, or after turnWait;
// AcceptUpdate then decides.
func (r *channelReceiver) waitTurn(ctx context.Context, u *payment.Update) {
	ctx, cancel := context.WithTimeout(ctx, turnWait)
	defer cancel()
	id := u.ChannelID.String()
	for {
		c, err := r.m.Channel(id)
		switch {
		case err == nil && c.State == payment.StateOpen && c.Seq+1 >= u.Seq:
			return
		case err == nil && c.State != payment.StateOpen && c.State != payment.StatePending:
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// channelPayer is the buyer's side: it reuses an open channel to the seller
// with room for the contract, or funds a new one.
type channelPayer struct {
	m *payment.Manager
	// minCapacity is the smallest channel opened; a channel is sized for at
	// least capacityFactor times the first contract so later ones reuse it.
	minCapacity    int64
	capacityFactor int64
	// opening serializes channel opens: the wallet picks coins when it
	// builds a funding transaction and knows them spent only once it is
	// published, so two opens at once may spend the same coin.
	opening sync.Mutex
}

// room is what a channel can still pay.
func room(c *payment.Channel) int64 { return c.Capacity - c.CloseFee - c.Paid }

func (p *channelPayer) find(seller peer.ID, need int64, contractID string) *payment.Channel {
	var best *payment.Channel
	for _, c := range p.m.Channels() {
		if c.Role != payment.RoleBuyer || c.Peer != seller.String() {
			continue
		}
		if c.State != payment.StateOpen && c.State != payment.StatePending {
			continue
		}
		if contractID != "" && c.Contracts[contractID] > 0 {
			return c // a contract stays on the channel it started on
		}
		if room(c) >= need && (best == nil || room(c) > room(best)) {
			best = c
		}
	}
	return best
}

func (p *channelPayer) Prepare(ctx context.Context, seller peer.ID, terms []byte, amount int64) ([]byte, error) {
	if c := p.find(seller, amount, ""); c != nil {
		return nil, waitOpen(ctx, p.m, c.ID)
	}
	t, err := decodeTerms(terms)
	if err != nil {
		return nil, err
	}
	p.opening.Lock()
	if c := p.find(seller, amount, ""); c != nil {
		p.opening.Unlock()
		return nil, waitOpen(ctx, p.m, c.ID) // opened by another contract meanwhile
	}
	capacity := max(p.minCapacity, p.capacityFactor*amount)
	var (
		c   *payment.Channel
		req *payment.OpenRequest
	)
	// A wallet that has just seen new blocks may still be catching up on
	// which coins are mature: give it a few seconds before giving up.
	for try := 0; ; try++ {
		c, req, err = p.m.OpenChannel(ctx, payment.OpenParams{Peer: seller.String(), Seller: t, Capacity: capacity})
		if err == nil || !errors.Is(err, payment.ErrInsufficientFunds) || try == 4 {
			break
		}
		select {
		case <-ctx.Done():
			p.opening.Unlock()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	p.opening.Unlock()
	if err != nil {
		return nil, fmt.Errorf("open channel to %s: %w", seller, err)
	}
	if err := waitOpen(ctx, p.m, c.ID); err != nil {
		return nil, err
	}
	return req.Encode(), nil
}

func (p *channelPayer) Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error) {
	c := p.find(seller, 0, contractID)
	if c == nil {
		return nil, fmt.Errorf("no open channel to %s", seller)
	}
	delta := total - c.Contracts[contractID]
	if delta <= 0 {
		u, err := p.m.LatestUpdate(c.ID, contractID)
		if err != nil {
			return nil, err
		}
		return u.Encode(), nil
	}
	u, err := p.m.Pay(ctx, c.ID, contractID, delta)
	if err != nil {
		return nil, err
	}
	return u.Encode(), nil
}

// toResources converts the meter's capacity to an offer's resources.
func toResources(c meter.Capacity) offer.Resources {
	nonneg := func(v int64) uint64 {
		if v < 0 || v == meter.Unlimited {
			return 0
		}
		return uint64(v)
	}
	return offer.Resources{
		CPUMillis:    nonneg(c.MilliCPU),
		MemoryBytes:  nonneg(c.Memory),
		DiskBytes:    nonneg(c.Disk),
		BandwidthBps: nonneg(c.Bandwidth),
	}
}
