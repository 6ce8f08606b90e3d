//go:build integration

package payment

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestRegtestWallet: btcwallet against a real btcd: receive, balance, send,
// fund a channel as the buyer's Funder, then back up, restore into a new
// directory and find the same money and the same channel keys.
func TestRegtestWallet(t *testing.T) {
	h := btcdtest.Start(t, 3)
	cfg := testConfig(h, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	pass := []byte("correct horse")
	w, err := CreateWallet(ctx, dir, pass, nil, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			w.Close()
		}
	}()
	if _, err := CreateWallet(ctx, dir, pass, nil, cfg, nil); !errors.Is(err, ErrWalletExists) {
		t.Fatalf("create over existing: %v", err)
	}
	addr, err := w.Address(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := txscript.PayToAddrScript(addr)
	if _, _, err := h.Send(pk, 50_000_000); err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 1)
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	waitBalance(t, w, 50_000_000)

	chain, err := DialBtcd(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	other := p2wpkh(t)
	oa, _ := txscript.ParsePkScript(other)
	oaddr, _ := oa.Address(btcdtest.Params)
	sent, err := w.Send(ctx, chain, oaddr.EncodeAddress(), 10_000_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Send(ctx, chain, oaddr.EncodeAddress(), 10_000_000, cfg.MaxFeeRate+1); !errors.Is(err, ErrFeeBound) {
		t.Fatalf("send above max_fee_rate: %v", err)
	}
	if _, err := w.Send(ctx, chain, oaddr.EncodeAddress(), 100_000_000, 2); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("send more than the balance: %v", err)
	}
	h.MustGenerate(t, 1)
	if got, _ := h.Balance(other, sent); got != 10_000_000 {
		t.Fatalf("recipient got %d", got)
	}

	// The wallet funds a channel through the Manager.
	payKey := mustKey(t)
	pa, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payKey.PubKey().SerializeCompressed()), btcdtest.Params)
	scfg := cfg
	scfg.PayoutAddress = pa.EncodeAddress()
	buyer, err := NewManager(ManagerConfig{Config: cfg, Chain: chain, Store: NewMemStore(), Keys: w.Keyring(), Funder: w})
	if err != nil {
		t.Fatal(err)
	}
	seller := newManager(t, scfg, chain, NewMemStore(), seed(2), nil)
	terms, _ := seller.SellerTerms()
	c, req, err := buyer.OpenChannel(ctx, OpenParams{Peer: "s", Seller: terms, Capacity: 1_000_000, FeeRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seller.AcceptOpen(ctx, "b", req.Encode()); err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 1)
	if err := buyer.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ = buyer.Channel(c.ID); c.State != StateOpen {
		t.Fatalf("wallet-funded channel %s", c.State)
	}
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	spendable, _, _ := w.Balance(1)
	key0, _ := w.Keyring().Key(FamilyChannelBuyer, 0)

	// Backup → restore elsewhere: same balance (after a rescan from the
	// birthday), same channel keys; a wrong passphrase opens nothing.
	backup := w.Backup()
	w.Close()
	closed = true
	if _, err := OpenWallet(ctx, dir, []byte("wrong"), cfg, nil); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("open with wrong passphrase: %v", err)
	}
	r, err := CreateWallet(ctx, t.TempDir(), pass, backup, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitBalance(t, r, int64(spendable))
	rk, _ := r.Keyring().Key(FamilyChannelBuyer, 0)
	if !rk.PubKey().IsEqual(key0.PubKey()) {
		t.Fatal("restored keyring derives other channel keys")
	}
	t.Logf("restored wallet balance %d sat", spendable)
}

func waitBalance(t *testing.T, w *Wallet, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, _, err := w.Balance(1)
		if err != nil {
			t.Fatal(err)
		}
		if int64(s) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("wallet balance %d, want %d", s, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
