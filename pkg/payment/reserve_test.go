package payment

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReservationArithmetic: Free is the room less what each contract
// reserved on the channel may still pay (its amount less what it paid,
// never below zero); other channels' reservations do not count; a
// reservation that does not fit is refused with the numbers and changes
// nothing; asking again for a reserved contract succeeds.
func TestReservationArithmetic(t *testing.T) {
	c := &Channel{ID: "ch", Capacity: 10_000, CloseFee: 1_000, Paid: 3_000, Contracts: map[string]int64{"a": 2_000, "b": 1_000}}
	res := map[string]Reservation{
		"a": {Channel: "ch", Amount: 5_000}, // 3,000 still to pay
		"b": {Channel: "ch", Amount: 500},   // overpaid: nothing outstanding
		"x": {Channel: "other", Amount: 9_000},
	}
	if r := c.Room(); r != 6_000 {
		t.Fatalf("room %d, want 6000", r)
	}
	if got := Reserved(c, res); got != 3_000 {
		t.Fatalf("reserved %d, want 3000", got)
	}
	if got := Free(c, res); got != 3_000 {
		t.Fatalf("free %d, want 3000", got)
	}
	if got := Committed(c, res); got < 0.666 || got > 0.667 {
		t.Fatalf("committed %.3f, want 6000/9000", got)
	}

	var b book
	b.res = res
	if err := b.reserve(c, "c", 3_001); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("3001 sat on 3000 free: %v, want ErrChannelFull", err)
	}
	if _, ok := b.get("c"); ok {
		t.Fatal("a refused reservation was kept")
	}
	if err := b.reserve(c, "c", 3_000); err != nil {
		t.Fatalf("3000 sat on 3000 free: %v", err)
	}
	if err := b.reserve(c, "c", 3_000); err != nil {
		t.Fatalf("the same contract again: %v", err)
	}
	if err := b.reserve(c, "d", 1); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("a full channel took another contract: %v", err)
	}
	// A contract that ends frees what it did not pay.
	b.release("a")
	if got := Free(c, b.snapshot()); got != 3_000 {
		t.Fatalf("free after a's release %d, want 3000", got)
	}
}

// TestSize: a new channel is at least MinCapacity and twice its contract;
// recent spend makes it VolumeHours of that pace, at most MaxCapacity
// (which never makes it smaller than the contract needs).
func TestSize(t *testing.T) {
	c := PayerConfig{MinCapacity: 100_000, MaxCapacity: 1_000_000, VolumeHours: 24}
	for _, tc := range []struct{ amount, recent, want int64 }{
		{1_000, 0, 100_000},           // first contract: the minimum
		{80_000, 0, 160_000},          // twice the contract
		{1_000, 10_000, 240_000},      // a day at 10,000 sat an hour
		{1_000, 100_000, 1_000_000},   // capped
		{900_000, 100_000, 1_800_000}, // the cap never starves a contract
		{1_000, 1 << 62, 1_000_000},   // no overflow
	} {
		if got := c.Size(tc.amount, tc.recent); got != tc.want {
			t.Errorf("Size(%d, %d) = %d, want %d", tc.amount, tc.recent, got, tc.want)
		}
	}
}

// TestPayerReservesContracts: two contracts that each fit the channel's
// room but not together go to two channels (the second opens one), each
// pays on the channel it reserved, the seller refuses a third contract
// on a channel it cannot carry, a released contract frees what it did not
// pay, and a channel committed past RefillAt opens the next in the
// background.
func TestPayerReservesContracts(t *testing.T) {
	p, enc := minedPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	const peer, amount = "s2", 30_000
	payer := NewPayer(p.buyer, PayerConfig{MinCapacity: 10_000, RefillAt: 1})
	open := func(contract string) string {
		t.Helper()
		r, err := payer.EnsureContract(ctx, peer, contract, enc, amount)
		if err != nil || r == nil {
			t.Fatalf("contract %s: request %v, %v", contract, r != nil, err)
		}
		if _, err := p.seller.AcceptOpen(ctx, peer, r.Encode()); err != nil {
			t.Fatal(err)
		}
		id, _ := r.ChannelID()
		return id
	}
	// The first channel is twice the contract: room for one more than
	// the close fee leaves, not two.
	ch1, ch2 := open("c1"), open("c2")
	if ch1 == ch2 {
		t.Fatalf("both contracts reserved on channel %s", ch1)
	}
	if again := open("c1"); again != ch1 {
		t.Fatalf("c1 asked again names %s, reserved on %s", again, ch1)
	}
	// The seller's own check: a third contract of the same size does not
	// fit c1's channel beside c1.
	c, _ := p.seller.Channel(ch1)
	if err := p.seller.ReserveCapacity(ch1, "c1", amount); err != nil {
		t.Fatalf("seller: c1 on its channel: %v", err)
	}
	if err := p.seller.ReserveCapacity(ch1, "c3", amount); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("seller: c3 beside c1 on %d sat: %v, want ErrChannelFull", c.Capacity, err)
	}
	for _, id := range []string{ch1, ch2} {
		if err := p.buyer.WaitOpen(ctx, id, 10*time.Second, 5*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.seller.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"c1", "c2"} {
		total := []int64{amount, 1_000}[i]
		u, err := payer.Pay(ctx, peer, id, total)
		if err != nil {
			t.Fatalf("pay %s: %v", id, err)
		}
		if want := []string{ch1, ch2}[i]; u.ChannelID.String() != want {
			t.Fatalf("%s paid on %s, reserved on %s", id, u.ChannelID, want)
		}
		if _, err := p.seller.AcceptUpdateInOrder(ctx, peer, id, u.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	// c1 ends having paid it all: what it paid stays taken.
	p.seller.ReleaseCapacity("c1")
	if err := p.seller.ReserveCapacity(ch1, "c3", amount); !errors.Is(err, ErrChannelFull) {
		t.Fatalf("seller: c3 after c1 paid %d: %v, want ErrChannelFull", amount, err)
	}
	// c2 ends having paid 1,000 of 30,000: the rest is free again.
	payer.Release("c2")
	if got := open("c4"); got != ch2 {
		t.Fatalf("c4 opened %s; c2's channel %s has room again", got, ch2)
	}

	// RefillAt: a contract committing most of a channel opens the next in
	// the background.
	refill := NewPayer(p.buyer, PayerConfig{MinCapacity: 100_000, RefillAt: 0.5})
	before := len(p.buyer.Channels())
	if _, err := refill.EnsureContract(ctx, "s3", "r1", enc, 60_000); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return len(p.buyer.Channels()) == before+2 })
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
