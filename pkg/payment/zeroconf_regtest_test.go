//go:build integration

package payment

import (
	"context"
	"strings"
	"testing"
)

// TestZeroConfRegtest: on a real btcd, a seller accepts a buyer's funding
// unconfirmed when its inputs are confirmed, pass the script engine, do
// not signal RBF, pay at least the fee floor and sit in btcd's mempool;
// it admits a contract on it within zero_conf_max, takes its payments
// before any block, and a seller whose fee floor the funding misses waits
// for the confirmations instead.
func TestZeroConfRegtest(t *testing.T) {
	p := newPair(t, BackendBtcd) // zero-conf checks need btcd (PrevOutSource)
	ctx := context.Background()
	terms, err := p.seller.SellerTerms()
	if err != nil {
		t.Fatal(err)
	}
	c, req, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "seller", Seller: terms, Capacity: 500_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := p.seller.AcceptOpen(ctx, "buyer", req.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !sc.ZeroConf || sc.State != StatePending {
		t.Fatalf("funding at 2 sat/vB, confirmed input, no RBF: zero_conf %v (%s), state %s", sc.ZeroConf, sc.ZeroConfWhy, sc.State)
	}
	st, err := p.seller.Admit(ctx, c.ID, "c1", 4_000)
	if err != nil || !st.Ready || !st.ZeroConf || st.Exposure != 4_000 {
		t.Fatalf("admit: %+v %v", st, err)
	}
	p.pay(t, c.ID, "c1", 4_000) // no block mined
	if v := p.seller.ZeroConf(); v.ExposureSat != 4_000 || len(v.Channels) != 1 {
		t.Fatalf("exposure %+v", v)
	}

	// A seller whose floor is 5 sat/vB (its estimate 10) waits.
	cfg := p.cfg
	cfg.FallbackFeeRate = 10
	strict := newManager(t, cfg, p.chain, NewMemStore(), seed(2), nil)
	c2, req2, err := p.buyer.OpenChannel(ctx, OpenParams{Peer: "seller", Seller: terms, Capacity: 500_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	sc2, err := strict.AcceptOpen(ctx, "buyer", req2.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if sc2.ZeroConf || !strings.Contains(sc2.ZeroConfWhy, "below the floor of 5 sat/vB") {
		t.Fatalf("funding at 2 sat/vB, floor 5: zero_conf %v (%s)", sc2.ZeroConf, sc2.ZeroConfWhy)
	}
	if st, err := strict.Admit(ctx, c2.ID, "c2", 1); err != nil || st.Ready {
		t.Fatalf("admit below the floor: %+v %v", st, err)
	}
	// Both confirm: the channels open and nothing is exposed.
	p.mine(t, 1)
	if err := strict.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := strict.Admit(ctx, c2.ID, "c2", 1); err != nil || !st.Ready || st.ZeroConf {
		t.Fatalf("admit after the confirmation: %+v %v", st, err)
	}
	if v := p.seller.ZeroConf(); v.ExposureSat != 0 {
		t.Fatalf("exposure after the confirmation %+v", v)
	}
}
