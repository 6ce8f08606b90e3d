// Package paytest has in-memory stand-ins for the payment package's chain
// and wallet, for unit tests, fuzzing and benchmarks that must not need a
// btcd (the contract code's tests use them too). They check no scripts: the
// real-chain tests use btcdtest.
package paytest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Chain is an in-memory chain: broadcast transactions enter a mempool,
// Mine confirms them, and confirmations count from the block they entered.
type Chain struct {
	mu       sync.Mutex
	height   int32
	mined    map[chainhash.Hash]int32 // txid → block height
	txs      map[chainhash.Hash]*wire.MsgTx
	Rate     int64 // FeeRate answer; 0 means "no estimate"
	BcastErr error // if set, Broadcast fails with it
}

// NewChain starts at height 1000.
func NewChain() *Chain {
	return &Chain{height: 1000, mined: map[chainhash.Hash]int32{}, txs: map[chainhash.Hash]*wire.MsgTx{}}
}

// Broadcast implements payment.Chain.
func (c *Chain) Broadcast(ctx context.Context, tx *wire.MsgTx) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.BcastErr != nil {
		return c.BcastErr
	}
	c.txs[tx.TxHash()] = tx
	return nil
}

// FeeRate implements payment.Chain.
func (c *Chain) FeeRate(ctx context.Context, target int) (int64, bool, error) {
	return c.Rate, c.Rate > 0, nil
}

// Tip implements payment.Chain.
func (c *Chain) Tip(ctx context.Context) (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.height, nil
}

// Confirmations implements payment.Chain.
func (c *Chain) Confirmations(ctx context.Context, txid chainhash.Hash) (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.mined[txid]; ok {
		return c.height - h + 1, nil
	}
	if _, ok := c.txs[txid]; ok {
		return 0, nil
	}
	return -1, nil
}

// SpendOf implements payment.Chain.
func (c *Chain) SpendOf(ctx context.Context, op wire.OutPoint, hint int32) (*wire.MsgTx, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tx := range c.txs {
		for _, in := range tx.TxIn {
			if in.PreviousOutPoint == op {
				return tx, nil
			}
		}
	}
	return nil, nil
}

// Mine adds n blocks, confirming everything in the mempool in the first.
func (c *Chain) Mine(n int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := int32(0); i < n; i++ {
		c.height++
		for id := range c.txs {
			if _, ok := c.mined[id]; !ok {
				c.mined[id] = c.height
			}
		}
	}
}

// Funder pays outputs from an imaginary coin; every call gets a distinct
// input, so distinct channels get distinct funding outpoints.
type Funder struct {
	mu     sync.Mutex
	n      uint64
	Script []byte
	// Chain, if set, receives what PublishTx publishes.
	Chain *Chain
}

// NewFunder returns a funder publishing to chain (may be nil) whose change
// and refunds go to a fixed P2WPKH.
func NewFunder(chain *Chain) *Funder {
	return &Funder{Chain: chain, Script: append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0xab}, 20)...)}
}

// FundTx implements payment.Funder.
func (f *Funder) FundTx(ctx context.Context, outs []*wire.TxOut, feeRate int64) (*wire.MsgTx, error) {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	tx := wire.NewMsgTx(2)
	prev := sha256.Sum256(binary.BigEndian.AppendUint64(nil, n))
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: prev}, nil, wire.TxWitness{make([]byte, 72), make([]byte, 33)}))
	for _, o := range outs {
		tx.AddTxOut(o)
	}
	tx.AddTxOut(wire.NewTxOut(100_000, f.Script))
	return tx, nil
}

// NewScript implements payment.Funder.
func (f *Funder) NewScript(ctx context.Context) ([]byte, error) { return bytes.Clone(f.Script), nil }

// PublishTx implements payment.Funder: into Chain's mempool when set.
func (f *Funder) PublishTx(ctx context.Context, tx *wire.MsgTx) error {
	if f.Chain == nil {
		return nil
	}
	return f.Chain.Broadcast(ctx, tx)
}

// MineEmpty adds n blocks that confirm nothing: what the mempool holds
// stays unconfirmed (a fee below what miners take).
func (c *Chain) MineEmpty(n int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.height += n
}

// Mined is every mined transaction from height from on, with its height.
func (c *Chain) Mined(from int32) map[*wire.MsgTx]int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[*wire.MsgTx]int32{}
	for id, h := range c.mined {
		if h >= from {
			out[c.txs[id]] = h
		}
	}
	return out
}
