//go:build integration

package payment

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

func p2wpkh(t *testing.T) []byte {
	k := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), btcdtest.Params)
	s, _ := txscript.PayToAddrScript(a)
	return s
}

func TestRegtestEscrowThreePaths(t *testing.T) {
	h := btcdtest.Start(t, 5)
	cfg := testConfig(h, "")
	chain, err := DialBtcd(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	ctx := context.Background()
	buyer, seller, arbiter := mustKey(t), mustKey(t), mustKey(t)
	toBuyer, toSeller := p2wpkh(t), p2wpkh(t)
	const amount = 2_000_000
	delay := uint32(h.Tip(t) + 20)

	fund := func() *Escrow {
		e := &Escrow{Buyer: buyer.PubKey(), Seller: seller.PubKey(), Arbiter: arbiter.PubKey(), Delay: delay, Amount: amount}
		pk, _ := e.PkScript()
		tx, vout, err := h.Send(pk, amount)
		if err != nil {
			t.Fatal(err)
		}
		e.Outpoint = wire.OutPoint{Hash: tx.TxHash(), Index: vout}
		return e
	}
	release, refund, payout := fund(), fund(), fund()
	h.MustGenerate(t, 1)

	spend := func(e *Escrow, to []byte, arbitrated bool, a, b *btcec2) *wire.MsgTx {
		vs, _ := e.SpendVSize(to)
		tx, err := e.SpendTx(to, 2*vs, arbitrated)
		if err != nil {
			t.Fatal(err)
		}
		sa, _ := e.Sign(tx, a.k)
		sb, _ := e.Sign(tx, b.k)
		if err := e.Finalize(&cfg, tx, arbitrated, sa, sb); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	B, S, A := &btcec2{buyer}, &btcec2{seller}, &btcec2{arbiter}

	// 1. Cooperative release: buyer and seller, any time.
	tx1 := spend(release, toSeller, false, B, S)
	if err := chain.Broadcast(ctx, tx1); err != nil {
		t.Fatalf("cooperative release: %v", err)
	}
	// 2./3. The arbiter's branch is refused by the node before the delay...
	tx2 := spend(refund, toBuyer, true, A, B)
	if err := chain.Broadcast(ctx, tx2); err == nil || !strings.Contains(err.Error(), "final") {
		t.Fatalf("arbitrated refund before delay: %v, want non-final", err)
	}
	// ...and accepted once the chain reaches it.
	h.MustGenerate(t, uint32(int32(delay)-h.Tip(t)))
	if err := chain.Broadcast(ctx, tx2); err != nil {
		t.Fatalf("arbitrated refund: %v", err)
	}
	tx3 := spend(payout, toSeller, true, A, S)
	if err := chain.Broadcast(ctx, tx3); err != nil {
		t.Fatalf("arbitrated payout: %v", err)
	}
	h.MustGenerate(t, 1)
	for _, c := range []struct {
		tx *wire.MsgTx
		to []byte
	}{{tx1, toSeller}, {tx2, toBuyer}, {tx3, toSeller}} {
		if got, _ := h.Balance(c.to, c.tx); got != c.tx.TxOut[0].Value || got < amount-1000 {
			t.Fatalf("escrow spend %s paid %d", c.tx.TxHash(), got)
		}
		if confs, _ := chain.Confirmations(ctx, c.tx.TxHash()); confs < 1 {
			t.Fatalf("escrow spend %s has %d confirmations", c.tx.TxHash(), confs)
		}
	}
	// A fee above the bound is refused before anything is sent.
	e := fund()
	tx, _ := e.SpendTx(toSeller, cfg.MaxFee+1, false)
	sa, _ := e.Sign(tx, buyer)
	sb, _ := e.Sign(tx, seller)
	if err := e.Finalize(&cfg, tx, false, sa, sb); !errors.Is(err, ErrFeeBound) {
		t.Fatalf("escrow with fee above max_fee: %v", err)
	}
}

type btcec2 struct{ k *btcec.PrivateKey }
