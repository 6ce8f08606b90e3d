package payment

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// payTo brings the channel's total to total (the buyer pays, the seller
// accepts).
func (p *memPair) payTo(t *testing.T, total int64) {
	t.Helper()
	ctx := context.Background()
	c, _ := p.buyer.Channel(p.id)
	u, err := p.buyer.Pay(ctx, p.id, "c", total-c.Paid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
}

// clock is a settable clock for the seller.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func policyPair(t *testing.T, closeAt int64, idle time.Duration) (*memPair, *clock) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	clk := &clock{now: time.Now()}
	p.seller.now = clk.Now
	p.seller.cfg.CloseAt, p.seller.cfg.CloseIdle = closeAt, idle
	return p, clk
}

func (p *memPair) state(t *testing.T) *Channel {
	t.Helper()
	c, err := p.seller.Channel(p.id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClosePolicyWeighsFee: a channel is closed by the policy only when
// the close pays the seller above dust and at least its fee; below that,
// neither close_at nor close_idle closes it.
func TestClosePolicyWeighsFee(t *testing.T) {
	ctx := context.Background()
	p, clk := policyPair(t, 1, time.Hour) // close_at: every sat; idle: 1 h
	fee := p.state(t).CloseFee            // 2 sat/vB × 171 vB
	if fee != 342 {
		t.Fatalf("close fee %d, want 342 (171 vB at 2 sat/vB)", fee)
	}
	for _, tc := range []struct {
		total int64
		want  bool
	}{
		{fee + DustP2WPKH - 1, false}, // dust
		{2*fee - 1, false},            // above dust, but less than its fee
		{2 * fee, true},               // pays exactly its fee
	} {
		p.payTo(t, tc.total)
		clk.add(2 * time.Hour)
		if err := p.seller.ClosePolicy(ctx, nil); err != nil {
			t.Fatal(err)
		}
		c := p.state(t)
		if got := c.State == StateClosing; got != tc.want {
			t.Fatalf("paid %d, fee %d: closing %v, want %v (%s)", tc.total, fee, got, tc.want,
				p.seller.CloseDue(c, 100, clk.Now(), false).Reason)
		}
	}
	// What the close pays the seller is what Payout said.
	c := p.state(t)
	tx, err := c.CloseTx(c.Paid)
	if err != nil {
		t.Fatal(err)
	}
	if tx.TxOut[0].Value != 2*fee-fee || !bytes.Equal(tx.TxOut[0].PkScript, c.SellerScript) {
		t.Fatalf("close pays %d, want %d", tx.TxOut[0].Value, fee)
	}
}

// TestClosePolicyCloseAt: a balance at close_at closes the channel once no
// contract of its buyer runs; below it nothing happens.
func TestClosePolicyCloseAt(t *testing.T) {
	ctx := context.Background()
	p, _ := policyPair(t, 5000, 0)
	p.payTo(t, 4999)
	if err := p.seller.ClosePolicy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if c := p.state(t); c.State != StateOpen {
		t.Fatalf("below close_at: %s", c.State)
	}
	p.payTo(t, 5000)
	busy := true
	isBusy := func(c *Channel) bool { return busy }
	if err := p.seller.ClosePolicy(ctx, isBusy); err != nil {
		t.Fatal(err)
	}
	if c := p.state(t); c.State != StateOpen {
		t.Fatalf("closed while a contract of its buyer runs: %s", c.State)
	}
	h := Hold(p.seller.Channels())
	if h.InChannels != 5000 || h.CloseFee != 342 || h.AfterClose != 5000-342 || h.Closing != 0 {
		t.Fatalf("holdings before the close: %+v", h)
	}
	busy = false
	if err := p.seller.ClosePolicy(ctx, isBusy); err != nil {
		t.Fatal(err)
	}
	if c := p.state(t); c.State != StateClosing {
		t.Fatalf("at close_at: %s", c.State)
	}
	if h := Hold(p.seller.Channels()); h.InChannels != 0 || h.Closing != 5000-342 {
		t.Fatalf("holdings while closing: %+v", h)
	}
	p.chain.Mine(1)
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if h := Hold(p.seller.Channels()); h.Settled != 5000-342 || h.SettledFees != 342 || h.Closing != 0 {
		t.Fatalf("holdings after the close confirmed: %+v", h)
	}
	if err := p.buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if h := Hold(p.buyer.Channels()); h.BuyerLocked != 0 {
		t.Fatalf("buyer: %+v", h)
	}
}

// TestClosePolicyIdle: close_idle closes a channel no payment moved for
// that long, and not before.
func TestClosePolicyIdle(t *testing.T) {
	ctx := context.Background()
	p, clk := policyPair(t, 0, 3*time.Hour)
	p.payTo(t, 2000)
	clk.add(3*time.Hour - time.Minute)
	if err := p.seller.ClosePolicy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if c := p.state(t); c.State != StateOpen {
		t.Fatalf("before close_idle: %s", c.State)
	}
	clk.add(time.Minute)
	if err := p.seller.ClosePolicy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if c := p.state(t); c.State != StateClosing {
		t.Fatalf("after close_idle: %s", c.State)
	}
}

// TestClosePolicyExpiry: near expiry a close worth less than its fee is
// made anyway (Tick), and one that would pay dust cannot be: it is counted
// unclaimable, and the policy warns.
func TestClosePolicyExpiry(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		total int64
		close bool
	}{{342 + 300, true}, {342 + 100, false}} {
		p, _ := policyPair(t, 0, 0)
		var logged strings.Builder
		p.seller.log = slog.New(slog.NewTextHandler(&logged, nil))
		p.payTo(t, tc.total)
		c := p.state(t)
		tip, _ := p.chain.Tip(ctx)
		p.chain.Mine(int32(c.Expiry) - int32(p.seller.cfg.SafetyMargin) - tip)
		if err := p.seller.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.seller.ClosePolicy(ctx, nil); err != nil {
			t.Fatal(err)
		}
		c = p.state(t)
		if (c.State == StateClosing) != tc.close {
			t.Fatalf("paid %d at the expiry margin: %s", tc.total, c.State)
		}
		h := Hold(p.seller.Channels())
		if !tc.close && (h.Unclaimable != tc.total || h.AfterClose != 0 || !strings.Contains(logged.String(), "buyer refunds them")) {
			t.Fatalf("dust at expiry: %+v, log %q", h, logged.String())
		}
	}
}

// TestPayerSkipsClosedChannel: a channel its seller closed (the close in
// the mempool, no block yet) carries no new contract: the buyer opens
// another.
func TestPayerSkipsClosedChannel(t *testing.T) {
	p, _ := policyPair(t, 1000, 0)
	ctx := context.Background()
	p.payTo(t, 2000)
	if err := p.seller.ClosePolicy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if c := p.state(t); c.State != StateClosing {
		t.Fatalf("seller's channel %s", c.State)
	}
	if c, _ := p.buyer.Channel(p.id); c.State != StateOpen {
		t.Fatalf("the buyer already knows: %s", c.State)
	}
	terms, err := p.seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	miner(t, p)
	payer := NewPayer(p.buyer, PayerConfig{OpenWait: 10 * time.Second, Poll: 5 * time.Millisecond})
	req, err := payer.EnsureChannel(ctx, "s", terms.Encode(), 1000)
	if err != nil || req == nil {
		t.Fatalf("a contract after the seller's close: request %v, %v", req != nil, err)
	}
	if c, _ := p.buyer.Channel(p.id); c.State == StateOpen {
		t.Fatalf("the closed channel is still open for the buyer")
	}
}
