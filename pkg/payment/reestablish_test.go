package payment

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"testing"
	"time"
)

// lostPair is a memPair whose buyer paid contract "a" 10 (seq 1, taken by
// both), then sent "a" lost more (seq 2): the seller took it, the buyer's
// write failed (as a kill before it ends would lose it). It returns the
// lost update.
func lostPair(t testing.TB, lost int64) (*memPair, *Update) {
	t.Helper()
	st := &gatedStore{MemStore: NewMemStore()}
	p := newMemPair(t, st, NewMemStore())
	ctx := context.Background()
	p.pay(t, "a", 10)
	st.arm(errors.New("killed"))
	u, durable, err := p.buyer.PayAsync(ctx, p.id, "a", lost)
	if err != nil {
		t.Fatal(err)
	}
	<-st.started
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	st.release()
	if durable() == nil {
		t.Fatal("the write did not fail")
	}
	return p, u
}

// payRefused pays contract "b" amount on the buyer and hands it to the
// seller, which must refuse it with the update it holds.
func payRefused(t *testing.T, p *memPair, amount int64) []byte {
	t.Helper()
	ctx := context.Background()
	u, err := p.buyer.Pay(ctx, p.id, "b", amount)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.seller.AcceptUpdate(ctx, "b", u.Encode())
	var he *HeldError
	if !errors.As(err, &he) || len(he.HeldUpdate()) == 0 {
		t.Fatalf("seller took another contract's update on the same seq: %v", err)
	}
	return he.HeldUpdate()
}

// TestReestablish: a buyer that lost its latest update pays another
// contract with the same sequence number; the seller refuses it with the
// update it holds; the buyer adopts that and pays again on top of it, and
// both sides agree on every contract's total. With the same amount both
// updates sign the same close (the seller must not take one for the other).
func TestReestablish(t *testing.T) {
	for _, tc := range []struct {
		name       string
		lost, paid int64
	}{{"other amount", 20, 5}, {"same amount", 7, 7}} {
		t.Run(tc.name, func(t *testing.T) {
			p, lost := lostPair(t, tc.lost)
			ctx := context.Background()
			held := payRefused(t, p, tc.paid)
			c, err := p.buyer.Reestablish(ctx, "s", held)
			if err != nil {
				t.Fatal(err)
			}
			if c.Seq != 2 || c.Paid != 10+tc.lost || c.Contracts["a"] != 10+tc.lost || c.Contracts["b"] != 0 || !bytes.Equal(c.BuyerSig, lost.Sig) {
				t.Fatalf("adopted %+v", c)
			}
			if _, err := p.buyer.Reestablish(ctx, "s", held); !errors.Is(err, ErrInSync) {
				t.Fatalf("adopted twice: %v", err)
			}
			u, err := p.buyer.Pay(ctx, p.id, "b", tc.paid)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
				t.Fatalf("payment on top of the held update refused: %v", err)
			}
			bc, _ := p.buyer.Channel(p.id)
			sc, _ := p.seller.Channel(p.id)
			if bc.Seq != 3 || bc.Paid != 10+tc.lost+tc.paid || bc.Seq != sc.Seq || bc.Paid != sc.Paid || !maps.Equal(bc.Contracts, sc.Contracts) {
				t.Fatalf("buyer %d/%d %v, seller %d/%d %v", bc.Seq, bc.Paid, bc.Contracts, sc.Seq, sc.Paid, sc.Contracts)
			}
		})
	}
}

// TestReestablishBeforePaying: a buyer whose write failed and that has
// not paid since adopts the held update as its next one.
func TestReestablishBeforePaying(t *testing.T) {
	p, lost := lostPair(t, 20)
	c, err := p.buyer.Reestablish(context.Background(), "s", lost.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != 2 || c.Paid != 30 || c.Contracts["a"] != 30 {
		t.Fatalf("adopted %+v", c)
	}
}

// TestReestablishRefused: a held update that is not ours, not on this
// channel, or not one update on top of our record changes nothing.
func TestReestablishRefused(t *testing.T) {
	p, lost := lostPair(t, 20)
	ctx := context.Background()
	held := payRefused(t, p, 5)
	h, err := DecodeUpdate(held)
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := p.buyer.Channel(p.id)
	cases := map[string]func(u *Update){
		"forged amount": func(u *Update) { u.Amount += 1000; u.ContractAmount += 1000 },
		"bad signature": func(u *Update) { u.Sig = bytes.Clone(u.Sig); u.Sig[len(u.Sig)-3] ^= 1 },
		"no signature":  func(u *Update) { u.Sig = nil },
		"lower seq":     func(u *Update) { u.Seq = 1 },
		"seq skips":     func(u *Update) { u.Seq = 4 },
		"other channel": func(u *Update) { u.ChannelID.Index ^= 1 },
		"other script":  func(u *Update) { u.PayScript = bc.BuyerScript },
		"contract inflated": func(u *Update) {
			u.ContractAmount += 5
		},
		"other contract": func(u *Update) { u.ContractID = "b" },
		"over capacity":  func(u *Update) { u.Amount = bc.Capacity + 1 },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			u := *h
			mut(&u)
			before, _ := p.buyer.Channel(p.id)
			if _, err := p.buyer.Reestablish(ctx, "s", u.Encode()); err == nil {
				t.Fatal("adopted")
			}
			after, _ := p.buyer.Channel(p.id)
			if a, b := mustEncode(t, before), mustEncode(t, after); !bytes.Equal(a, b) {
				t.Fatalf("refusal changed the channel:\n%s\n%s", a, b)
			}
		})
	}
	if _, err := p.buyer.Reestablish(ctx, "other", held); !errors.Is(err, ErrUnknownChannel) {
		t.Fatalf("held update from another peer: %v", err)
	}
	if _, err := p.seller.Reestablish(ctx, "b", held); !errors.Is(err, ErrWrongRole) {
		t.Fatalf("seller adopting: %v", err)
	}
	// The buyer's own older update, presented as held.
	first, _ := p.buyer.LatestUpdate(p.id, "a")
	if first != nil {
		first.Seq = 1
		if _, err := p.buyer.Reestablish(ctx, "s", first.Encode()); err == nil {
			t.Fatal("adopted an older update")
		}
	}
	// After all that, the real one is still adopted.
	if _, err := p.buyer.Reestablish(ctx, "s", lost.Encode()); err != nil {
		t.Fatal(err)
	}
}

// mustEncode is c's record but its time of writing.
func mustEncode(t testing.TB, c *Channel) []byte {
	t.Helper()
	c = c.clone()
	c.Updated = time.Time{}
	b, err := EncodeChannel(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The held update comes from the peer: whatever it sends is refused
// without a change, unless it is the update the buyer lost (then the buyer
// holds exactly that).
func FuzzReestablish(f *testing.F) {
	p, lost := lostPair(f, 20)
	f.Add(lost.Encode())
	bad := *lost
	bad.Amount++
	f.Add(bad.Encode())
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	before, _ := p.buyer.Channel(p.id)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := p.buyer.Reestablish(ctx, "s", raw)
		if err == nil {
			if !bytes.Equal(raw, lost.Encode()) || c.Seq != 2 || c.Paid != 30 {
				t.Fatalf("adopted %x: %+v", raw, c)
			}
			// Back to the record before, for the next input.
			cs, _ := p.buyer.chans.lock(p.id)
			if err := p.buyer.persist(cs, before.clone()); err != nil {
				t.Fatal(err)
			}
			cs.mu.Unlock()
			return
		}
		now, _ := p.buyer.Channel(p.id)
		if !bytes.Equal(mustEncode(t, now), mustEncode(t, before)) {
			t.Fatalf("refused %x but changed the channel", raw)
		}
	})
}

// TestResendAfterGap: after an update that skipped a lost one (its amount
// kept unattributed), the buyer's resend of its latest update for the lost
// update's contract is still a resend: the seller's record of that
// contract is below the buyer's by no more than the unattributed amount.
func TestResendAfterGap(t *testing.T) {
	p, _, u2 := outOfOrder(t)
	ctx := context.Background()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.seller.AcceptUpdateInOrder(short, "b", "c2", u2.Encode()); err != nil {
		t.Fatal(err)
	}
	for _, contract := range []string{"c1", "c2"} {
		u, err := p.buyer.LatestUpdate(p.id, contract)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
			t.Fatalf("resend for %s: %v", contract, err)
		}
	}
}
