package payment

// The open request's extension: what a buyer adds to an open for a seller
// that reads it.
//
// An open request (message.go) is fixed fields and nothing after them; a
// seller from before this file refuses trailing bytes. Since this file the
// fields may be followed by an extension: protobuf wire format decoded by
// an Open schema (pkg/wire, docs/versions.md), so that a field a later
// version adds is skipped. A buyer writes it only to a seller whose
// acceptance says it reads it (contract.Decision.OpenHints), so an older
// seller never sees one.
//
// Field 1, input_heights: for each input of the funding, in order, the
// height of the block holding the transaction whose output it spends (0:
// none given), packed uvarints. A light seller (zeroconflight.go) finds
// an input with a hint in that one block, whatever its age, and checks the
// filters since for a spend; it never trusts it: a block without the
// transaction only refuses the zero-confirmation start (the funding waits
// for its confirmations), nothing more.

import (
	"bytes"
	"fmt"
	"math"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	btcwire "github.com/btcsuite/btcd/wire"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

const (
	// maxOpenExt caps the extension's size.
	maxOpenExt = 4096
	// maxInputHints caps the hints (a light seller checks at most
	// zeroConfMaxLightInputs inputs anyway).
	maxInputHints = 256

	oxInputHeights = 1
)

var openExtSchema = wire.Schema{Max: maxOpenExt, Open: true, Ordered: true, Fields: []wire.Spec{
	oxInputHeights: {Kind: wire.Bytes},
}}

// appendOpenExt appends o's extension (nothing when it has nothing to
// say).
func (o *OpenRequest) appendOpenExt(b []byte) []byte {
	if len(o.InputHeights) == 0 {
		return b
	}
	var packed []byte
	for _, h := range o.InputHeights {
		packed = protowire.AppendVarint(packed, uint64(max(h, 0)))
	}
	b = protowire.AppendTag(b, oxInputHeights, protowire.BytesType)
	return protowire.AppendBytes(b, packed)
}

// decodeOpenExt reads an extension into o: unknown fields (a later
// version's) are skipped, a known one must be well formed.
func (o *OpenRequest) decodeOpenExt(b []byte) error {
	return openExtSchema.Walk(b, func(f wire.Field) error {
		if f.Num != oxInputHeights {
			return nil
		}
		p := f.B
		var hs []int32
		for len(p) > 0 {
			v, n := protowire.ConsumeVarint(p)
			if n < 0 {
				return fmt.Errorf("input height %d truncated", len(hs))
			}
			if v > math.MaxInt32 {
				return fmt.Errorf("input height %d out of range", v)
			}
			if len(hs) == maxInputHints {
				return fmt.Errorf("more than %d input heights", maxInputHints)
			}
			hs = append(hs, int32(v))
			p = p[n:]
		}
		o.InputHeights = hs
		return nil
	})
}

// TxHeighter is what a Funder may also do: the height of the block holding
// one of its wallet's transactions (0: unmined or unknown).
type TxHeighter interface {
	TxHeight(txid chainhash.Hash) int32
}

var _ TxHeighter = (*Wallet)(nil)

// TxHeight implements TxHeighter with the wallet's transaction store.
func (w *Wallet) TxHeight(txid chainhash.Hash) int32 {
	res, err := w.w.GetTransaction(txid)
	if err != nil || res == nil || res.Height <= 0 {
		return 0
	}
	return res.Height
}

// WithInputHeights is the Manager's WithInputHeights.
func (p *Payer) WithInputHeights(open []byte) []byte { return p.m.WithInputHeights(open) }

// WithInputHeights returns the open request open (encoded) with the
// heights of its funding's inputs, from the wallet that funded it; open as
// it is when the wallet knows none of them.
func (m *Manager) WithInputHeights(open []byte) []byte {
	th, ok := m.fund.(TxHeighter)
	if !ok {
		return open
	}
	o, err := DecodeOpenRequest(open)
	if err != nil {
		return open
	}
	var tx btcwire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(o.FundingTx)); err != nil || len(tx.TxIn) > maxInputHints {
		return open
	}
	hs := make([]int32, len(tx.TxIn))
	known := false
	for i, in := range tx.TxIn {
		hs[i] = th.TxHeight(in.PreviousOutPoint.Hash)
		known = known || hs[i] > 0
	}
	if !known {
		return open
	}
	o.InputHeights = hs
	return o.Encode()
}
