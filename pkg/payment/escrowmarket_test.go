package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// TestEscrowBeforePublish: a BeforePublish that refuses leaves the escrow
// Failed and its funding never sent (no confirmations, even after blocks and
// a tick); one that agrees sees the persisted escrow and its offer, and an
// extra output rides in the funding.
func TestEscrowBeforePublish(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	st, _ := p.seller.Terms(RoleSeller)
	at, _ := p.arbiter.Terms(RoleArbiter)
	refused := errors.New("arbiter said no")
	rec, _, err := p.buyer.OpenEscrow(ctx, EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: 1_000_000, Delay: 30, FeeRate: 2,
		BeforePublish: func(*EscrowRecord, *EscrowOffer) error { return refused }})
	if !errors.Is(err, refused) || rec != nil {
		t.Fatalf("open with a refusing BeforePublish: %v, %v", rec, err)
	}
	var failed *EscrowRecord
	for _, e := range p.buyer.Escrows() {
		if e.State == EscrowFailed {
			failed = e
		}
	}
	if failed == nil {
		t.Fatal("the unpublished escrow is not Failed")
	}
	chain.Mine(3)
	p.tick(t)
	op, _ := wire.NewOutPointFromString(failed.ID)
	if c, _ := chain.Confirmations(ctx, op.Hash); c >= 0 {
		t.Fatalf("the refused funding was sent: %d confirmations", c)
	}

	extra := wire.NewTxOut(5000, st.PayoutScript)
	var seen *EscrowRecord
	rec, offer, err := p.buyer.OpenEscrow(ctx, EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: 1_000_000, Delay: 30, FeeRate: 2,
		Extra: []*wire.TxOut{extra},
		BeforePublish: func(r *EscrowRecord, o *EscrowOffer) error {
			if _, err := p.buyer.SetMarket(r.ID, func(m *EscrowMarket) error { m.Contract = "c1"; return nil }); err != nil {
				return err
			}
			seen = r
			return nil
		}})
	if err != nil || seen == nil || seen.ID != rec.ID || offer == nil {
		t.Fatalf("open: %v (seen %v)", err, seen)
	}
	if got, _ := p.buyer.Escrow(rec.ID); got.Market == nil || got.Market.Contract != "c1" || got.State != EscrowPending {
		t.Fatalf("escrow after open: %+v", got)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(offer.FundingTx)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range tx.TxOut {
		found = found || o.Value == extra.Value && string(o.PkScript) == string(extra.PkScript)
	}
	if !found {
		t.Fatal("the funding lacks the extra output")
	}
	var h chainhash.Hash = tx.TxHash()
	chain.Mine(1)
	if c, _ := chain.Confirmations(ctx, h); c < 1 {
		t.Fatalf("the agreed funding was not sent: %d", c)
	}
}
