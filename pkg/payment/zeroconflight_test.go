package payment

import (
	"bytes"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
)

// signedInput spends an output paying to pk with key k, as a wallet
// signs it: P2WPKH, P2SH-P2WPKH or P2PKH.
func signedInput(t testing.TB, kind string) (*wire.TxIn, []byte) {
	t.Helper()
	k := mustKey(t)
	pub := k.PubKey().SerializeCompressed()
	wpkh, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pub), btcdtest.Params)
	wpk, _ := txscript.PayToAddrScript(wpkh)
	var pk []byte
	switch kind {
	case "p2wpkh":
		pk = wpk
	case "np2wpkh":
		sh, _ := btcutil.NewAddressScriptHash(wpk, btcdtest.Params)
		pk, _ = txscript.PayToAddrScript(sh)
	case "p2pkh":
		a, _ := btcutil.NewAddressPubKeyHash(btcutil.Hash160(pub), btcdtest.Params)
		pk, _ = txscript.PayToAddrScript(a)
	}
	const value = 100_000
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, nil))
	tx.AddTxOut(wire.NewTxOut(90_000, wpk))
	fetch := txscript.NewCannedPrevOutputFetcher(pk, value)
	switch kind {
	case "p2wpkh", "np2wpkh":
		w, err := txscript.WitnessSignature(tx, txscript.NewTxSigHashes(tx, fetch), 0, value, wpk, txscript.SigHashAll, k, true)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[0].Witness = w
		if kind == "np2wpkh" {
			tx.TxIn[0].SignatureScript, _ = txscript.NewScriptBuilder().AddData(wpk).Script()
		}
	case "p2pkh":
		ss, err := txscript.SignatureScript(tx, 0, pk, txscript.SigHashAll, k, true)
		if err != nil {
			t.Fatal(err)
		}
		tx.TxIn[0].SignatureScript = ss
	}
	if err := verifyInput(tx, 0, pk, value, fetch); err != nil {
		t.Fatalf("%s: the test's own input does not verify: %v", kind, err)
	}
	return tx.TxIn[0], pk
}

// TestSpentScript: the script a light seller looks for is the one the
// input spends, for each kind of input a wallet signs; an input that
// reveals none is refused with the reason (scripts and taproot:
// TestSpentScriptScripts).
func TestSpentScript(t *testing.T) {
	for _, kind := range []string{"p2wpkh", "np2wpkh", "p2pkh"} {
		in, want := signedInput(t, kind)
		got, err := spentScript(in, btcdtest.Params)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %x %v, want %x", kind, got, err, want)
		}
	}
	for name, in := range map[string]*wire.TxIn{
		"taproot key path":                  {Witness: wire.TxWitness{make([]byte, 64)}},
		"P2WSH with a bad signature script": {Witness: wire.TxWitness{nil, make([]byte, 71)}, SignatureScript: []byte{1, 2}},
		"nothing":                           {},
		"bad push":                          {SignatureScript: []byte{0x4c}},
	} {
		if pk, err := spentScript(in, btcdtest.Params); err == nil {
			t.Fatalf("%s: script %x, want a refusal", name, pk)
		}
	}
}

// FuzzSpentScript: whatever a buyer puts in a funding's input, spentScript
// returns a standard P2WPKH, P2WSH, P2TR, P2SH or P2PKH script or a
// refusal.
func FuzzSpentScript(f *testing.F) {
	for _, kind := range []string{"p2wpkh", "np2wpkh", "p2pkh"} {
		in, _ := signedInput(f, kind)
		var w bytes.Buffer
		_ = wire.WriteVarBytes(&w, 0, in.SignatureScript)
		for _, it := range in.Witness {
			_ = wire.WriteVarBytes(&w, 0, it)
		}
		f.Add(w.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		ss, err := wire.ReadVarBytes(r, 0, 10_000, "sigscript")
		if err != nil {
			return
		}
		in := &wire.TxIn{SignatureScript: ss}
		for {
			it, err := wire.ReadVarBytes(r, 0, 10_000, "witness")
			if err != nil {
				break
			}
			in.Witness = append(in.Witness, it)
		}
		pk, err := spentScript(in, btcdtest.Params)
		if err != nil {
			return
		}
		switch txscript.GetScriptClass(pk) {
		case txscript.WitnessV0PubKeyHashTy, txscript.WitnessV0ScriptHashTy, txscript.WitnessV1TaprootTy, txscript.ScriptHashTy, txscript.PubKeyHashTy:
		default:
			t.Fatalf("script %x of class %s", pk, txscript.GetScriptClass(pk))
		}
	})
}
