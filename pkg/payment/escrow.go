package payment

import (
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/wire"
)

// Escrow is a 2-of-3 output for jobs paid on delivery (the market's
// escrowed jobs; see the package comment): buyer and seller
// spend it together at any time (release to the seller, or refund to the
// buyer); after the absolute height Delay the arbiter and either party can
// (arbitrated payout or refund). See EscrowScript.
type Escrow struct {
	Buyer, Seller, Arbiter *btcec.PublicKey
	Delay                  uint32
	// Outpoint and Amount locate the funded escrow output.
	Outpoint wire.OutPoint
	Amount   int64
}

// Script is the escrow's witness script.
func (e *Escrow) Script() ([]byte, error) {
	return EscrowScript(e.Buyer, e.Seller, e.Arbiter, e.Delay)
}

// PkScript is the output script to fund.
func (e *Escrow) PkScript() ([]byte, error) {
	ws, err := e.Script()
	if err != nil {
		return nil, err
	}
	return P2WSH(ws)
}

// SpendTx is the unsigned spend of the whole escrow to pkScript, less fee.
// The arbitrated branch needs LockTime = Delay and a non-final sequence.
func (e *Escrow) SpendTx(to []byte, fee int64, arbitrated bool) (*wire.MsgTx, error) {
	if IsDust(to, e.Amount-fee) {
		return nil, fmt.Errorf("escrow spend: %w: %d after fee %d", ErrNotWorth, e.Amount-fee, fee)
	}
	tx := wire.NewMsgTx(2)
	in := wire.NewTxIn(&e.Outpoint, nil, nil)
	if arbitrated {
		tx.LockTime = e.Delay
		in.Sequence = refundSequence
	}
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(e.Amount-fee, to))
	return tx, nil
}

// SpendVSize is the size of an escrow spend to a script like to, for fees.
func (e *Escrow) SpendVSize(to []byte) (int64, error) {
	ws, err := e.Script()
	if err != nil {
		return 0, err
	}
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, wire.TxWitness{nil, placeholderSig, placeholderSig, {1}, ws}))
	tx.AddTxOut(wire.NewTxOut(0, to))
	return VSize(tx), nil
}

// Sign is one party's signature of an escrow spend.
func (e *Escrow) Sign(tx *wire.MsgTx, key *btcec.PrivateKey) (KeySig, error) {
	ws, err := e.Script()
	if err != nil {
		return KeySig{}, err
	}
	sig, err := SignInput(tx, 0, ws, e.Amount, key)
	if err != nil {
		return KeySig{}, fmt.Errorf("escrow sign: %w", err)
	}
	return KeySig{Key: key.PubKey(), Sig: sig}, nil
}

// Finalize puts two signatures into tx's witness for the chosen branch, and
// refuses it unless the script engine accepts it and its fee is within cfg's
// bounds.
func (e *Escrow) Finalize(cfg *Config, tx *wire.MsgTx, arbitrated bool, a, b KeySig) error {
	ws, err := e.Script()
	if err != nil {
		return err
	}
	if a.Key == nil || b.Key == nil {
		return errors.New("escrow finalize: missing signer")
	}
	tx.TxIn[0].Witness = EscrowWitness(ws, !arbitrated, a, b)
	pk, _ := P2WSH(ws)
	if err := VerifyInput(tx, 0, pk, e.Amount); err != nil {
		return fmt.Errorf("escrow finalize: %w", err)
	}
	if err := cfg.checkFee(e.Amount-sumOut(tx), VSize(tx)); err != nil {
		return fmt.Errorf("escrow finalize: %w", err)
	}
	return nil
}

// SplitTx is the unsigned arbitrated spend of the whole escrow paying
// toSeller the seller's share and toBuyer the rest less fee; both outputs
// must be above dust.
func (e *Escrow) SplitTx(toSeller []byte, share int64, toBuyer []byte, fee int64) (*wire.MsgTx, error) {
	rest := e.Amount - fee - share
	if share <= 0 || IsDust(toSeller, share) || IsDust(toBuyer, rest) {
		return nil, fmt.Errorf("escrow split: %w: %d to the seller, %d to the buyer after fee %d", ErrNotWorth, share, rest, fee)
	}
	tx := wire.NewMsgTx(2)
	tx.LockTime = e.Delay
	in := wire.NewTxIn(&e.Outpoint, nil, nil)
	in.Sequence = refundSequence
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(share, toSeller))
	tx.AddTxOut(wire.NewTxOut(rest, toBuyer))
	return tx, nil
}
