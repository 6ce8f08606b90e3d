package contract

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// What the external tests (package contract_test, which may import the
// node's bbolt store) use of the package's insides.

// TestClock is a Clock the test moves by hand.
type TestClock struct{ manualClock }

// NewTestClock returns a TestClock at t.
func NewTestClock(t time.Time) *TestClock { return &TestClock{manualClock{t: t}} }

// After implements Clock.
func (c *TestClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// StartTestBuyer is a started buyer on h and s that finds no offers.
func StartTestBuyer(t testing.TB, h host.Host, s Store, clock Clock) *Buyer {
	t.Helper()
	b, err := NewBuyer(BuyerConfig{Host: h, Key: h.Peerstore().PrivKey(h.ID()), Store: s, Payer: &fakePay{},
		PaymentKey: bytes.Repeat([]byte{2}, 33), ResultDir: t.TempDir(), Clock: clock,
		Find: func(context.Context, offer.Filter) ([]*offer.Offer, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// MarkUnreachable is markUnreachable.
func (b *Buyer) MarkUnreachable(p peer.ID) { b.markUnreachable(p) }

// RankReachableFirst is behindUnreachable.
func (b *Buyer) RankReachableFirst(cands []Candidate) []Candidate {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.behindUnreachable(cands)
}
