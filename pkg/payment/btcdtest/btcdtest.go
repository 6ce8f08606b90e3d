// Package btcdtest starts a real btcd in regtest for tests: private data
// dir, loopback RPC on a free port, --rejectnonstd so that non-standard
// scripts are refused as on mainnet, --txindex, and a miner key the harness
// holds, so it can mine, fund outputs from matured coinbases and invalidate
// blocks to force reorgs. It is reused by the payment, contract and demo
// tests; it does not import the payment package.
package btcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/integration/rpctest"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/internal/netlab"
)

// Params are the chain parameters of every harness.
var Params = &chaincfg.RegressionNetParams

// CoinbaseMaturity is how deep a coinbase must be before it can be spent.
const CoinbaseMaturity = 100

// Harness is one running btcd regtest node.
type Harness struct {
	// RPCHost, RPCUser and RPCPass reach the node (no TLS, loopback).
	RPCHost, RPCUser, RPCPass string
	// P2PHost is where the node listens for Bitcoin peers (loopback): a
	// light client syncs from it (compact filters are served).
	P2PHost string
	// Dir is the node's data and log dir.
	Dir string

	cmd    *exec.Cmd
	done   chan struct{}
	client *rpcclient.Client
	key    *btcec.PrivateKey
	script []byte

	mu    sync.Mutex
	utxos []utxo
}

type utxo struct {
	op    wire.OutPoint
	value int64
}

// Binary finds the btcd binary: $BLACKBOX_TEST_BTCD, else build/bin/btcd
// above the working directory, else PATH. It returns "" when none exists.
func Binary() string {
	if p := os.Getenv("BLACKBOX_TEST_BTCD"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if dir, err := os.Getwd(); err == nil {
		for d := dir; ; d = filepath.Dir(d) {
			p := filepath.Join(d, "build", "bin", "btcd")
			if _, err := os.Stat(p); err == nil {
				return p
			}
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
				break
			}
		}
	}
	if p, err := exec.LookPath("btcd"); err == nil {
		return p
	}
	return ""
}

// Start runs a fresh btcd regtest node for t, stopped by t.Cleanup. Without
// a btcd binary the test is skipped with the reason, except under CI=true,
// where it fails; with -short (the unit tier) it is skipped. Start mines CoinbaseMaturity+mature blocks so that
// `mature` coinbases are spendable.
func Start(t testing.TB, mature int) *Harness {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a btcd regtest node: not in -short (unit tier)")
	}
	bin := Binary()
	if bin == "" {
		msg := "btcd binary not found (set BLACKBOX_TEST_BTCD or run deploy/dev/btcd.sh install build)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	h, err := start(bin, t.TempDir())
	if err != nil {
		t.Fatalf("start btcd: %v", err)
	}
	t.Cleanup(h.Stop)
	if mature > 0 {
		if _, err := h.Generate(uint32(CoinbaseMaturity + mature)); err != nil {
			t.Fatalf("mine initial blocks: %v", err)
		}
	}
	return h
}

func start(bin, dir string) (*Harness, error) {
	key, err := btcec.NewPrivateKey()
	if err != nil {
		return nil, err
	}
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), Params)
	if err != nil {
		return nil, err
	}
	script, _ := txscript.PayToAddrScript(addr)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := netlab.LoopbackPort() // Resume starts btcd on it again
		if err != nil {
			return nil, err
		}
		p2p, err := netlab.LoopbackPort()
		if err != nil {
			return nil, err
		}
		h := &Harness{
			RPCHost: "127.0.0.1:" + strconv.Itoa(port), RPCUser: "u", RPCPass: "p",
			P2PHost: "127.0.0.1:" + strconv.Itoa(p2p),
			Dir:     dir, key: key, script: script, done: make(chan struct{}),
		}
		conf := filepath.Join(dir, "btcd.conf")
		if err := os.WriteFile(conf, nil, 0o600); err != nil {
			return nil, err
		}
		h.cmd = exec.Command(bin, "--configfile="+conf, "--regtest", "--datadir="+dir, "--logdir="+dir,
			"--rpcuser=u", "--rpcpass=p", "--rpclisten="+h.RPCHost, "--notls", "--listen="+h.P2PHost,
			"--rejectnonstd", "--txindex", "--miningaddr="+addr.EncodeAddress(), "--debuglevel=info",
			// Many nodes share one btcd in the multi-node tests; btcd
			// answers 503 beyond 10 requests at once by default, and
			// refuses a wallet's websocket beyond 25 (the wallet then
			// retries until its open times out: a fresh node hung over
			// a minute in "creating the node's wallet").
			"--rpcmaxclients=200", "--rpcmaxwebsockets=200")
		var out bytes.Buffer
		h.cmd.Stdout, h.cmd.Stderr = &out, &out
		if err := h.cmd.Start(); err != nil {
			return nil, fmt.Errorf("run %s: %w", bin, err)
		}
		go func() { _ = h.cmd.Wait(); close(h.done) }()
		if err := h.connect(); err != nil {
			h.Stop()
			lastErr = fmt.Errorf("%w; btcd output: %s", err, out.String())
			continue
		}
		return h, nil
	}
	return nil, lastErr
}

func (h *Harness) connect() error {
	c, err := rpcclient.New(&rpcclient.ConnConfig{
		Host: h.RPCHost, User: h.RPCUser, Pass: h.RPCPass, HTTPPostMode: true, DisableTLS: true,
	}, nil)
	if err != nil {
		return err
	}
	h.client = c
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err = c.GetBlockCount(); err == nil {
			return nil
		}
		select {
		case <-h.done:
			return errors.New("btcd exited")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("btcd rpc not ready: %w", err)
		}
	}
}

// Stop kills the node and waits for it; stopping twice is fine.
func (h *Harness) Stop() {
	if h.client != nil {
		h.client.Shutdown()
	}
	h.Pause()
}

// Client is the harness's RPC client.
func (h *Harness) Client() *rpcclient.Client { return h.client }

// Generate mines n blocks and remembers their coinbases as spendable once
// mature.
func (h *Harness) Generate(n uint32) ([]*chainhash.Hash, error) {
	hashes, err := h.client.Generate(n)
	if err != nil {
		return nil, fmt.Errorf("generate %d: %w", n, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, bh := range hashes {
		blk, err := h.client.GetBlock(bh)
		if err != nil {
			return nil, fmt.Errorf("get block %s: %w", bh, err)
		}
		cb := blk.Transactions[0]
		for i, o := range cb.TxOut {
			if bytes.Equal(o.PkScript, h.script) {
				h.utxos = append(h.utxos, utxo{op: wire.OutPoint{Hash: cb.TxHash(), Index: uint32(i)}, value: o.Value})
			}
		}
	}
	return hashes, nil
}

// MustGenerate is Generate for tests.
func (h *Harness) MustGenerate(t testing.TB, n uint32) []*chainhash.Hash {
	t.Helper()
	hs, err := h.Generate(n)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// Tip is the best height.
func (h *Harness) Tip(t testing.TB) int32 {
	t.Helper()
	n, err := h.client.GetBlockCount()
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

// InvalidateBlock marks a block invalid, disconnecting it and its
// descendants (their transactions return to the mempool).
func (h *Harness) InvalidateBlock(hash *chainhash.Hash) error {
	return h.client.InvalidateBlock(hash)
}

// NewScript implements the buyer wallet's NewScript for tests: everything
// goes back to the miner key.
func (h *Harness) NewScript(ctx context.Context) ([]byte, error) {
	return bytes.Clone(h.script), nil
}

// FundTx builds and signs (without broadcasting) a transaction paying outs
// from the harness's matured coins at feeRate sat/vB, change back to the
// miner key. It has the shape of payment.Funder.
func (h *Harness) FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var need int64
	for _, o := range outs {
		need += o.Value
	}
	for i, u := range h.utxos {
		res, err := h.client.GetTxOut(&u.op.Hash, u.op.Index, true)
		if err != nil || res == nil {
			continue
		}
		if res.Coinbase && res.Confirmations < CoinbaseMaturity {
			continue
		}
		tx := wire.NewMsgTx(2)
		tx.AddTxIn(wire.NewTxIn(&u.op, nil, wire.TxWitness{make([]byte, 73), make([]byte, 33)}))
		for _, o := range outs {
			tx.AddTxOut(o)
		}
		tx.AddTxOut(wire.NewTxOut(0, h.script))
		weight := int64(tx.SerializeSizeStripped())*3 + int64(tx.SerializeSize())
		fee := feeRate * ((weight + 3) / 4)
		change := u.value - need - fee
		if change < 1000 {
			continue
		}
		tx.TxOut[len(tx.TxOut)-1].Value = change
		fetch := txscript.NewCannedPrevOutputFetcher(h.script, u.value)
		wit, err := txscript.WitnessSignature(tx, txscript.NewTxSigHashes(tx, fetch), 0, u.value, h.script, txscript.SigHashAll, h.key, true)
		if err != nil {
			return nil, err
		}
		tx.TxIn[0].Witness = wit
		h.utxos = append(h.utxos[:i:i], h.utxos[i+1:]...)
		h.utxos = append(h.utxos, utxo{op: wire.OutPoint{Hash: tx.TxHash(), Index: uint32(len(tx.TxOut) - 1)}, value: change})
		return tx, nil
	}
	return nil, fmt.Errorf("harness: no mature coin covers %d sat", need)
}

// PublishTx broadcasts tx (the harness as a buyer's wallet).
func (h *Harness) PublishTx(ctx context.Context, tx *wire.MsgTx) error {
	if _, err := h.client.SendRawTransaction(tx, false); err != nil {
		return fmt.Errorf("publish %s: %w", tx.TxHash(), err)
	}
	return nil
}

// Send funds pkScript with amount, broadcasts, and returns the transaction
// and the output index.
func (h *Harness) Send(pkScript []byte, amount int64) (*wire.MsgTx, uint32, error) {
	tx, err := h.FundTx(context.Background(), []*wire.TxOut{wire.NewTxOut(amount, pkScript)}, 2)
	if err != nil {
		return nil, 0, err
	}
	if _, err := h.client.SendRawTransaction(tx, false); err != nil {
		return nil, 0, fmt.Errorf("send funding: %w", err)
	}
	return tx, 0, nil
}

// Balance is what the chain holds for pkScript among the outputs of the
// given transactions that are still unspent (confirmed or not).
func (h *Harness) Balance(pkScript []byte, txs ...*wire.MsgTx) (int64, error) {
	var s int64
	for _, tx := range txs {
		for i, o := range tx.TxOut {
			if !bytes.Equal(o.PkScript, pkScript) {
				continue
			}
			txid := tx.TxHash()
			res, err := h.client.GetTxOut(&txid, uint32(i), true)
			if err != nil {
				return 0, err
			}
			if res != nil {
				s += o.Value
			}
		}
	}
	return s, nil
}

// Logs returns the tail of btcd's log, for failure messages.
func (h *Harness) Logs() string {
	b, _ := os.ReadFile(filepath.Join(h.Dir, "regtest", "btcd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// MinePackages mines one block the way a fee-minded miner does, not as
// btcd's `generate` (which takes every mempool transaction): it includes a
// mempool transaction only when its package (it and its unconfirmed
// ancestors) pays at least minRate sat/vB, ancestors first. A child that
// pays for its parent (CPFP) thereby gets the parent mined, and a
// transaction below minRate stays in the mempool however many blocks are
// mined. The block is built and solved here and submitted with submitblock.
func (h *Harness) MinePackages(minRate int64) (*chainhash.Hash, []chainhash.Hash, error) {
	pool, err := h.client.GetRawMempoolVerbose()
	if err != nil {
		return nil, nil, fmt.Errorf("mempool: %w", err)
	}
	// ancestors returns txid and its unconfirmed ancestors, parents first.
	var ancestors func(id string, seen map[string]bool, out []string) []string
	ancestors = func(id string, seen map[string]bool, out []string) []string {
		if seen[id] {
			return out
		}
		seen[id] = true
		for _, d := range pool[id].Depends {
			if _, ok := pool[d]; ok {
				out = ancestors(d, seen, out)
			}
		}
		return append(out, id)
	}
	included := map[string]bool{}
	var order []string
	ids := make([]string, 0, len(pool))
	for id := range pool {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		pkg := ancestors(id, map[string]bool{}, nil)
		var fee, vsize float64
		for _, a := range pkg {
			if included[a] {
				continue
			}
			fee += pool[a].Fee * 1e8
			vsize += float64(pool[a].Vsize)
		}
		if vsize == 0 || fee/vsize < float64(minRate) {
			continue
		}
		for _, a := range pkg {
			if !included[a] {
				included[a] = true
				order = append(order, a)
			}
		}
	}
	var txs []*btcutil.Tx
	var mined []chainhash.Hash
	for _, id := range order {
		hash, err := chainhash.NewHashFromStr(id)
		if err != nil {
			return nil, nil, err
		}
		tx, err := h.client.GetRawTransaction(hash)
		if err != nil {
			return nil, nil, fmt.Errorf("mempool tx %s: %w", id, err)
		}
		txs = append(txs, tx)
		mined = append(mined, *hash)
	}
	best, err := h.client.GetBestBlockHash()
	if err != nil {
		return nil, nil, err
	}
	prev, err := h.client.GetBlock(best)
	if err != nil {
		return nil, nil, err
	}
	height, err := h.client.GetBlockCount()
	if err != nil {
		return nil, nil, err
	}
	pb := btcutil.NewBlock(prev)
	pb.SetHeight(int32(height))
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(h.key.PubKey().SerializeCompressed()), Params)
	if err != nil {
		return nil, nil, err
	}
	blk, err := rpctest.CreateBlock(pb, txs, 0x20000000, time.Time{}, addr, nil, Params)
	if err != nil {
		return nil, nil, fmt.Errorf("build block: %w", err)
	}
	if err := h.client.SubmitBlock(blk, nil); err != nil {
		return nil, nil, fmt.Errorf("submit block: %w", err)
	}
	return blk.Hash(), mined, nil
}

// MineTxs mines one block holding exactly txs (after the coinbase), built
// here and submitted with submitblock: a transaction the mempool would
// refuse (one in conflict with a mempool transaction that does not signal
// replacement) is mined as a miner that received it directly would.
func (h *Harness) MineTxs(txs ...*wire.MsgTx) (*chainhash.Hash, error) {
	best, err := h.client.GetBestBlockHash()
	if err != nil {
		return nil, err
	}
	prev, err := h.client.GetBlock(best)
	if err != nil {
		return nil, err
	}
	height, err := h.client.GetBlockCount()
	if err != nil {
		return nil, err
	}
	pb := btcutil.NewBlock(prev)
	pb.SetHeight(int32(height))
	addr, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(h.key.PubKey().SerializeCompressed()), Params)
	if err != nil {
		return nil, err
	}
	var in []*btcutil.Tx
	for _, tx := range txs {
		in = append(in, btcutil.NewTx(tx))
	}
	blk, err := rpctest.CreateBlock(pb, in, 0x20000000, time.Time{}, addr, nil, Params)
	if err != nil {
		return nil, fmt.Errorf("build block: %w", err)
	}
	if err := h.client.SubmitBlock(blk, nil); err != nil {
		return nil, fmt.Errorf("submit block: %w", err)
	}
	return blk.Hash(), nil
}

// Conflict returns a signed transaction spending the same inputs as tx
// (which must all be the harness's coins, as FundTx makes) back to the
// miner key, paying feeRate sat/vB: a double-spend of tx.
func (h *Harness) Conflict(tx *wire.MsgTx, feeRate int64) (*wire.MsgTx, error) {
	out := wire.NewMsgTx(2)
	prevs := txscript.NewMultiPrevOutFetcher(nil)
	var total int64
	for _, in := range tx.TxIn {
		prev, err := h.client.GetRawTransaction(&in.PreviousOutPoint.Hash)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", in.PreviousOutPoint, err)
		}
		po := prev.MsgTx().TxOut[in.PreviousOutPoint.Index]
		if !bytes.Equal(po.PkScript, h.script) {
			return nil, fmt.Errorf("input %s is not the harness's", in.PreviousOutPoint)
		}
		prevs.AddPrevOut(in.PreviousOutPoint, po)
		total += po.Value
		out.AddTxIn(wire.NewTxIn(&in.PreviousOutPoint, nil, wire.TxWitness{make([]byte, 73), make([]byte, 33)}))
	}
	out.AddTxOut(wire.NewTxOut(0, h.script))
	weight := int64(out.SerializeSizeStripped())*3 + int64(out.SerializeSize())
	out.TxOut[0].Value = total - feeRate*((weight+3)/4)
	hashes := txscript.NewTxSigHashes(out, prevs)
	for i, in := range out.TxIn {
		po := prevs.FetchPrevOutput(in.PreviousOutPoint)
		wit, err := txscript.WitnessSignature(out, hashes, i, po.Value, po.PkScript, txscript.SigHashAll, h.key, true)
		if err != nil {
			return nil, err
		}
		out.TxIn[i].Witness = wit
	}
	return out, nil
}
