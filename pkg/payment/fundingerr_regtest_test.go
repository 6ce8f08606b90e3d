//go:build integration

package payment

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/txscript"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestRegtestFundingErrors: a fresh wallet's first address is FirstAddress
// (the node's payout default while its chain source is down); coin
// selection that comes short is an InsufficientFundsError with the
// amounts, still an ErrInsufficientFunds.
func TestRegtestFundingErrors(t *testing.T) {
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
	defer w.Close()
	seed, err := w.Backup().Open(pass)
	if err != nil {
		t.Fatal(err)
	}
	first, err := FirstAddress(seed, btcdtest.Params)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := w.Address(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.EncodeAddress() != addr.EncodeAddress() {
		t.Fatalf("FirstAddress %s, the wallet's first address %s", first, addr)
	}

	chain, err := DialBtcd(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	other := p2wpkh(t)
	oa, _ := txscript.ParsePkScript(other)
	oaddr, _ := oa.Address(btcdtest.Params)
	_, err = w.Send(ctx, chain, oaddr.EncodeAddress(), 100_000, 2)
	var ife *InsufficientFundsError
	if !errors.Is(err, ErrInsufficientFunds) || !errors.As(err, &ife) || ife.Need < 100_000 || ife.Spendable != 0 {
		t.Fatalf("send from an empty wallet: %v", err)
	}
	t.Logf("empty wallet: %v", err)

	pk, _ := txscript.PayToAddrScript(addr)
	if _, _, err := h.Send(pk, 50_000); err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 1)
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	waitBalance(t, w, 50_000)
	_, err = w.Send(ctx, chain, oaddr.EncodeAddress(), 100_000, 2)
	if !errors.As(err, &ife) || ife.Spendable != 50_000 || !strings.Contains(err.Error(), "50000 sat spendable") {
		t.Fatalf("send more than the balance: %v", err)
	}
	t.Logf("short wallet: %v", err)
}
