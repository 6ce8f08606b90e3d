//go:build integration

package payment

import (
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestRegtestEscrowManagerRestart runs escrows through the EscrowManager on
// a real btcd: a dispute decided by the arbiter for the seller, with the
// seller restarted between acknowledging the arbiter's signature and
// completing the payout and everyone restarted before it confirms; and a
// cooperative release.
func TestRegtestEscrowManagerRestart(t *testing.T) {
	onBackends(t, testRegtestEscrowManagerRestart)
}

func testRegtestEscrowManagerRestart(t *testing.T, backend string) {
	h := btcdtest.Start(t, 5)
	payoutKey := mustKey(t)
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payoutKey.PubKey().SerializeCompressed()), btcdtest.Params)
	payout, _ := txscript.PayToAddrScript(addr)
	cfg := testConfig(h, addr.EncodeAddress())
	var chain Chain
	var light *NeutrinoChain
	if backend == BackendNeutrino {
		light = startLight(t, h)
		cfg.Backend, cfg.Peers = BackendNeutrino, []string{h.P2PHost}
		chain = light
	} else {
		bc, err := DialBtcd(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer bc.Close()
		chain = bc
	}
	ctx := context.Background()
	p := newTrio(t, cfg, chain, h)
	mine := func(n uint32) {
		t.Helper()
		h.MustGenerate(t, n)
		if light != nil {
			waitLight(t, light, h)
		}
		p.tick(t)
	}
	const amount = 3_000_000
	p.open(t, amount, 20)
	p.tick(t)
	p.want(t, EscrowPending)
	mine(1)
	p.want(t, EscrowFunded)

	if _, err := p.buyer.Dispute(ctx, p.id, "seller says delivered, buyer disagrees"); err != nil {
		t.Fatal(err)
	}
	sig, _, err := p.arbiter.Arbitrate(ctx, p.id, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AddSignature(ctx, "arbiter", sig.Encode()); err != nil {
		t.Fatal(err)
	}
	p.restart(t, 1) // the seller crashes after acknowledging
	p.want(t, EscrowDisputed)
	if _, _, err := p.seller.Arbitrate(ctx, p.id, true); !errors.Is(err, ErrNotExpired) {
		t.Fatalf("arbitrated payout before the delay: %v", err)
	}
	e, _ := p.seller.Escrow(p.id)
	mine(uint32(int32(e.Delay) - h.Tip(t)))
	_, tx, err := p.seller.Arbitrate(ctx, p.id, true)
	if err != nil || tx == nil {
		t.Fatalf("arbitrated payout: %v", err)
	}
	p.restart(t, 0, 1, 2) // everyone, before it confirms
	mine(1)
	p.want(t, EscrowArbitrated)
	if got, _ := h.Balance(payout, tx); got != tx.TxOut[0].Value || got < amount-int64(cfg.MaxFee) {
		t.Fatalf("arbitrated payout paid %d", got)
	}

	// A second escrow, released by agreement: the buyer signs, the seller
	// completes.
	p.open(t, amount, 20)
	mine(1)
	p.want(t, EscrowFunded)
	sig, _, err = p.buyer.Release(ctx, p.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.seller.AddSignature(ctx, "buyer", sig.Encode()); err != nil {
		t.Fatal(err)
	}
	p.restart(t, 1)
	_, tx, err = p.seller.Release(ctx, p.id)
	if err != nil || tx == nil {
		t.Fatalf("release: %v", err)
	}
	mine(1)
	p.want(t, EscrowReleased)
	if got, _ := h.Balance(payout, tx); got != amount-sig.Fee {
		t.Fatalf("release paid %d, want %d", got, amount-sig.Fee)
	}
}
