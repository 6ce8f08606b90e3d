//go:build integration

package payment

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// TestRegtestOwnKeyChannel is bug 4 against a real chain: a channel output
// funded on regtest with the seller's key in the buyer's place is refused
// at open; on a seller that recorded one before the fix, the update signed
// with the seller's placeholder is refused; and the close such an update
// would make is indeed worthless: btcd rejects it.
func TestRegtestOwnKeyChannel(t *testing.T) {
	p := newPair(t, BackendBtcd)
	ctx := context.Background()
	sk, _ := p.seller.SellerKey()
	own := sk.PubKey().SerializeCompressed()
	tip := p.h.Tip(t)
	expiry := uint32(tip + 40)
	ws, err := ChannelScript(sk.PubKey(), sk.PubKey(), expiry)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := P2WSH(ws)
	const capacity = 200_000
	tx, err := p.h.FundTx(ctx, []*wire.TxOut{wire.NewTxOut(capacity, pk)}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.h.PublishTx(ctx, tx); err != nil {
		t.Fatal(err)
	}
	p.mine(t, 1)
	vout := uint32(0)
	for i, o := range tx.TxOut {
		if bytes.Equal(o.PkScript, pk) {
			vout = uint32(i)
		}
	}
	refund, _ := p.h.NewScript(ctx)
	var raw bytes.Buffer
	tx.Serialize(&raw)
	fee := 2 * closeVSize(ws, p.payout, refund)
	req := &OpenRequest{BuyerKey: own, SellerKey: own, Expiry: expiry, CloseFee: fee,
		SellerScript: p.payout, BuyerScript: refund, FundingTx: raw.Bytes(), Vout: vout}
	if _, err := p.seller.AcceptOpen(ctx, "buyer", req.Encode()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open of an own-key channel: %v, want ErrWrongKey", err)
	}
	if n := len(p.seller.Channels()); n != 0 {
		t.Fatalf("the refused open left %d channels", n)
	}

	// As recorded by a seller before the fix.
	c := &Channel{ID: wire.NewOutPoint(ptr(tx.TxHash()), vout).String(), Role: RoleSeller, State: StateOpen, Peer: "buyer",
		BuyerKey: own, SellerKey: own, Expiry: expiry, Capacity: capacity, CloseFee: fee,
		SellerScript: p.payout, BuyerScript: refund, FundingTx: raw.Bytes(), Vout: vout, OpenHeight: tip, Contracts: map[string]int64{}}
	st := NewMemStore()
	if err := st.PutChannel(c); err != nil {
		t.Fatal(err)
	}
	seller := newManager(t, p.cfg, p.chain, st, seed(2), nil)
	placeholder := append(bytes.Clone(checkSig), byte(txscript.SigHashAll))
	op, _ := c.Outpoint()
	u := &Update{ChannelID: op, Seq: 1, Amount: 50_000, ContractID: "c", ContractAmount: 50_000, PayScript: p.payout, Sig: placeholder}
	if _, err := seller.AcceptUpdate(ctx, "buyer", u.Encode()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("placeholder update: %v, want ErrBadSignature", err)
	}
	if sc, _ := seller.Channel(c.ID); sc.Paid != 0 {
		t.Fatalf("the refused update counts %d as paid", sc.Paid)
	}
	// The close that update stood for: the seller's real signature in
	// its slot, the placeholder in the buyer's. btcd refuses it.
	closeTx, err := c.CloseTx(50_000)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := SignInput(closeTx, 0, ws, capacity, sk)
	if err != nil {
		t.Fatal(err)
	}
	closeTx.TxIn[0].Witness = ChannelCloseWitness(ws, placeholder, sig)
	if _, err := p.h.Client().SendRawTransaction(closeTx, false); err == nil {
		t.Fatal("btcd accepted a close with the placeholder as the buyer's signature")
	} else {
		t.Logf("btcd refuses the placeholder close: %v", err)
	}
}
