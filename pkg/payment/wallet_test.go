//go:build integration

package payment

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcwallet/snacl"
	"github.com/btcsuite/btcwallet/waddrmgr"
	"github.com/btcsuite/btcwallet/wallet"
	"github.com/btcsuite/btcwallet/walletdb"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestRegtestWallet: btcwallet against a real btcd: receive, balance, send,
// fund a channel as the buyer's Funder, then back up, restore into a new
// directory and find the same money and the same channel keys.
func TestRegtestWallet(t *testing.T) { onBackends(t, testRegtestWallet) }

func testRegtestWallet(t *testing.T, backend string) {
	h := btcdtest.Start(t, 3)
	cfg := testConfig(h, "")
	var chain Chain
	var light *NeutrinoChain
	if backend == BackendNeutrino {
		light = startLight(t, h)
		cfg.Backend, cfg.Peers = BackendNeutrino, []string{h.P2PHost}
		cfg = cfg.WithLightClient(light)
		chain = light
	} else {
		bc, err := DialBtcd(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer bc.Close()
		chain = bc
	}
	gen := func(n uint32) {
		h.MustGenerate(t, n)
		if light != nil {
			waitLight(t, light, h)
		}
	}
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
	gen(1)
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	waitBalance(t, w, 50_000_000)

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
	gen(1)
	if got, _ := h.Balance(other, sent); got != 10_000_000 {
		t.Fatalf("recipient got %d", got)
	}
	if err := w.WaitSynced(ctx); err != nil { // the change confirmed
		t.Fatal(err)
	}

	// The wallet funds a channel through the Manager.
	payKey := mustKey(t)
	pa, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(payKey.PubKey().SerializeCompressed()), btcdtest.Params)
	scfg := cfg
	scfg.PayoutAddress = pa.EncodeAddress()
	scfg.PayoutSweep = false // direct payouts (sweep_test.go tests the swept ones)
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
	gen(1)
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

// TestRegtestWalletMadeWithDefaultScrypt: a wallet made as earlier versions
// made it (btcwallet's default scrypt, N = 2^18, for both master keys)
// opens with the same passphrase, has its keys re-derived with the light
// parameters once, keeps its addresses and channel keys, and unlocks for
// signing with the same passphrase (and not with another).
func TestRegtestWalletMadeWithDefaultScrypt(t *testing.T) {
	h := btcdtest.Start(t, 3)
	cfg := testConfig(h, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	pass := []byte("correct horse")

	useWalletKDF()
	prev := waddrmgr.SetSecretKeyGen(func(p *[]byte, o *waddrmgr.ScryptOptions) (*snacl.SecretKey, error) {
		return snacl.NewSecretKey(p, o.N, o.R, o.P) // btcwallet's own generator
	})
	_, _, err := createWallet(dir, pass, nil, cfg)
	waddrmgr.SetSecretKeyGen(prev)
	if err != nil {
		t.Fatal(err)
	}
	wantKDF := func(db walletdb.DB, pub, priv int) {
		t.Helper()
		gp, gv, err := walletKDFs(db)
		if err != nil || gp != pub || gv != priv {
			t.Fatalf("master key scrypt N: public %d private %d (%v), want %d and %d", gp, gv, err, pub, priv)
		}
	}
	{ // as the earlier code left it
		loader := wallet.NewLoader(btcdtest.Params, filepath.Join(dir, walletDirName), true, 10*time.Second, 0)
		old, err := loader.OpenExistingWallet([]byte(pubPassphrase), false)
		if err != nil {
			t.Fatal(err)
		}
		wantKDF(old.Database(), waddrmgr.DefaultScryptOptions.N, waddrmgr.DefaultScryptOptions.N)
		_ = loader.UnloadWallet()
	}

	w, err := OpenWallet(ctx, dir, pass, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("open a wallet made with btcwallet's default scrypt: %v", err)
	}
	wantKDF(w.w.Database(), publicKDF.N, privateKDF.N)
	addr, err := w.Address(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chanKey := w.Keyring()
	if err := w.w.Unlock([]byte("wrong horse"), nil); err == nil {
		t.Fatal("the migrated wallet unlocked with a wrong passphrase")
	}
	if err := w.w.Unlock(pass, nil); err != nil {
		t.Fatalf("unlock the migrated wallet: %v", err)
	}
	w.w.Lock()
	w.Close()

	w, err = OpenWallet(ctx, dir, pass, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer w.Close()
	wantKDF(w.w.Database(), publicKDF.N, privateKDF.N)
	if ok, err := w.w.HaveAddress(addr); !ok || err != nil {
		t.Fatalf("reopened wallet lost address %s: %v", addr, err)
	}
	if w.Keyring().base.String() != chanKey.base.String() {
		t.Fatal("reopened wallet derives other channel keys")
	}
}
