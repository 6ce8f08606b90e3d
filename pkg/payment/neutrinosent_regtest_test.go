//go:build integration

package payment

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// startLightIn is startLight on the light client directory dir.
func startLightIn(t testing.TB, h *btcdtest.Harness, dir string) *NeutrinoChain {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Network, cfg.Backend, cfg.Peers = "regtest", BackendNeutrino, []string{h.P2PHost}
	n, err := StartNeutrino(cfg, dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	waitLight(t, n, h)
	return n
}

// sentInFile is the txids in the light client's file in dir.
func sentInFile(t *testing.T, dir string) map[chainhash.Hash]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, sentFileName))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := decodeSent(b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[chainhash.Hash]bool{}
	for _, e := range entries {
		out[e.Tx.TxHash()] = true
	}
	return out
}

// TestRegtestLightOwnTxsSurviveRestart: a light client broadcasts two
// transactions and stops; btcd restarts too, so its mempool forgets them.
// A block takes one's input with another transaction meanwhile. The light
// client started again on its directory knows the other as its own
// unconfirmed transaction at once (confirmations 0, its spend found by
// outpoint alone; before, -1 and nothing until the chain managers
// rebroadcast it), broadcasts it again (btcd's mempool has it), and
// forgets the conflicted one; once the survivor is buried six blocks
// deep, it forgets it too and the file is empty.
func TestRegtestLightOwnTxsSurviveRestart(t *testing.T) {
	h := btcdtest.Start(t, 5)
	dir := t.TempDir()
	n1 := startLightIn(t, h, dir)
	ctx := context.Background()
	key := mustKey(t)
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), btcdtest.Params)
	pk, _ := txscript.PayToAddrScript(addr)
	keep, err := h.FundTx(ctx, []*wire.TxOut{wire.NewTxOut(200_000, pk)}, 5)
	if err != nil {
		t.Fatal(err)
	}
	lose, err := h.FundTx(ctx, []*wire.TxOut{wire.NewTxOut(300_000, pk)}, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range []*wire.MsgTx{keep, lose} {
		if err := n1.Broadcast(ctx, tx); err != nil {
			t.Fatal(err)
		}
		waitMempool(t, h, tx)
	}
	if f := sentInFile(t, dir); !f[keep.TxHash()] || !f[lose.TxHash()] {
		t.Fatalf("file after the broadcasts: %v", f)
	}
	n1.Close()

	h.Pause()
	if err := h.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, tx := range []*wire.MsgTx{keep, lose} {
		id := tx.TxHash()
		if _, err := h.Client().GetMempoolEntry(id.String()); err == nil {
			t.Fatalf("%s is still in btcd's mempool after its restart", id)
		}
	}
	conflict, err := h.Conflict(lose, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.MineTxs(conflict); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	n2 := startLightIn(t, h, dir)
	if c, err := n2.Confirmations(ctx, keep.TxHash()); err != nil || c != 0 {
		t.Fatalf("own unconfirmed tx after the restart: %d confirmations (%v), want 0 (known)", c, err)
	}
	if sp, err := n2.SpendOf(ctx, keep.TxIn[0].PreviousOutPoint, 0); err != nil || sp == nil || sp.TxHash() != keep.TxHash() {
		t.Fatalf("own spend of %s after the restart: %v %v", keep.TxIn[0].PreviousOutPoint, sp, err)
	}
	waitMempool(t, h, keep)
	t.Logf("own unconfirmed tx back in btcd's mempool %s after the light client's start", time.Since(start).Round(time.Millisecond))
	gone := func(id chainhash.Hash) bool {
		for _, tx := range n2.SentTxs() {
			if tx.TxHash() == id {
				return false
			}
		}
		return !sentInFile(t, dir)[id]
	}
	waitUntil(t, 30*time.Second, "the conflicted tx to be forgotten", func() bool { return gone(lose.TxHash()) })
	if gone(keep.TxHash()) {
		t.Fatal("the unconfirmed tx was forgotten with the conflicted one")
	}
	h.MustGenerate(t, sentKeepDepth)
	waitLight(t, n2, h)
	if c, err := n2.Confirmations(ctx, keep.TxHash()); err != nil || c < 1 {
		t.Fatalf("the rebroadcast tx has %d confirmations (%v)", c, err)
	}
	waitUntil(t, 30*time.Second, "the buried tx to be forgotten", func() bool { return gone(keep.TxHash()) && len(sentInFile(t, dir)) == 0 })
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
