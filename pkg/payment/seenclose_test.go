package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/wire"
)

// paidClosedPair is a memPair whose buyer paid 50,000 sat on its channel
// and whose seller then closed it (the close unmined).
func paidClosedPair(tb testing.TB) *memPair {
	tb.Helper()
	p := newMemPair(tb, NewMemStore(), NewMemStore())
	p.pay(tb, "c", 50_000)
	if _, err := p.seller.Close(context.Background(), p.id); err != nil {
		tb.Fatal(err)
	}
	return p
}

// A seller refuses a contract on a channel it has closed with the close
// transaction (ClosingError); the buyer, whose chain source has not shown
// it the spend yet, checks the transaction and counts the channel closing.
// A forged or foreign transaction changes nothing.
func TestSeenClose(t *testing.T) {
	p := paidClosedPair(t)
	ctx := context.Background()
	_, err := p.seller.Admit(ctx, p.id, "c2", 1000)
	var ce *ClosingError
	if !errors.As(err, &ce) || !errors.Is(err, ErrNotOpen) || len(ce.ClosingTx()) == 0 {
		t.Fatalf("admit on a closed channel: %v, want a ClosingError with the close", err)
	}
	sc, _ := p.seller.Channel(p.id)
	if err := Unusable(sc); !errors.As(err, &ce) {
		t.Fatalf("Unusable(closing channel) = %v", err)
	}

	forged := bytes.Clone(ce.Tx)
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(forged)); err != nil {
		t.Fatal(err)
	}
	tx.TxOut[0].Value-- // the signatures no longer cover it
	var buf bytes.Buffer
	_ = tx.Serialize(&buf)
	for name, tc := range map[string]struct {
		peer string
		raw  []byte
		want error
	}{
		"forged":       {"s", buf.Bytes(), ErrScript},
		"other peer":   {"x", ce.Tx, errNotOurs},
		"garbage":      {"s", []byte{1, 2, 3}, ErrMalformed},
		"empty":        {"s", nil, ErrMalformed},
		"much too big": {"s", make([]byte, maxSeenCloseSize+1), ErrMalformed},
	} {
		if _, err := p.buyer.SeenClose(ctx, tc.peer, tc.raw); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if bc, _ := p.buyer.Channel(p.id); bc.State != StateOpen {
			t.Fatalf("%s: the buyer's channel is %s", name, bc.State)
		}
	}

	id, err := p.buyer.SeenClose(ctx, "s", ce.Tx)
	if err != nil || id != p.id {
		t.Fatalf("SeenClose = %q, %v", id, err)
	}
	bc, _ := p.buyer.Channel(p.id)
	if bc.State != StateClosing || bc.SpendTxid != sc.SpendTxid {
		t.Fatalf("the buyer's channel is %s spent by %q, want closing by %s", bc.State, bc.SpendTxid, sc.SpendTxid)
	}
	// Told again (another contract's refusal): nothing changes.
	if _, err := p.buyer.SeenClose(ctx, "s", ce.Tx); err == nil {
		t.Fatal("a closing channel taken for open again")
	}
}

// The closing transaction a peer hands over is peer data.
func FuzzSeenClose(f *testing.F) {
	p := paidClosedPair(f)
	ctx := context.Background()
	sc, _ := p.seller.Channel(p.id)
	f.Add(sc.SpendTx)
	f.Add([]byte{})
	pk, _ := sc.PkScript()
	f.Fuzz(func(t *testing.T, raw []byte) {
		id, err := p.buyer.SeenClose(ctx, "s", raw)
		if err != nil {
			return
		}
		// Taken: it must be a valid spend of the channel's funding.
		var tx wire.MsgTx
		if id != p.id || tx.Deserialize(bytes.NewReader(raw)) != nil || len(tx.TxIn) == 0 {
			t.Fatalf("SeenClose took %x for %q", raw, id)
		}
		op, _ := sc.Outpoint()
		for i, in := range tx.TxIn {
			if in.PreviousOutPoint == op && VerifyInput(&tx, i, pk, sc.Capacity) == nil {
				return
			}
		}
		t.Fatalf("SeenClose took %x, which does not spend the channel", raw)
	})
}
