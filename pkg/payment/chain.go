package payment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcjson"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
)

// Chain is what the payment code needs from a Bitcoin node. Implementations
// must be safe for concurrent use. Heights are block heights; a transaction
// reorged out of the chain reports fewer (or zero) confirmations again, and
// callers re-check rather than remember.
type Chain interface {
	// Broadcast submits tx to the mempool. Submitting a transaction the
	// node already has (mempool or chain) succeeds.
	Broadcast(ctx context.Context, tx *wire.MsgTx) error
	// FeeRate estimates a fee rate in sat/vB to confirm within target
	// blocks; ok is false when the node has no estimate.
	FeeRate(ctx context.Context, target int) (rate int64, ok bool, err error)
	// Tip is the best block height.
	Tip(ctx context.Context) (int32, error)
	// Confirmations of txid: >= 1 in a block of the best chain, 0 in the
	// mempool, -1 unknown to the node.
	Confirmations(ctx context.Context, txid chainhash.Hash) (int32, error)
	// SpendOf returns the transaction spending op, looking in the mempool
	// and in blocks from heightHint up; nil when op is unspent.
	SpendOf(ctx context.Context, op wire.OutPoint, heightHint int32) (*wire.MsgTx, error)
}

// FeeRate asks chain for an estimate and clamps it into the configured
// bounds, falling back to FallbackFeeRate when there is none.
func (c *Config) FeeRate(ctx context.Context, chain Chain, target int) int64 {
	r, _ := c.FeeRateSource(ctx, chain, target)
	return r
}

// WaitConfirmations polls until txid has at least n confirmations. It
// survives reorgs by re-reading the count each time, and calls rebroadcast
// (if not nil) whenever the node has forgotten the transaction.
func WaitConfirmations(ctx context.Context, chain Chain, txid chainhash.Hash, n int32, poll time.Duration, rebroadcast func() error) error {
	for {
		confs, err := chain.Confirmations(ctx, txid)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", txid, err)
		}
		if confs >= n {
			return nil
		}
		if confs < 0 && rebroadcast != nil {
			if err := rebroadcast(); err != nil {
				return fmt.Errorf("rebroadcast %s: %w", txid, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", txid, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// BtcdChain is the Chain backed by btcd's JSON-RPC (HTTP POST mode, so it
// needs no websocket and survives btcd restarts). Confirmations needs btcd
// to run with --txindex.
type BtcdChain struct {
	rpc *rpcclient.Client
	log *slog.Logger
}

var _ Chain = (*BtcdChain)(nil)

// DialBtcd connects to btcd as configured (no network I/O happens here).
func DialBtcd(cfg Config, log *slog.Logger) (*BtcdChain, error) {
	if err := cfg.checkRPC(); err != nil {
		return nil, err
	}
	cc := &rpcclient.ConnConfig{
		Host:         cfg.RPCHost,
		User:         cfg.RPCUser,
		Pass:         cfg.RPCPass,
		HTTPPostMode: true,
		DisableTLS:   cfg.RPCNoTLS,
	}
	if !cfg.RPCNoTLS && cfg.RPCCert != "" {
		pem, err := os.ReadFile(cfg.RPCCert)
		if err != nil {
			return nil, fmt.Errorf("read btcd rpc cert: %w", err)
		}
		cc.Certificates = pem
	}
	c, err := rpcclient.New(cc, nil)
	if err != nil {
		return nil, fmt.Errorf("btcd rpc client %s: %w", cfg.RPCHost, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BtcdChain{rpc: c, log: log}, nil
}

// RPC exposes the underlying client (tests mine and invalidate blocks).
func (b *BtcdChain) RPC() *rpcclient.Client { return b.rpc }

// Close shuts the client down.
func (b *BtcdChain) Close() { b.rpc.Shutdown() }

// Broadcast implements Chain.
func (b *BtcdChain) Broadcast(ctx context.Context, tx *wire.MsgTx) error {
	_, err := await(ctx, func() (*chainhash.Hash, error) { return b.rpc.SendRawTransaction(tx, false) })
	if err == nil {
		return nil
	}
	msg := err.Error()
	if strings.Contains(msg, "already have transaction") || strings.Contains(msg, "already exists") {
		return nil
	}
	return fmt.Errorf("broadcast %s: %w", tx.TxHash(), err)
}

// FeeRate implements Chain with btcd's estimatefee (BTC/kB).
func (b *BtcdChain) FeeRate(ctx context.Context, target int) (int64, bool, error) {
	btcPerKB, err := await(ctx, func() (float64, error) { return b.rpc.EstimateFee(int64(target)) })
	if err != nil || btcPerKB <= 0 {
		// btcd answers with an error until it has seen enough blocks.
		return 0, false, nil
	}
	return int64(btcPerKB * 1e8 / 1000), true, nil
}

// Tip implements Chain.
func (b *BtcdChain) Tip(ctx context.Context) (int32, error) {
	n, err := await(ctx, b.rpc.GetBlockCount)
	if err != nil {
		return 0, fmt.Errorf("get block count: %w", err)
	}
	return int32(n), nil
}

// Confirmations implements Chain.
func (b *BtcdChain) Confirmations(ctx context.Context, txid chainhash.Hash) (int32, error) {
	res, err := await(ctx, func() (*btcjson.TxRawResult, error) { return b.rpc.GetRawTransactionVerbose(&txid) })
	if err != nil {
		var rerr *btcjson.RPCError
		if errors.As(err, &rerr) && rerr.Code == btcjson.ErrRPCNoTxInfo {
			return -1, nil
		}
		return 0, fmt.Errorf("get transaction %s: %w", txid, err)
	}
	return int32(res.Confirmations), nil
}

// SpendOf implements Chain: an unspent op is answered by gettxout; otherwise
// the mempool and then the blocks from heightHint are searched.
func (b *BtcdChain) SpendOf(ctx context.Context, op wire.OutPoint, heightHint int32) (*wire.MsgTx, error) {
	out, err := await(ctx, func() (*btcjson.GetTxOutResult, error) { return b.rpc.GetTxOut(&op.Hash, op.Index, true) })
	if err != nil {
		return nil, fmt.Errorf("gettxout %s: %w", op, err)
	}
	if out != nil {
		return nil, nil
	}
	// Either spent, or the creating transaction is not known (yet, or
	// anymore after a reorg): look for a spender.
	pool, err := await(ctx, b.rpc.GetRawMempool)
	if err != nil {
		return nil, fmt.Errorf("get mempool: %w", err)
	}
	for _, h := range pool {
		tx, err := await(ctx, func() (*btcutil.Tx, error) { return b.rpc.GetRawTransaction(h) })
		if err != nil {
			continue // left the mempool meanwhile
		}
		if spends(tx.MsgTx(), op) {
			return tx.MsgTx(), nil
		}
	}
	tip, err := b.Tip(ctx)
	if err != nil {
		return nil, err
	}
	if heightHint < 1 {
		heightHint = 1
	}
	for h := tip; h >= heightHint; h-- {
		hash, err := await(ctx, func() (*chainhash.Hash, error) { return b.rpc.GetBlockHash(int64(h)) })
		if err != nil {
			return nil, fmt.Errorf("block hash %d: %w", h, err)
		}
		blk, err := await(ctx, func() (*wire.MsgBlock, error) { return b.rpc.GetBlock(hash) })
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", h, err)
		}
		for _, tx := range blk.Transactions {
			if spends(tx, op) {
				return tx, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, nil
}

// await runs a blocking btcd call and returns its result, or ctx's error as
// soon as ctx ends: rpcclient's calls take no context and retry a dead btcd
// for about 20 s, which would hold up a shutdown or a command. The call
// itself finishes (or gives up) in the background.
func await[T any](ctx context.Context, call func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func spends(tx *wire.MsgTx, op wire.OutPoint) bool {
	for _, in := range tx.TxIn {
		if in.PreviousOutPoint == op {
			return true
		}
	}
	return false
}

func chainHash(s string) (chainhash.Hash, error) {
	h, err := chainhash.NewHashFromStr(s)
	if err != nil {
		return chainhash.Hash{}, fmt.Errorf("txid %q: %w", s, err)
	}
	return *h, nil
}

// checkRPC names the missing btcd connection settings.
func (c *Config) checkRPC() error {
	if c.RPCUser == "" || c.RPCPass == "" {
		return errors.New("payment.rpc_user and payment.rpc_pass must be set: btcd's RPC needs them (see deploy/dev/btcd.sh start)")
	}
	return nil
}
