package payment

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReservationsRestoredAfterRestart: a contract running on a channel
// when both nodes restart (new Managers and Payer over the same stores)
// holds its worst case again once restored: the buyer's next contract,
// which fits the channel's room but not beside it, goes to a new channel,
// and the seller refuses it on the old one. Without the restore both take
// it. A buyer that names no channel (from before reservations) is refused
// at once when no open channel of its can carry the contract; its first
// payment moves a guessed reservation to the channel it names, or is
// refused there when that channel cannot carry it.
func TestReservationsRestoredAfterRestart(t *testing.T) {
	bst, sst := NewMemStore(), NewMemStore()
	p, enc := minedPair(t, bst, sst)
	ctx := context.Background()
	const peer, amount = "s2", 30_000
	cfg := PayerConfig{MinCapacity: 10_000, RefillAt: 1}
	payer := NewPayer(p.buyer, cfg)
	r, err := payer.EnsureContract(ctx, peer, "c1", enc, amount)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptOpen(ctx, peer, r.Encode()); err != nil {
		t.Fatal(err)
	}
	ch1, _ := r.ChannelID()
	if err := p.seller.ReserveCapacity(ch1, "c1", amount); err != nil {
		t.Fatal(err)
	}
	if err := p.buyer.WaitOpen(ctx, ch1, 10*time.Second, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	u, err := payer.Pay(ctx, peer, "c1", 2_000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AcceptUpdateInOrder(ctx, peer, "c1", u.Encode()); err != nil {
		t.Fatal(err)
	}

	// The restart: the reservations are gone with the processes.
	restart := func() (*Manager, *Manager, *Payer) {
		b := newManager(t, p.buyer.cfg, p.chain, bst, seed(1), p.buyer.fund)
		s := newManager(t, p.seller.cfg, p.chain, sst, seed(2), nil)
		return b, s, NewPayer(b, cfg)
	}
	buyer, seller, payer := restart()
	// Without the restore, the room counts only what c1 paid.
	if err := seller.ReserveCapacity(ch1, "probe", amount); err != nil {
		t.Fatalf("before the restore the seller refused a contract that fits the room: %v", err)
	}
	seller.ReleaseCapacity("probe")

	buyer, seller, payer = restart()
	if got := payer.Restore(peer, "c1", amount); got != ch1 {
		t.Fatalf("buyer restored c1 on %q, want %s", got, ch1)
	}
	if got := seller.RestoreCapacity(peer, "c1", amount); got != ch1 {
		t.Fatalf("seller restored c1 on %q, want %s", got, ch1)
	}
	if got := seller.RestoreCapacity(peer, "unknown", amount); got != "" {
		t.Fatalf("a contract no channel carries was restored on %q", got)
	}
	if err := seller.ReserveCapacity(ch1, "c2", amount); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("seller: c2 beside the resumed c1: %v, want ErrChannelFull", err)
	}
	r2, err := payer.EnsureContract(ctx, peer, "c2", enc, amount)
	if err != nil {
		t.Fatal(err)
	}
	ch2, _ := r2.ChannelID()
	if ch2 == ch1 {
		t.Fatalf("c2 reserved on c1's channel %s after the restore", ch1)
	}
	if _, err := seller.AcceptOpen(ctx, peer, r2.Encode()); err != nil {
		t.Fatal(err)
	}
	if err := seller.ReserveCapacity(ch2, "c2", amount); err != nil {
		t.Fatal(err)
	}
	if err := buyer.WaitOpen(ctx, ch2, 10*time.Second, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if v := seller.Reservations(); len(v) != 2 {
		t.Fatalf("seller reservations %+v, want c1 and c2", v)
	}
	for _, v := range payer.Reservations() {
		if v.Contract == "c1" && (v.Channel != ch1 || v.Outstanding != amount-2_000) {
			t.Fatalf("buyer's view of c1: %+v", v)
		}
	}

	// A buyer naming no channel: c3 fits neither channel beside c1, c2.
	if _, err := seller.ReserveUnnamed(peer, "c3", amount); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("unnamed c3: %v, want ErrChannelFull", err)
	}
	// c4 is guessed on the channel with the most room (ch2: nothing
	// paid), and follows its first payment to ch1.
	if got, err := seller.ReserveUnnamed(peer, "c4", 1_000); err != nil || got != ch2 {
		t.Fatalf("unnamed c4 reserved on %q (%v), want %s", got, err, ch2)
	}
	if err := seller.FollowPayment("c4", ch1); err != nil {
		t.Fatalf("c4's payment on %s: %v", ch1, err)
	}
	if r, _ := seller.capacity.get("c4"); r.Channel != ch1 {
		t.Fatalf("c4's reservation is on %s after its payment on %s", r.Channel, ch1)
	}
	// c5 fits ch2 only: a payment on ch1 is refused, and it stays.
	c, _ := seller.Channel(ch2)
	big := Free(c, seller.capacity.snapshot())
	if got, err := seller.ReserveUnnamed(peer, "c5", big); err != nil || got != ch2 {
		t.Fatalf("unnamed c5 of %d reserved on %q (%v), want %s", big, got, err, ch2)
	}
	if err := seller.FollowPayment("c5", ch1); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("c5's payment on the full %s: %v, want ErrChannelFull", ch1, err)
	}
	if r, _ := seller.capacity.get("c5"); r.Channel != ch2 {
		t.Fatalf("c5's reservation moved to %s on a refused payment", r.Channel)
	}
	// c1 ends: what it did not pay is free again on both sides.
	payer.Release("c1")
	seller.ReleaseCapacity("c1")
	if err := seller.ReserveCapacity(ch1, "c6", amount-2_000-1_000-c.CloseFee-1); err != nil {
		t.Fatalf("after c1's release: %v", err)
	}
}
