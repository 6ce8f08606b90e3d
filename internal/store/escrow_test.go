package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// TestEscrowRestartFromBolt persists an escrow's lifecycle in bbolt on
// three nodes, closes and reopens every database in the middle (after the
// seller acknowledged the buyer's signature of a refund, before the refund
// is completed) and carries the escrow to the end from what was reloaded.
func TestEscrowRestartFromBolt(t *testing.T) {
	ctx := context.Background()
	key, _ := payment.NewKeyring(bytes.Repeat([]byte{9}, 32), &chaincfg.RegressionNetParams)
	pk, _ := key.Key(payment.FamilySeller, 0)
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pk.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	cfg := payment.RegtestConfig()
	cfg.PayoutAddress = addr.EncodeAddress()
	cfg.Confirmations = 1
	chain := paytest.NewChain()
	funder := paytest.NewFunder(chain)
	dir := t.TempDir()
	var dbs [3]*store.DB
	var ms [3]*payment.EscrowManager
	open := func() {
		for i := range ms {
			db, err := store.Open(dir+"/"+[]string{"buyer", "seller", "arbiter"}[i]+".db", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			keys, _ := payment.NewKeyring(bytes.Repeat([]byte{byte(20 + i)}, 32), &chaincfg.RegressionNetParams)
			var f payment.Funder
			if i == 0 {
				f = funder
			}
			m, err := payment.NewEscrowManager(payment.EscrowManagerConfig{Config: cfg, Chain: chain, Store: store.NewPaymentStore(db), Keys: keys, Funder: f})
			if err != nil {
				t.Fatal(err)
			}
			dbs[i], ms[i] = db, m
		}
	}
	closeAll := func() {
		for _, db := range dbs {
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	tick := func() {
		for _, m := range ms {
			if err := m.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := func(id string, s payment.EscrowState) {
		t.Helper()
		for _, m := range ms {
			e, err := m.Escrow(id)
			if err != nil {
				t.Fatal(err)
			}
			if e.State != s {
				t.Fatalf("%s: %s, want %s", e.Role, e.State, s)
			}
		}
	}
	open()
	buyer, seller, arbiter := ms[0], ms[1], ms[2]
	st, err := seller.Terms(payment.RoleSeller)
	if err != nil {
		t.Fatal(err)
	}
	at, _ := arbiter.Terms(payment.RoleArbiter)
	rec, offer, err := buyer.OpenEscrow(ctx, payment.EscrowParams{Peer: "s", Seller: st, Arbiter: at, Amount: 4_000_000, Delay: 50, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		if _, err := m.AcceptEscrow(ctx, "b", offer.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	chain.Mine(1)
	tick()
	want(rec.ID, payment.EscrowFunded)
	sig, _, err := buyer.Refund(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AddSignature(ctx, "b", sig.Encode()); err != nil {
		t.Fatal(err)
	}

	closeAll()
	open()
	buyer, seller = ms[0], ms[1]
	want(rec.ID, payment.EscrowFunded)
	e, _ := seller.Escrow(rec.ID)
	if len(e.Sigs) != 1 || !bytes.Equal(e.Sigs[0].Sig, sig.Sig) || e.Role != payment.RoleSeller {
		t.Fatalf("reloaded seller escrow: %+v", e)
	}
	// Key indexes are durable too: fresh terms never reuse a key.
	if st2, _ := seller.Terms(payment.RoleSeller); st2.KeyIndex == st.KeyIndex {
		t.Fatal("escrow key index reused after a restart")
	}
	_, tx, err := seller.Refund(ctx, rec.ID)
	if err != nil || tx == nil {
		t.Fatalf("seller completes the refund: %v", err)
	}
	closeAll()
	open()
	tick()
	want(rec.ID, payment.EscrowRefunding)
	chain.Mine(1)
	tick()
	want(rec.ID, payment.EscrowRefunded)
	if _, _, err := ms[0].Release(ctx, rec.ID); !errors.Is(err, payment.ErrEscrowState) {
		t.Fatalf("release after refund: %v", err)
	}
	closeAll()
}
