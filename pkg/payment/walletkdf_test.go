package payment

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcwallet/wallet"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestNewWalletKDF: a new wallet's btcwallet master keys use the light
// scrypt parameters (the public one N=16, the private one seed.json's), not
// btcwallet's 256 MiB default; "public" is refused as the passphrase, since
// the public key's cheap parameters would then guard the private one.
func TestNewWalletKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a wallet (three scrypt derivations, ~2s here): not in -short")
	}
	cfg := RegtestConfig()
	cfg.Network = "regtest"
	if _, _, err := createWallet(t.TempDir(), []byte(pubPassphrase), nil, cfg); err == nil || !strings.Contains(err.Error(), "choose another") {
		t.Fatalf("passphrase %q: %v", pubPassphrase, err)
	}
	dir := t.TempDir()
	if _, _, err := createWallet(dir, []byte("correct horse"), nil, cfg); err != nil {
		t.Fatal(err)
	}
	loader := wallet.NewLoader(btcdtest.Params, filepath.Join(dir, walletDirName), true, 10*time.Second, 0)
	w, err := loader.OpenExistingWallet([]byte(pubPassphrase), false)
	if err != nil {
		t.Fatal(err)
	}
	defer loader.UnloadWallet()
	pub, priv, err := walletKDFs(w.Database())
	if err != nil || pub != publicKDF.N || priv != scryptN {
		t.Fatalf("master key scrypt N: public %d private %d (%v), want %d and %d", pub, priv, err, publicKDF.N, scryptN)
	}
}
