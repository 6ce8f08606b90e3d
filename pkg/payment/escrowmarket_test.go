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

// TestEscrowSplitPayout: the arbiter decides a split; the buyer completes
// it after the delay with two outputs, the seller's share and the rest
// less the fee, and every party sees it as arbitrated. A split cannot be
// changed once set.
func TestEscrowSplitPayout(t *testing.T) {
	p, chain := memTrio(t)
	ctx := context.Background()
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowFunded)
	const share = 2_000_000
	for _, m := range []*EscrowManager{p.arbiter, p.buyer} {
		if _, err := m.SetSplit(p.id, share); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.buyer.SetSplit(p.id, share+1); !errors.Is(err, ErrEscrowState) {
		t.Fatalf("changed a split: %v", err)
	}
	sig, _, err := p.arbiter.ArbitrateKind(ctx, p.id, SpendPayoutSplit)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.buyer.AddSignature(ctx, "arbiter", sig.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.buyer.ArbitrateKind(ctx, p.id, SpendPayoutSplit); !errors.Is(err, ErrNotExpired) {
		t.Fatalf("split before the delay: %v", err)
	}
	e, _ := p.buyer.Escrow(p.id)
	tip, _ := chain.Tip(ctx)
	chain.Mine(int32(e.Delay) - tip)
	_, tx, err := p.buyer.ArbitrateKind(ctx, p.id, SpendPayoutSplit)
	if err != nil || tx == nil {
		t.Fatalf("split payout: %v", err)
	}
	if len(tx.TxOut) != 2 || tx.TxOut[0].Value != share || !bytes.Equal(tx.TxOut[0].PkScript, e.SellerScript) ||
		tx.TxOut[1].Value != e.Amount-share-sig.Fee || !bytes.Equal(tx.TxOut[1].PkScript, e.BuyerScript) {
		t.Fatalf("split payout outputs: %+v (fee %d)", tx.TxOut, sig.Fee)
	}
	chain.Mine(2)
	p.tick(t)
	p.want(t, EscrowArbitrated)
	if s, _ := p.seller.Escrow(p.id); s.SpendKind != SpendPayoutSplit {
		t.Fatalf("the seller classified the split as %s", s.SpendKind)
	}
}
