package payment

// Zero-confirmation fundings on the light client.
//
// A seller on btcd checks an unconfirmed funding's inputs with gettxout
// (PrevOutSource). A light client has no UTXO set and no mempool, and it
// cannot look a transaction up by its id; what it can do is match the
// compact filters of the blocks it has the headers of against a script,
// and fetch (and check against its header chain) the blocks that match.
//
// So the seller needs, for each input, the output it spends. Two ways:
//
//   - The buyer's hint (openhints.go): the height of the block holding the
//     input's parent transaction, from its wallet. The seller fetches that
//     one block (checked against its header chain), takes the output from
//     it, and scans the filters from the next block up to the tip for a
//     spend (OutputAt). Any coin age works, at one block fetch per input
//     and one filter per block since; a wrong hint is a refusal of the
//     zero-conf start, nothing more. A taproot key-path input, which
//     reveals only a signature, is found this way only. The filters since
//     are what an old coin costs (about 20 KB a block on mainnet: a month
//     is some 90 MB); zeroConfLightTimeout bounds the check, and past it
//     the funding waits for its confirmations.
//   - Without a hint, the script the input reveals (spentScript): a P2WPKH
//     witness's key, a nested P2SH-P2WPKH or P2SH-P2WSH redeem script, a
//     P2WSH witness script, a taproot script path's leaf and control
//     block, a P2PKH signature script's key, a P2SH redeem script.
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
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil"
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
		blk, err := n.matchingBlock(ctx, h, op, pkScript, neutrino.OptimisticReverseBatch(), &matched, h)
		if err != nil {
			return nil, err
		}
		if blk == nil {
			continue
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
// reveals: a P2WPKH witness's key, a P2SH-P2WPKH or P2SH-P2WSH redeem
// script, a P2WSH witness script, a taproot script path's leaf and control
// block (the output key is the internal key tweaked with the root they
// give), a P2PKH signature script's key, a P2SH signature script's redeem
// script. A taproot key-path spend reveals only a signature: its output is
// found through the buyer's height hint (OutputAt) or not at all. What a
// wrong guess costs is a refusal: the output is taken from the block, and
// the script engine checks the input against it.
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
	if len(w) > 0 {
		if len(ss) == 0 {
			if pk, ok := taprootScriptPath(w); ok {
				return pk, nil
			}
		}
		ws := w[len(w)-1]
		if len(w) < 2 || len(ws) == 0 || len(ws) > txscript.MaxScriptSize {
			return nil, errors.New("a taproot key-path input (or an unknown witness) needs the buyer's height hint")
		}
		h := sha256.Sum256(ws)
		redeem := append([]byte{txscript.OP_0, 32}, h[:]...)
		switch {
		case len(ss) == 0:
			return redeem, nil
		case len(ss) == 35 && ss[0] == 34 && bytes.Equal(ss[1:], redeem):
			a, err := btcutil.NewAddressScriptHash(redeem, params)
			if err != nil {
				return nil, err
			}
			return txscript.PayToAddrScript(a)
		}
		return nil, errors.New("a witness input with a signature script other than a P2SH-P2WSH redeem script")
	}
	if len(ss) > 0 {
		pushes, err := txscript.PushedData(ss)
		if err == nil && len(pushes) == 2 && (len(pushes[1]) == 33 || len(pushes[1]) == 65) {
			a, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(pushes[1]), params)
			if err != nil {
				return nil, err
			}
			return txscript.PayToAddrScript(a)
		}
		// P2SH: the last push is the redeem script (a multisig…).
		if err == nil && len(pushes) >= 2 && len(pushes[len(pushes)-1]) > 0 && txscript.IsPushOnlyScript(ss) {
			a, err := btcutil.NewAddressScriptHash(pushes[len(pushes)-1], params)
			if err != nil {
				return nil, err
			}
			return txscript.PayToAddrScript(a)
		}
	}
	return nil, fmt.Errorf("a light client cannot tell which script this input spends")
}

// taprootScriptPath is the P2TR script of a taproot script-path witness
// (…, leaf script, control block[, annex]).
func taprootScriptPath(w wire.TxWitness) ([]byte, bool) {
	if len(w) >= 2 && len(w[len(w)-1]) > 0 && w[len(w)-1][0] == txscript.TaprootAnnexTag {
		w = w[:len(w)-1]
	}
	if len(w) < 2 {
		return nil, false
	}
	cb, err := txscript.ParseControlBlock(w[len(w)-1])
	if err != nil {
		return nil, false
	}
	key := txscript.ComputeTaprootOutputKey(cb.InternalKey, cb.RootHash(w[len(w)-2]))
	if odd := key.SerializeCompressed()[0] == 0x03; odd != cb.OutputKeyYIsOdd {
		return nil, false
	}
	pk, err := txscript.PayToTaprootScript(key)
	return pk, err == nil
}

// HintedOutputSource is what a light Chain may also do: find an output in
// the block a height hint names (the buyer's, never trusted: the block is
// fetched and checked against the header chain) and check that no block
// since spends it, so that a coin of any age is found with one block fetch
// and the filters since (zeroConfLookback no longer bounds it).
type HintedOutputSource interface {
	// OutputAt returns op when the block of the best chain at height holds
	// its transaction and no block since spends it; else an error that
	// says which.
	OutputAt(ctx context.Context, op wire.OutPoint, height int32) (*PrevOut, error)
}

var _ HintedOutputSource = (*NeutrinoChain)(nil)

// OutputAt implements HintedOutputSource.
func (n *NeutrinoChain) OutputAt(ctx context.Context, op wire.OutPoint, height int32) (*PrevOut, error) {
	start, err := n.cs.BestBlock()
	if err != nil {
		return nil, fmt.Errorf("light client tip: %w", err)
	}
	if height < 1 || height > start.Height {
		return nil, fmt.Errorf("the hint names block %d; the tip is %d", height, start.Height)
	}
	hash, err := n.cs.GetBlockHash(int64(height))
	if err != nil {
		return nil, fmt.Errorf("block hash %d: %w", height, err)
	}
	blk, err := n.block(ctx, *hash)
	if err != nil {
		return nil, err
	}
	var p *PrevOut
	for i, tx := range blk.Transactions {
		if tx.TxHash() != op.Hash {
			continue
		}
		if int(op.Index) >= len(tx.TxOut) {
			return nil, fmt.Errorf("its transaction in block %d has no output %d", height, op.Index)
		}
		out := tx.TxOut[op.Index]
		p = &PrevOut{Out: wire.NewTxOut(out.Value, bytes.Clone(out.PkScript)), Height: height, Coinbase: i == 0}
		break
	}
	if p == nil {
		return nil, fmt.Errorf("the hint names block %d, which does not hold its transaction", height)
	}
	for _, tx := range blk.Transactions {
		if spends(tx, op) { // a child in the same block
			return nil, &spentError{by: tx.TxHash(), height: height}
		}
	}
	// A spend since: every block from the next one up whose filter
	// matches the output's script (BIP 158 filters hold the scripts the
	// block's inputs spend) is fetched and searched.
	matched := 0
	for h := height + 1; h <= start.Height; h++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("checking blocks %d to %d for a spend: %w", height+1, start.Height, err)
		}
		if _, err := n.matchingBlock(ctx, h, op, p.Out.PkScript, neutrino.OptimisticBatch(), &matched, height); err != nil {
			return nil, err
		}
	}
	if end, err := n.cs.BestBlock(); err != nil || end.Hash != start.Hash {
		return nil, fmt.Errorf("the chain moved during the check (tip %d)", start.Height)
	}
	return p, nil
}

// matchingBlock fetches block h when its BIP 158 filter (fetched in
// batches the way batch says) matches pkScript, and nil when it does not.
// *matched counts the matching blocks: more than zeroConfMaxMatches is an
// error that names since, the height the search counts from (a reused
// address). A transaction of the block spending op is a *spentError.
func (n *NeutrinoChain) matchingBlock(ctx context.Context, h int32, op wire.OutPoint, pkScript []byte,
	batch neutrino.QueryOption, matched *int, since int32) (*wire.MsgBlock, error) {
	hash, ok, err := n.filterMatches(h, [][]byte{pkScript}, batch, neutrino.MaxBatchSize(zeroConfFilterBatch))
	if err != nil || !ok {
		return nil, err
	}
	if *matched++; *matched > zeroConfMaxMatches {
		return nil, fmt.Errorf("more than %d blocks since height %d match its script (a reused address)", zeroConfMaxMatches, since)
	}
	blk, err := n.block(ctx, hash)
	if err != nil {
		return nil, err
	}
	for _, tx := range blk.Transactions {
		if spends(tx, op) {
			return nil, &spentError{by: tx.TxHash(), height: h}
		}
	}
	return blk, nil
}

// lightPrevOuts finds the outputs tx's inputs spend through the light
// client (src), each a confirmed, unspent, mature output; an error says
// why one is not.
//
// hints are the buyer's (peer): for each input, the height of the block
// holding its transaction (0: none). An input with a hint is found there
// (OutputAt), any other through the script it reveals in the blocks of the
// last zeroConfLookback; a wrong hint only refuses the zero-conf start. The
// filters the hints ask for are charged to peer's budget first
// (zeroconfbudget.go).
func (m *Manager) lightPrevOuts(ctx context.Context, peer string, src ScriptPrevOutSource, tx *wire.MsgTx, hints []int32) ([]*wire.TxOut, error) {
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
	if _, ok := src.(HintedOutputSource); ok {
		// The filters the hints ask for come out of the buyer's budget
		// before any is fetched (zeroconfbudget.go).
		if err := m.zc.filters.charge(peer, hintCost(len(tx.TxIn), hints, tip), m.now()); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, zeroConfLightTimeout)
	defer cancel()
	outs := make([]*wire.TxOut, len(tx.TxIn))
	for i, ti := range tx.TxIn {
		var p *PrevOut
		if hs, ok := src.(HintedOutputSource); ok && i < len(hints) && hints[i] > 0 {
			p, err = hs.OutputAt(ctx, ti.PreviousOutPoint, hints[i])
		} else {
			pk, serr := spentScript(ti, params)
			if serr != nil {
				return nil, fmt.Errorf("%w: input %d (%s): %v", ErrNotZeroConf, i, ti.PreviousOutPoint, serr)
			}
			p, err = src.RecentOutput(ctx, ti.PreviousOutPoint, pk, zeroConfLookback)
		}
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
