//go:build integration

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// TestWalletCommands drives `blackbox wallet …` and `channels` in-process
// against a regtest btcd configured through BLACKBOX_PAYMENT_* variables.
func TestWalletCommands(t *testing.T) {
	h := btcdtest.Start(t, 2)
	t.Setenv("BLACKBOX_PAYMENT_NETWORK", "regtest")
	t.Setenv("BLACKBOX_PAYMENT_RPC_HOST", h.RPCHost)
	t.Setenv("BLACKBOX_PAYMENT_RPC_USER", h.RPCUser)
	t.Setenv("BLACKBOX_PAYMENT_RPC_PASS", h.RPCPass)
	t.Setenv("BLACKBOX_WALLET_PASSPHRASE", "pw")
	dir := t.TempDir()
	run := func(data string, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		args = append([]string{"--data-dir", data, "--log-level", "error"}, args...)
		if code := Run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("blackbox %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	run(dir, "wallet", "create")
	addr := run(dir, "wallet", "address")
	a, err := btcutil.DecodeAddress(addr, btcdtest.Params)
	if err != nil {
		t.Fatalf("wallet address %q: %v", addr, err)
	}
	pk, _ := txscript.PayToAddrScript(a)
	if _, _, err := h.Send(pk, 7_000_000); err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 1)
	var bal struct {
		Spendable int64 `json:"spendable_sat"`
	}
	if err := json.Unmarshal([]byte(run(dir, "wallet", "balance", "--json")), &bal); err != nil || bal.Spendable != 7_000_000 {
		t.Fatalf("balance %+v %v", bal, err)
	}
	if txid := run(dir, "wallet", "send", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "1000000", "--fee-rate", "2"); len(txid) != 64 {
		t.Fatalf("send printed %q", txid)
	}
	backup := filepath.Join(t.TempDir(), "backup.json")
	run(dir, "wallet", "backup", backup)
	h.MustGenerate(t, 1)
	if out := run(t.TempDir(), "wallet", "restore", backup); !strings.Contains(out, "restored") {
		t.Fatalf("restore: %q", out)
	}
	if out := run(dir, "channels", "--json"); out != "[]" {
		t.Fatalf("channels --json: %q", out)
	}
}
