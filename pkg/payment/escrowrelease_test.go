package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestEscrowPartialRelease: buyer and seller release what the receipt
// billed; the seller pays the fee from its share and the buyer gets the
// rest back in the same transaction; a signature of another share does
// not verify; both sides and the arbiter record where the spend paid.
func TestEscrowPartialRelease(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowFunded)
	const share = 1_200_000
	if _, err := p.buyer.SetRelease(p.id, share); err != nil {
		t.Fatal(err)
	}
	if _, err := p.buyer.SetRelease(p.id, share+1); !errors.Is(err, ErrEscrowState) {
		t.Fatalf("changed a release share: %v", err)
	}
	if _, err := p.buyer.SetRelease(p.id, 5_000_001); err == nil {
		t.Fatal("a share above the escrow was taken")
	}
	sig, _, err := p.buyer.Release(ctx, p.id)
	if err != nil {
		t.Fatal(err)
	}
	// A seller whose receipt bills another share refuses the signature
	// (a second trio: a share, once set, cannot change).
	q, qchain := memTrio(t)
	qchain.Mine(2)
	q.tick(t)
	if _, err := q.buyer.SetRelease(q.id, share); err != nil {
		t.Fatal(err)
	}
	qsig, _, err := q.buyer.Release(ctx, q.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.seller.SetRelease(q.id, share+1000); err != nil {
		t.Fatal(err)
	}
	if _, err := q.seller.AddSignature(ctx, "b", qsig.Encode()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a release of another share: %v", err)
	}
	if e, _ := q.seller.Escrow(q.id); len(e.Sigs) != 0 {
		t.Fatalf("a refused signature was kept: %+v", e.Sigs)
	}
	// The seller that agrees completes it.
	if _, err := p.seller.SetRelease(p.id, share); err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AddSignature(ctx, "b", sig.Encode()); err != nil {
		t.Fatal(err)
	}
	_, tx, err := p.seller.Release(ctx, p.id)
	if err != nil || tx == nil {
		t.Fatalf("release: %v", err)
	}
	e, _ := p.seller.Escrow(p.id)
	if len(tx.TxOut) != 2 || tx.TxOut[0].Value != share-sig.Fee || !bytes.Equal(tx.TxOut[0].PkScript, e.SellerScript) ||
		tx.TxOut[1].Value != e.Amount-share || !bytes.Equal(tx.TxOut[1].PkScript, e.BuyerScript) {
		t.Fatalf("release outputs %+v (fee %d)", tx.TxOut, sig.Fee)
	}
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowReleased)
	for _, m := range p.all() {
		e, _ := m.Escrow(p.id)
		if e.SpendKind != SpendRelease || e.Paid == nil || *e.Paid != (EscrowPaid{ToSeller: share - sig.Fee, ToBuyer: e.Amount - share, Fee: sig.Fee}) {
			t.Fatalf("%s recorded %s %+v", e.Role, e.SpendKind, e.Paid)
		}
	}
}

// TestEscrowReleaseShapes: the release's outputs for every share.
func TestEscrowReleaseShapes(t *testing.T) {
	p, _ := memTrio(t)
	rec, _ := p.buyer.Escrow(p.id)
	e, err := rec.Escrow()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		share, fee int64
		outs       []int64
		err        error
	}{
		{0, 300, []int64{5_000_000 - 300}, nil},
		{5_000_000, 300, []int64{5_000_000 - 300}, nil},
		{4_999_900, 300, []int64{5_000_000 - 300}, nil}, // the buyer's rest is dust
		{3000, 300, []int64{2700, 4_997_000}, nil},
		{500, 300, nil, ErrNotWorth}, // the seller's share cannot pay the fee
	} {
		tx, err := e.ReleaseTx(rec.SellerScript, c.share, rec.BuyerScript, c.fee)
		if !errors.Is(err, c.err) {
			t.Fatalf("share %d: %v, want %v", c.share, err, c.err)
		}
		if err != nil {
			continue
		}
		var got []int64
		for _, o := range tx.TxOut {
			got = append(got, o.Value)
		}
		if len(got) != len(c.outs) || got[0] != c.outs[0] || len(got) == 2 && got[1] != c.outs[1] {
			t.Fatalf("share %d: outputs %v, want %v", c.share, got, c.outs)
		}
	}
}

// TestEscrowFloor: the smallest escrow follows the fee source's rate (not
// max_fee_rate), and OpenEscrow refuses one below it before funding.
func TestEscrowFloor(t *testing.T) {
	floor2, fee2 := EscrowFloor(2)
	floor20, _ := EscrowFloor(20)
	if floor2 >= floor20 || floor2 > 2000 || fee2 <= 0 || fee2 > 400 {
		t.Fatalf("floor at 2 sat/vB %d (release fee %d), at 20 sat/vB %d", floor2, fee2, floor20)
	}
	p, _ := memTrio(t)
	st, _ := p.seller.Terms(RoleSeller)
	at, _ := p.arbiter.Terms(RoleArbiter)
	before := len(p.buyer.Escrows())
	_, _, err := p.buyer.OpenEscrow(context.Background(), EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: floor20 - 1, Delay: 30, FeeRate: 20})
	if !errors.Is(err, ErrNotWorth) {
		t.Fatalf("escrow below the floor: %v", err)
	}
	if len(p.buyer.Escrows()) != before {
		t.Fatal("a refused escrow was recorded")
	}
	if _, _, err := p.buyer.OpenEscrow(context.Background(), EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: floor2, Delay: 30, FeeRate: 2}); err != nil {
		t.Fatalf("escrow at the floor: %v", err)
	}
}

// TestEscrowDelayBounds: a seller or arbiter refuses an escrow whose delay
// is too short for the job or longer than it allows, and records nothing.
func TestEscrowDelayBounds(t *testing.T) {
	p, _ := memTrio(t)
	ctx := context.Background()
	st, _ := p.seller.Terms(RoleSeller)
	at, _ := p.arbiter.Terms(RoleArbiter)
	_, offer, err := p.buyer.OpenEscrow(ctx, EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: 100_000, Delay: 50, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	before := len(p.seller.Escrows())
	if _, err := p.seller.AcceptEscrowWithin(ctx, "b", offer.Encode(), 0, 40); !errors.Is(err, ErrEscrowDelay) {
		t.Fatalf("delay beyond the max: %v", err)
	}
	if _, err := p.seller.AcceptEscrowWithin(ctx, "b", offer.Encode(), 60, 0); !errors.Is(err, ErrEscrowDelay) {
		t.Fatalf("delay before the job ends: %v", err)
	}
	if len(p.seller.Escrows()) != before {
		t.Fatal("a refused escrow was recorded")
	}
	if _, err := p.seller.AcceptEscrowWithin(ctx, "b", offer.Encode(), 10, 60); err != nil {
		t.Fatalf("delay within bounds: %v", err)
	}
}
