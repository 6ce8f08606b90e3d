package payment

// Zero-confirmation fundings on the light client.
//
// A seller on btcd checks an unconfirmed funding's inputs with gettxout
// (PrevOutSource). A light client has no UTXO set and no mempool, and it
// cannot look a transaction up by its id; what it can do is match the
// compact filters of the blocks it has the headers of against a script,
// and fetch (and check against its header chain) the blocks that match.
//
// So the seller needs, for each input, the script of the output it
// spends. The buyer sends nothing new: the input itself reveals it. A
// P2WPKH input's witness ends with the public key whose hash the output
// pays to, a nested P2SH-P2WPKH input's signature script is the redeem
// script the output hashes, a P2PKH input's signature script ends with the
// key. Any other input (taproot, multisig…) cannot be checked this way,
// and the funding waits for its confirmations with that reason.
//
// With the script, the seller scans the filters of the best chain from its
// tip down (RecentOutput): a block whose filter matches is fetched; a
// transaction in it that spends the input means the output is spent; the
// input's parent transaction in it gives the output (value and script from
// the block, not from the buyer). Going down, a spend is always met before
// the output it spends. The scan stops at the parent's block, so a young
// coin costs a few filters; it gives up after zeroConfLookback blocks (a
// week: about 20 MB of filters on mainnet, fetched in batches) and after
// zeroConfMaxMatches matching blocks per input (a reused address), and a
// funding with more than zeroConfMaxLightInputs inputs is not scanned at
// all: in each case the funding waits for its confirmations instead, with
// the reason in the channel's zero_conf_why. What the seller gets is the
// same guarantee as btcd's gettxout: every input was a confirmed output no
// block has spent; the script engine, the fee floor and the no-RBF rule
// apply as on btcd, and the seller broadcasts the funding itself.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/gcs/builder"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
	"github.com/lightninglabs/neutrino"
)

const (
	// zeroConfLookback is how many blocks down from the tip a light
	// seller looks for an input's parent.
	zeroConfLookback = 1008
	// zeroConfMaxMatches bounds the blocks fetched per input.
	zeroConfMaxMatches = 8
	// zeroConfMaxLightInputs bounds the inputs a light seller checks.
	zeroConfMaxLightInputs = 16
	// zeroConfFilterBatch is how many filters one query fetches (they
	// must fit the light client's filter cache).
	zeroConfFilterBatch = 50
	// zeroConfLightTimeout bounds the whole check of a funding's inputs
	// (a slow peer, an old coin on mainnet): past it the funding waits
	// for its confirmations.
	zeroConfLightTimeout = 30 * time.Second
	// zeroConfBroadcastWait is how long a light seller waits for its
	// peers to refuse a funding it broadcasts before working on it. A
	// peer that holds the transaction already (the buyer sent it) never
	// asks for it, and neutrino then waits out its whole broadcast
	// timeout (5 s); Bitcoin Core sends no refusals at all (BIP 61 is
	// gone), so the wait only hears btcd-like peers, which answer in
	// milliseconds. The broadcast goes on after it.
	zeroConfBroadcastWait = time.Second
)

// quickBroadcaster is what a Chain may also do: broadcast without waiting
// longer than wait for the peers' refusals (the light client).
type quickBroadcaster interface {
	BroadcastWithin(ctx context.Context, tx *wire.MsgTx, wait time.Duration) error
}

var _ quickBroadcaster = (*NeutrinoChain)(nil)

// BroadcastWithin implements quickBroadcaster: Broadcast, waiting at most
// wait for its answer; the transaction counts as this node's at once
// (Confirmations knows it), and a refusal that comes later is logged and
// forgets it.
func (n *NeutrinoChain) BroadcastWithin(ctx context.Context, tx *wire.MsgTx, wait time.Duration) error {
	txid := tx.TxHash()
	had := !n.addSent(tx)
	forget := func() {
		if !had {
			n.dropSent(txid)
		}
	}
	done := make(chan error, 1)
	go func() { done <- n.Broadcast(context.WithoutCancel(ctx), tx) }()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			forget()
		}
		return err
	case <-t.C:
	case <-ctx.Done():
	}
	go func() {
		if err := <-done; err != nil {
			forget()
			n.log.Info("light client: a peer refused a transaction after the wait", "txid", txid, "err", err)
		}
	}()
	return nil
}

// PrevOut is an output found in a block of the best chain.
type PrevOut struct {
	Out      *wire.TxOut
	Height   int32
	Coinbase bool
}

// ScriptPrevOutSource is what a Chain without a PrevOutSource may do
// instead (the light client): find an output through the script it pays
// to.
type ScriptPrevOutSource interface {
	// RecentOutput returns op, an output paying to pkScript, when a block
	// of the best chain at most within blocks below the tip holds it and
	// no block since spends it; otherwise an error that says which.
	RecentOutput(ctx context.Context, op wire.OutPoint, pkScript []byte, within int32) (*PrevOut, error)
}

var _ ScriptPrevOutSource = (*NeutrinoChain)(nil)

// RecentOutput implements ScriptPrevOutSource: the filters from the tip
// down, the matching blocks fetched, until the block holding op's
// transaction (see the top of this file).
func (n *NeutrinoChain) RecentOutput(ctx context.Context, op wire.OutPoint, pkScript []byte, within int32) (*PrevOut, error) {
	start, err := n.cs.BestBlock()
	if err != nil {
		return nil, fmt.Errorf("light client tip: %w", err)
	}
	low := max(start.Height-within+1, 1)
	matched := 0
	for h := start.Height; h >= low; h-- {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hash, err := n.cs.GetBlockHash(int64(h))
		if err != nil {
			return nil, fmt.Errorf("block hash %d: %w", h, err)
		}
		f, err := n.cs.GetCFilter(*hash, wire.GCSFilterRegular,
			neutrino.OptimisticReverseBatch(), neutrino.MaxBatchSize(zeroConfFilterBatch))
		if err != nil {
			return nil, fmt.Errorf("filter of block %d: %w", h, err)
		}
		if f == nil || f.N() == 0 {
			continue
		}
		if ok, err := f.Match(builder.DeriveKey(hash), pkScript); err != nil {
			return nil, fmt.Errorf("match filter of block %d: %w", h, err)
		} else if !ok {
			continue
		}
		if matched++; matched > zeroConfMaxMatches {
			return nil, fmt.Errorf("more than %d blocks since height %d match its script (a reused address)", zeroConfMaxMatches, h)
		}
		blk, err := n.block(ctx, *hash)
		if err != nil {
			return nil, err
		}
		for _, tx := range blk.Transactions {
			if spends(tx, op) {
				return nil, &spentError{by: tx.TxHash(), height: h}
			}
		}
		for i, tx := range blk.Transactions {
			if tx.TxHash() != op.Hash {
				continue
			}
			if int(op.Index) >= len(tx.TxOut) {
				return nil, fmt.Errorf("its transaction in block %d has no output %d", h, op.Index)
			}
			out := tx.TxOut[op.Index]
			if !bytes.Equal(out.PkScript, pkScript) {
				return nil, fmt.Errorf("the output in block %d pays another script than the input's", h)
			}
			// The scan and the answer hold for one best chain.
			if end, err := n.cs.BestBlock(); err != nil || end.Hash != start.Hash {
				return nil, fmt.Errorf("the chain moved during the check (tip %d)", start.Height)
			}
			return &PrevOut{Out: wire.NewTxOut(out.Value, bytes.Clone(out.PkScript)), Height: h, Coinbase: i == 0}, nil
		}
	}
	return nil, fmt.Errorf("no block of the last %d holds its transaction (unconfirmed, unknown, or older)", start.Height-low+1)
}

// spentError says a block spends the output looked for.
type spentError struct {
	by     chainhash.Hash
	height int32
}

func (e *spentError) Error() string { return fmt.Sprintf("spent by %s in block %d", e.by, e.height) }

// spentScript is the script of the output in spends, from what the input
// reveals: a P2WPKH witness's key, a P2SH-P2WPKH redeem script, a P2PKH
// signature script's key.
func spentScript(in *wire.TxIn, params *chaincfg.Params) ([]byte, error) {
	w, ss := in.Witness, in.SignatureScript
	if len(w) == 2 && len(w[1]) == 33 {
		if len(ss) == 0 {
			a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(w[1]), params)
			if err != nil {
				return nil, err
			}
			return txscript.PayToAddrScript(a)
		}
		// One push of the 22-byte redeem script OP_0 <20-byte hash>.
		if len(ss) == 23 && ss[0] == 22 && ss[1] == txscript.OP_0 && ss[2] == 20 {
			a, err := btcutil.NewAddressScriptHash(ss[1:], params)
			if err != nil {
				return nil, err
			}
			return txscript.PayToAddrScript(a)
		}
	}
	if len(w) == 0 && len(ss) > 0 {
		pushes, err := txscript.PushedData(ss)
		if err == nil && len(pushes) == 2 && (len(pushes[1]) == 33 || len(pushes[1]) == 65) {
			a, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(pushes[1]), params)
			if err != nil {
				return nil, err
			}
			return txscript.PayToAddrScript(a)
		}
	}
	return nil, fmt.Errorf("a light client finds only P2WPKH, P2SH-P2WPKH and P2PKH inputs")
}

// lightPrevOuts finds the outputs tx's inputs spend through the light
// client (src), each a confirmed, unspent, mature output; an error says
// why one is not.
func (m *Manager) lightPrevOuts(ctx context.Context, src ScriptPrevOutSource, tx *wire.MsgTx) ([]*wire.TxOut, error) {
	if len(tx.TxIn) > zeroConfMaxLightInputs {
		return nil, fmt.Errorf("%w: %d inputs; a light client checks at most %d", ErrNotZeroConf, len(tx.TxIn), zeroConfMaxLightInputs)
	}
	params, err := NetParams(m.cfg.Network)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotZeroConf, err)
	}
	tip, err := m.chain.Tip(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotZeroConf, err)
	}
	ctx, cancel := context.WithTimeout(ctx, zeroConfLightTimeout)
	defer cancel()
	outs := make([]*wire.TxOut, len(tx.TxIn))
	for i, ti := range tx.TxIn {
		pk, err := spentScript(ti, params)
		if err != nil {
			return nil, fmt.Errorf("%w: input %d (%s): %v", ErrNotZeroConf, i, ti.PreviousOutPoint, err)
		}
		p, err := src.RecentOutput(ctx, ti.PreviousOutPoint, pk, zeroConfLookback)
		if se := (*spentError)(nil); errors.As(err, &se) && se.by == tx.TxHash() {
			// Mined since the buyer sent it: it opens with its
			// confirmations (as on btcd, whose gettxout says spent).
			return nil, fmt.Errorf("%w: the funding is in block %d already", ErrNotZeroConf, se.height)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: input %d (%s) is not a confirmed unspent output the light client finds: %v", ErrNotZeroConf, i, ti.PreviousOutPoint, err)
		}
		if p.Coinbase && tip-p.Height+1 < int32(params.CoinbaseMaturity) {
			return nil, fmt.Errorf("%w: input %d (%s) is an immature coinbase output (block %d)", ErrNotZeroConf, i, ti.PreviousOutPoint, p.Height)
		}
		outs[i] = p.Out
	}
	return outs, nil
}
