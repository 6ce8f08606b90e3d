//go:build integration

package payment

import (
	"context"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// backends are the chain sources the regtest tests run against.
var backends = []string{BackendBtcd, BackendNeutrino}

// onBackends runs test once per chain backend, as subtests.
func onBackends(t *testing.T, test func(t *testing.T, backend string)) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) { test(t, b) })
	}
}

// startLight starts a light client syncing from h over P2P (and only from
// it) and waits until it has h's tip.
func startLight(t testing.TB, h *btcdtest.Harness) *NeutrinoChain {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Network, cfg.Backend, cfg.Peers = "regtest", BackendNeutrino, []string{h.P2PHost}
	n, err := StartNeutrino(cfg, t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	waitLight(t, n, h)
	return n
}

// waitLight waits until the light client's tip (headers and filter
// headers) is btcd's.
func waitLight(t testing.TB, n *NeutrinoChain, h *btcdtest.Harness) {
	t.Helper()
	want := h.Tip(t)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := n.Tip(context.Background())
		if err == nil && got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("light client at %d (err %v), btcd at %d; btcd log:\n%s", got, err, want, h.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRegtestNeutrinoChain: the light client against a real btcd over
// P2P: tip, broadcast, confirmations and spends found through filters,
// and the fee rate from recent blocks.
func TestRegtestNeutrinoChain(t *testing.T) {
	h := btcdtest.Start(t, 5)
	n := startLight(t, h)
	ctx := context.Background()
	if tip, _ := n.Tip(ctx); tip != h.Tip(t) {
		t.Fatalf("tip %d, btcd %d", tip, h.Tip(t))
	}
	info, err := n.Info(ctx)
	if err != nil || info.Network != "regtest" || info.Peers != 1 {
		t.Fatalf("info %+v, %v; want regtest with 1 peer", info, err)
	}
	// Only empty blocks so far: no rate from blocks.
	if _, src, ok := n.FeeRateFrom(ctx, 6); ok || src != FeeFromFallback {
		t.Fatalf("fee rate on empty blocks: %s %v, want none", src, ok)
	}
	hint := h.Tip(t)

	// An output to a key of ours, funded by the harness and broadcast
	// through the light client.
	key := mustKey(t)
	addr, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), btcdtest.Params)
	pk, _ := txscript.PayToAddrScript(addr)
	fund, err := h.FundTx(ctx, []*wire.TxOut{wire.NewTxOut(200_000, pk)}, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Broadcast(ctx, fund); err != nil {
		t.Fatal(err)
	}
	if err := n.Broadcast(ctx, fund); err != nil {
		t.Fatalf("broadcast twice: %v", err)
	}
	waitMempool(t, h, fund)
	if c, err := n.ConfirmationsOf(ctx, fund.TxHash(), pk, hint); err != nil || c != 0 {
		t.Fatalf("unconfirmed own tx: %d %v, want 0", c, err)
	}
	op := wire.OutPoint{Hash: fund.TxHash(), Index: 0}
	if sp, err := n.SpendOfScript(ctx, op, pk, hint); err != nil || sp != nil {
		t.Fatalf("spend of unspent output: %v %v", sp, err)
	}
	h.MustGenerate(t, 1)
	waitLight(t, n, h)
	if c, err := n.ConfirmationsOf(ctx, fund.TxHash(), pk, hint); err != nil || c != 1 {
		t.Fatalf("confirmations %d %v, want 1", c, err)
	}
	// By txid alone: the light client knows its own broadcasts.
	if c, err := n.Confirmations(ctx, fund.TxHash()); err != nil || c != 1 {
		t.Fatalf("confirmations by txid %d %v, want 1", c, err)
	}
	// A block with a paying transaction gives a rate from blocks: the
	// harness paid 5 sat/vB.
	r, src, ok := n.FeeRateFrom(ctx, 6)
	if !ok || src != FeeFromBlocks || r < 4 || r > 6 {
		t.Fatalf("fee rate %d from %s (%v), want about 5 from blocks", r, src, ok)
	}
	cfg := DefaultConfig()
	cfg.MaxFeeRate = 3
	if got, src := cfg.FeeRateSource(ctx, n, 6); got != 3 || src != FeeFromBlocks {
		t.Fatalf("clamped rate %d from %s, want 3 from blocks", got, src)
	}

	// A spend made elsewhere (btcd's RPC, not the light client) is found
	// through the filters once mined.
	spend := wire.NewMsgTx(2)
	spend.AddTxIn(wire.NewTxIn(&op, nil, nil))
	spend.AddTxOut(wire.NewTxOut(199_000, pk))
	fetch := txscript.NewCannedPrevOutputFetcher(pk, 200_000)
	wit, err := txscript.WitnessSignature(spend, txscript.NewTxSigHashes(spend, fetch), 0, 200_000, pk, txscript.SigHashAll, key, true)
	if err != nil {
		t.Fatal(err)
	}
	spend.TxIn[0].Witness = wit
	if _, err := h.Client().SendRawTransaction(spend, false); err != nil {
		t.Fatal(err)
	}
	if sp, _ := n.SpendOfScript(ctx, op, pk, hint); sp != nil {
		t.Fatal("a light client saw an unconfirmed spend it did not send")
	}
	if c, _ := n.ConfirmationsOf(ctx, spend.TxHash(), pk, hint); c != -1 {
		t.Fatalf("someone else's unconfirmed tx: %d confirmations, want -1", c)
	}
	blocks := h.MustGenerate(t, 2)
	waitLight(t, n, h)
	sp, err := n.SpendOfScript(ctx, op, pk, hint)
	if err != nil || sp == nil || sp.TxHash() != spend.TxHash() {
		t.Fatalf("spend %v, %v; want %s", sp, err, spend.TxHash())
	}
	if c, err := n.ConfirmationsOf(ctx, spend.TxHash(), pk, hint); err != nil || c != 2 {
		t.Fatalf("spend confirmations %d %v, want 2", c, err)
	}

	// A reorg: the spend's block and the next leave the best chain; the
	// spend comes back in the longer branch, one block deeper down.
	if err := h.InvalidateBlock(blocks[0]); err != nil {
		t.Fatal(err)
	}
	h.MustGenerate(t, 3)
	waitLight(t, n, h)
	res, err := h.Client().GetRawTransactionVerbose(ptr(spend.TxHash()))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := n.ConfirmationsOf(ctx, spend.TxHash(), pk, hint); err != nil || int64(c) != int64(res.Confirmations) || res.BlockHash == blocks[0].String() {
		t.Fatalf("after reorg: %d confirmations (%v), btcd says %d in %s", c, err, res.Confirmations, res.BlockHash)
	}
}

func waitMempool(t testing.TB, h *btcdtest.Harness, tx *wire.MsgTx) {
	t.Helper()
	txid := tx.TxHash()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := h.Client().GetRawTransaction(&txid); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached btcd's mempool; btcd log:\n%s", txid, h.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
