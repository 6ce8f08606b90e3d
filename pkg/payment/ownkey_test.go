package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// selfFundedOpen is an open request for a channel whose buyer key is
// buyerKey, with a funding transaction paying the channel script.
func selfFundedOpen(t *testing.T, p *memPair, buyerKey []byte) *OpenRequest {
	t.Helper()
	c, err := p.buyer.Channel(p.id)
	if err != nil {
		t.Fatal(err)
	}
	c.BuyerKey = buyerKey
	ws, err := c.Script()
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := P2WSH(ws)
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 9}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(c.Capacity, pk))
	var raw bytes.Buffer
	if err := tx.Serialize(&raw); err != nil {
		t.Fatal(err)
	}
	return &OpenRequest{BuyerKey: buyerKey, SellerKey: c.SellerKey, Expiry: c.Expiry, CloseFee: c.CloseFee,
		SellerScript: c.SellerScript, BuyerScript: c.BuyerScript, FundingTx: raw.Bytes(), Vout: 0}
}

// TestAcceptOpenRefusesOwnKey: a channel whose buyer key is one of the
// seller's own keys (its seller key, its published buyer key, the key of a
// channel it funded itself) is refused at open, and nothing is recorded.
func TestAcceptOpenRefusesOwnKey(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	sellerKey, _ := p.seller.SellerKey()
	published, _ := p.seller.keys.Key(FamilyChannelBuyer, 0)
	// The seller funds a channel of its own (as a buyer, to the buyer).
	terms, err := p.buyer.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	p.seller.fund = p.buyer.fund
	own, _, err := p.seller.OpenChannel(ctx, OpenParams{Peer: "b", Seller: terms, Capacity: 1_000_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	before := len(p.seller.Channels())
	for name, key := range map[string][]byte{
		"seller key":          sellerKey.PubKey().SerializeCompressed(),
		"published buyer key": published.PubKey().SerializeCompressed(),
		"own funded channel":  own.BuyerKey,
	} {
		req := selfFundedOpen(t, p, key)
		if _, err := p.seller.AcceptOpen(ctx, "b", req.Encode()); !errors.Is(err, ErrWrongKey) {
			t.Errorf("%s: AcceptOpen = %v, want ErrWrongKey", name, err)
		}
	}
	if n := len(p.seller.Channels()); n != before {
		t.Fatalf("refused opens recorded channels: %d → %d", before, n)
	}
	// A buyer key of the buyer's own is accepted, so the refusal above
	// is about whose key it is.
	other := mustKey(t).PubKey().SerializeCompressed()
	if _, err := p.seller.AcceptOpen(ctx, "b", selfFundedOpen(t, p, other).Encode()); err != nil {
		t.Fatalf("foreign buyer key refused: %v", err)
	}
}

// TestAcceptUpdateOwnKeyPlaceholder is issue 9's bug 4 on a channel already
// recorded (accepted before the open was checked): its buyer key is the
// seller's, and an update whose signature is the seller's own check
// placeholder must not count as paid. Every other signature a seller could
// be handed is refused too; nothing changes.
func TestAcceptUpdateOwnKeyPlaceholder(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	sc, err := p.seller.Channel(p.id)
	if err != nil {
		t.Fatal(err)
	}
	bad := sc.clone()
	bad.ID = wire.OutPoint{Index: 5}.String()
	bad.BuyerKey = sc.SellerKey
	st := NewMemStore()
	if err := st.PutChannel(bad); err != nil {
		t.Fatal(err)
	}
	seller := newManager(t, p.seller.cfg, p.chain, st, seed(2), nil)
	op, _ := wire.NewOutPointFromString(bad.ID)
	u := &Update{ChannelID: *op, Seq: 1, Amount: 50_000, ContractID: "c", ContractAmount: 50_000,
		PayScript: bad.SellerScript, Sig: append(bytes.Clone(checkSig), byte(txscript.SigHashAll))}
	if _, err := seller.AcceptUpdate(ctx, "b", u.Encode()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("placeholder signature on an own-key channel: %v, want ErrBadSignature", err)
	}
	// A real signature by the seller's key (which the buyer cannot make)
	// is refused as well: the buyer key may never be ours.
	tx, _ := bad.CloseTx(u.Amount)
	ws, _ := bad.Script()
	key, _ := seller.SellerKey()
	u.Sig, err = SignInput(tx, 0, ws, bad.Capacity, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptUpdate(ctx, "b", u.Encode()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("own signature on an own-key channel: %v, want ErrWrongKey", err)
	}
	if c, _ := seller.Channel(bad.ID); c.Paid != 0 || c.Seq != 0 {
		t.Fatalf("refused updates changed the channel: paid %d seq %d", c.Paid, c.Seq)
	}
}

// TestVerifyUpdateOwnKey: a third party checking contract evidence (a
// reputation attestation) refuses a channel whose two keys are equal, and
// the placeholder signature on it.
func TestVerifyUpdateOwnKey(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	c, _ := p.seller.Channel(p.id)
	req := selfFundedOpen(t, p, c.SellerKey)
	if _, err := ChannelFromOpen(req); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("ChannelFromOpen with equal keys: %v, want ErrWrongKey", err)
	}
	forged := c.clone()
	forged.BuyerKey = c.SellerKey
	op, _ := forged.Outpoint()
	u := &Update{ChannelID: op, Seq: 1, Amount: 50_000, ContractID: "c", ContractAmount: 50_000,
		PayScript: forged.SellerScript, Sig: append(bytes.Clone(checkSig), byte(txscript.SigHashAll))}
	if err := forged.VerifyUpdate(u); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("VerifyUpdate of the placeholder on an own-key channel: %v, want ErrBadSignature", err)
	}
}
