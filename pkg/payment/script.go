package payment

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// All scripts and witnesses are built here, in one place, so that their sizes
// are known and every spend path has exactly one constructor and one test.

const (
	// DustP2WPKH and DustP2WSH are the smallest outputs btcd relays at its
	// default relay fee (1 sat/vB); anything smaller is folded into the fee.
	DustP2WPKH = 294
	DustP2WSH  = 330

	// maxSigLen is a DER signature with its sighash byte, at its largest.
	maxSigLen = 73

	// refundSequence enables nLockTime (anything below 0xffffffff) and
	// signals BIP 125 replaceability (at most 0xfffffffd), so an
	// unconfirmed refund is fee-bumped by replacement (bump.go), without
	// opting into relative timelocks (bit 31 set disables them).
	refundSequence = wire.MaxTxInSequenceNum - 2
)

var (
	// ErrScript is wrapped by every script-engine failure, so callers can
	// tell "the peer sent something that does not verify" from I/O errors.
	ErrScript = errors.New("script check failed")
)

// ChannelScript is the witness script of a unidirectional payment channel
// (DESIGN.md §7):
//
//	OP_IF
//	    <seller> OP_CHECKSIGVERIFY
//	OP_ELSE
//	    <expiry> OP_CHECKLOCKTIMEVERIFY OP_DROP
//	OP_ENDIF
//	<buyer> OP_CHECKSIG
//
// The IF branch (seller and buyer together) is the close: the buyer signs
// each cumulative payment and the seller adds its signature when it settles.
// The ELSE branch lets the buyer alone take everything back once the chain
// reaches the absolute block height expiry. Key order is fixed by role here,
// not sorted: the branches give the two keys different powers.
func ChannelScript(seller, buyer *btcec.PublicKey, expiry uint32) ([]byte, error) {
	if seller == nil || buyer == nil {
		return nil, errors.New("channel script: missing key")
	}
	if expiry == 0 || expiry >= txscript.LockTimeThreshold {
		return nil, fmt.Errorf("channel script: expiry %d is not a block height", expiry)
	}
	b := txscript.NewScriptBuilder()
	b.AddOp(txscript.OP_IF)
	b.AddData(seller.SerializeCompressed())
	b.AddOp(txscript.OP_CHECKSIGVERIFY)
	b.AddOp(txscript.OP_ELSE)
	b.AddInt64(int64(expiry))
	b.AddOp(txscript.OP_CHECKLOCKTIMEVERIFY)
	b.AddOp(txscript.OP_DROP)
	b.AddOp(txscript.OP_ENDIF)
	b.AddData(buyer.SerializeCompressed())
	b.AddOp(txscript.OP_CHECKSIG)
	return b.Script()
}

// ChannelCloseWitness spends a channel output through the IF branch:
// <buyer sig> <seller sig> 1 <script>. The selector must be exactly 0x01
// (MINIMALIF is standard policy for segwit v0).
func ChannelCloseWitness(script, buyerSig, sellerSig []byte) wire.TxWitness {
	return wire.TxWitness{buyerSig, sellerSig, {0x01}, script}
}

// ChannelRefundWitness spends a channel output through the ELSE branch:
// <buyer sig> <empty> <script>. The spending transaction must have
// LockTime >= expiry and a non-final sequence on this input.
func ChannelRefundWitness(script, buyerSig []byte) wire.TxWitness {
	return wire.TxWitness{buyerSig, nil, script}
}

// SortKeys returns the compressed keys in ascending byte order, the order
// used in every multisig script (so both sides build identical scripts).
func SortKeys(keys ...*btcec.PublicKey) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = k.SerializeCompressed()
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i], out[j]) < 0 })
	return out
}

// EscrowScript is the witness script of a 2-of-3 escrow whose arbiter can
// only act after the absolute block height delay:
//
//	OP_IF
//	    2 <buyer, seller sorted> 2 OP_CHECKMULTISIG
//	OP_ELSE
//	    <delay> OP_CHECKLOCKTIMEVERIFY OP_DROP
//	    2 <buyer, seller, arbiter sorted> 3 OP_CHECKMULTISIG
//	OP_ENDIF
//
// Buyer and seller settle alone whenever they agree (release or refund);
// after delay, the arbiter and either party decide a dispute.
func EscrowScript(buyer, seller, arbiter *btcec.PublicKey, delay uint32) ([]byte, error) {
	if buyer == nil || seller == nil || arbiter == nil {
		return nil, errors.New("escrow script: missing key")
	}
	if delay == 0 || delay >= txscript.LockTimeThreshold {
		return nil, fmt.Errorf("escrow script: delay %d is not a block height", delay)
	}
	b := txscript.NewScriptBuilder()
	b.AddOp(txscript.OP_IF)
	b.AddOp(txscript.OP_2)
	for _, k := range SortKeys(buyer, seller) {
		b.AddData(k)
	}
	b.AddOp(txscript.OP_2)
	b.AddOp(txscript.OP_CHECKMULTISIG)
	b.AddOp(txscript.OP_ELSE)
	b.AddInt64(int64(delay))
	b.AddOp(txscript.OP_CHECKLOCKTIMEVERIFY)
	b.AddOp(txscript.OP_DROP)
	b.AddOp(txscript.OP_2)
	for _, k := range SortKeys(buyer, seller, arbiter) {
		b.AddData(k)
	}
	b.AddOp(txscript.OP_3)
	b.AddOp(txscript.OP_CHECKMULTISIG)
	b.AddOp(txscript.OP_ENDIF)
	return b.Script()
}

// KeySig is one signature together with the key that made it, so a multisig
// witness can put signatures in the script's key order.
type KeySig struct {
	Key *btcec.PublicKey
	Sig []byte
}

// EscrowWitness builds the witness for either escrow branch: the
// CHECKMULTISIG dummy, the two signatures in sorted key order, the branch
// selector (0x01 for the cooperative branch, empty for the arbiter branch)
// and the script.
func EscrowWitness(script []byte, cooperative bool, a, b KeySig) wire.TxWitness {
	first, second := a, b
	if bytes.Compare(a.Key.SerializeCompressed(), b.Key.SerializeCompressed()) > 0 {
		first, second = b, a
	}
	sel := []byte(nil)
	if cooperative {
		sel = []byte{0x01}
	}
	return wire.TxWitness{nil, first.Sig, second.Sig, sel, script}
}

// P2WSH returns the output script paying to the hash of witness script ws.
func P2WSH(ws []byte) ([]byte, error) {
	h := sha256Sum(ws)
	return txscript.NewScriptBuilder().AddOp(txscript.OP_0).AddData(h[:]).Script()
}

// SignInput returns key's SIGHASH_ALL witness signature for input idx of tx,
// which spends an output of value amount locked by witness script ws.
func SignInput(tx *wire.MsgTx, idx int, ws []byte, amount int64, key *btcec.PrivateKey) ([]byte, error) {
	pk, err := P2WSH(ws)
	if err != nil {
		return nil, err
	}
	fetcher := txscript.NewCannedPrevOutputFetcher(pk, amount)
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	sig, err := txscript.RawTxInWitnessSignature(tx, hashes, idx, amount, ws, txscript.SigHashAll, key)
	if err != nil {
		return nil, fmt.Errorf("sign input %d: %w", idx, err)
	}
	return sig, nil
}

// VerifyInput runs the script engine with standard flags on input idx of tx,
// which spends an output of value amount with output script pkScript. Every
// transaction this package broadcasts passes through here first.
func VerifyInput(tx *wire.MsgTx, idx int, pkScript []byte, amount int64) error {
	fetcher := txscript.NewCannedPrevOutputFetcher(pkScript, amount)
	return verifyInput(tx, idx, pkScript, amount, fetcher)
}

func verifyInput(tx *wire.MsgTx, idx int, pkScript []byte, amount int64, fetcher txscript.PrevOutputFetcher) error {
	hashes := txscript.NewTxSigHashes(tx, fetcher)
	vm, err := txscript.NewEngine(pkScript, tx, idx, txscript.StandardVerifyFlags, nil, hashes, amount, fetcher)
	if err != nil {
		return fmt.Errorf("%w: input %d: %v", ErrScript, idx, err)
	}
	if err := vm.Execute(); err != nil {
		return fmt.Errorf("%w: input %d: %v", ErrScript, idx, err)
	}
	return nil
}

// VSize is a transaction's virtual size in vbytes (BIP 141).
func VSize(tx *wire.MsgTx) int64 {
	weight := int64(tx.SerializeSizeStripped())*3 + int64(tx.SerializeSize())
	return (weight + 3) / 4
}

// placeholderSig stands in for a signature when sizing a transaction before
// signing it: a maximal DER signature plus sighash byte.
var placeholderSig = bytes.Repeat([]byte{0x30}, maxSigLen)

// IsDust reports whether an output of value amount paying pkScript would be
// refused by relay policy at the default relay fee.
func IsDust(pkScript []byte, amount int64) bool { return amount < dustLimit(pkScript) }

// dustLimit is the smallest output paying pkScript that is not dust.
func dustLimit(pkScript []byte) int64 {
	switch {
	case len(pkScript) == 22 && pkScript[0] == txscript.OP_0:
		return DustP2WPKH
	case len(pkScript) > 34:
		return 546 // legacy and other scripts: be conservative
	}
	return DustP2WSH
}
