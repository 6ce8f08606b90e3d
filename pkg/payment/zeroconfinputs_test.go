package payment

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/blackbox-market/blackbox/pkg/payment/btcdtest"
	"github.com/blackbox-market/blackbox/pkg/payment/paytest"
)

// coinKinds are the outputs a funding's inputs may spend that a light
// seller checks since its input hints: beside P2WPKH, P2SH-P2WPKH and
// P2PKH (signedInput), scripts (a 2-of-2 multisig, as a previous
// channel's change is) and taproot.
var coinKinds = []string{"p2wsh", "np2wsh", "p2sh", "p2tr-key", "p2tr-script"}

// kindCoin is an output of one kind and what signs a spend of it.
type kindCoin struct {
	kind   string
	op     wire.OutPoint
	out    *wire.TxOut
	keys   []*btcec.PrivateKey
	script []byte // the witness or redeem script, the tapscript leaf
	ctrl   []byte // the control block of a taproot script path
}

// newKindCoin makes an output of kind worth value (its outpoint is made
// up: n).
func newKindCoin(t testing.TB, kind string, n byte, value int64) *kindCoin {
	t.Helper()
	c := &kindCoin{kind: kind, op: wire.OutPoint{Hash: [32]byte{n, 1}, Index: uint32(n)}, keys: []*btcec.PrivateKey{mustKey(t), mustKey(t)}}
	var pk []byte
	var err error
	switch kind {
	case "p2wsh", "np2wsh", "p2sh":
		var pubs []*btcutil.AddressPubKey
		for _, k := range c.keys {
			a, _ := btcutil.NewAddressPubKey(k.PubKey().SerializeCompressed(), btcdtest.Params)
			pubs = append(pubs, a)
		}
		c.script, _ = txscript.MultiSigScript(pubs, 2)
		h := sha256Sum(c.script)
		wsh := append([]byte{txscript.OP_0, 32}, h[:]...)
		switch kind {
		case "p2wsh":
			pk = wsh
		case "np2wsh":
			a, _ := btcutil.NewAddressScriptHash(wsh, btcdtest.Params)
			pk, _ = txscript.PayToAddrScript(a)
		case "p2sh":
			a, _ := btcutil.NewAddressScriptHash(c.script, btcdtest.Params)
			pk, _ = txscript.PayToAddrScript(a)
		}
	case "p2tr-key":
		pk, err = txscript.PayToTaprootScript(txscript.ComputeTaprootKeyNoScript(c.keys[0].PubKey()))
	case "p2tr-script":
		c.script, _ = txscript.NewScriptBuilder().AddData(schnorr.SerializePubKey(c.keys[1].PubKey())).AddOp(txscript.OP_CHECKSIG).Script()
		tree := txscript.AssembleTaprootScriptTree(txscript.NewBaseTapLeaf(c.script))
		root := tree.RootNode.TapHash()
		pk, err = txscript.PayToTaprootScript(txscript.ComputeTaprootOutputKey(c.keys[0].PubKey(), root[:]))
		if err == nil {
			cb := tree.LeafMerkleProofs[0].ToControlBlock(c.keys[0].PubKey())
			c.ctrl, err = cb.ToBytes()
		}
	default:
		t.Fatalf("kind %s", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.out = wire.NewTxOut(value, pk)
	return c
}

// sign signs input i of tx, which spends c (prev holds every input's
// output: a taproot signature commits to all of them).
func (c *kindCoin) sign(t testing.TB, tx *wire.MsgTx, i int, prev txscript.PrevOutputFetcher) {
	t.Helper()
	hashes := txscript.NewTxSigHashes(tx, prev)
	in := tx.TxIn[i]
	switch c.kind {
	case "p2wsh", "np2wsh":
		w := wire.TxWitness{nil}
		for _, k := range c.keys {
			sig, err := txscript.RawTxInWitnessSignature(tx, hashes, i, c.out.Value, c.script, txscript.SigHashAll, k)
			if err != nil {
				t.Fatal(err)
			}
			w = append(w, sig)
		}
		in.Witness = append(w, c.script)
		if c.kind == "np2wsh" {
			h := sha256Sum(c.script)
			in.SignatureScript, _ = txscript.NewScriptBuilder().AddData(append([]byte{txscript.OP_0, 32}, h[:]...)).Script()
		}
	case "p2sh":
		b := txscript.NewScriptBuilder().AddOp(txscript.OP_0)
		for _, k := range c.keys {
			sig, err := txscript.RawTxInSignature(tx, i, c.script, txscript.SigHashAll, k)
			if err != nil {
				t.Fatal(err)
			}
			b.AddData(sig)
		}
		in.SignatureScript, _ = b.AddData(c.script).Script()
	case "p2tr-key":
		w, err := txscript.TaprootWitnessSignature(tx, hashes, i, c.out.Value, c.out.PkScript, txscript.SigHashDefault, c.keys[0])
		if err != nil {
			t.Fatal(err)
		}
		in.Witness = w
	case "p2tr-script":
		sig, err := txscript.RawTxInTapscriptSignature(tx, hashes, i, c.out.Value, c.out.PkScript,
			txscript.NewBaseTapLeaf(c.script), txscript.SigHashDefault, c.keys[1])
		if err != nil {
			t.Fatal(err)
		}
		in.Witness = wire.TxWitness{sig, c.script, c.ctrl}
	}
}

// spendCoins is a transaction spending every coin (to out), signed.
func spendCoins(t testing.TB, coins []*kindCoin, out *wire.TxOut) (*wire.MsgTx, *txscript.MultiPrevOutFetcher) {
	t.Helper()
	tx := wire.NewMsgTx(2)
	prev := txscript.NewMultiPrevOutFetcher(nil)
	for _, c := range coins {
		tx.AddTxIn(wire.NewTxIn(&c.op, nil, nil))
		prev.AddPrevOut(c.op, c.out)
	}
	tx.AddTxOut(out)
	for i, c := range coins {
		c.sign(t, tx, i, prev)
	}
	return tx, prev
}

// fakeLight is a light client's view of the chain for the input checker:
// each coin in the block at its height, found by script from the tip down
// (RecentOutput, a script that matches none is not found) or through a
// hint naming that block (OutputAt).
type fakeLight struct {
	*paytest.Chain
	coins  map[wire.OutPoint]*kindCoin
	height int32
}

func (f *fakeLight) RecentOutput(_ context.Context, op wire.OutPoint, pk []byte, _ int32) (*PrevOut, error) {
	if c := f.coins[op]; c != nil && bytes.Equal(c.out.PkScript, pk) {
		return &PrevOut{Out: c.out, Height: f.height}, nil
	}
	return nil, errors.New("no block of the last 1008 holds its transaction")
}

func (f *fakeLight) OutputAt(_ context.Context, op wire.OutPoint, h int32) (*PrevOut, error) {
	if c := f.coins[op]; c != nil && h == f.height {
		return &PrevOut{Out: c.out, Height: h}, nil
	}
	return nil, errors.New("the hint names a block which does not hold its transaction")
}

// TestSpentScriptScripts: a light seller derives the script a P2WSH,
// P2SH-P2WSH, P2SH or taproot script-path input spends from the input
// alone (really signed spends); a taproot key-path spend reveals no script
// and needs the buyer's hint.
func TestSpentScriptScripts(t *testing.T) {
	var coins []*kindCoin
	for i, k := range coinKinds {
		coins = append(coins, newKindCoin(t, k, byte(i+1), 100_000))
	}
	tx, prev := spendCoins(t, coins, wire.NewTxOut(400_000, coins[0].out.PkScript))
	for i, c := range coins {
		if err := verifyInput(tx, i, c.out.PkScript, c.out.Value, prev); err != nil {
			t.Fatalf("%s: the test's own input does not verify: %v", c.kind, err)
		}
		pk, err := spentScript(tx.TxIn[i], btcdtest.Params)
		if c.kind == "p2tr-key" {
			if err == nil || !strings.Contains(err.Error(), "height hint") {
				t.Fatalf("taproot key path: %x %v, want a refusal asking for the hint", pk, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(pk, c.out.PkScript) {
			t.Fatalf("%s: %x %v, want %x", c.kind, pk, err, c.out.PkScript)
		}
	}
}

// TestLightInputChecker: a funding spending one coin of each kind passes
// the light seller's checks (checkZeroConf: each coin found, the taproot
// key-path one through its hint, every input verified by the script
// engine with all the prevouts); without the hint, with a wrong hint, or
// with a signature that does not verify, it does not, and says why.
func TestLightInputChecker(t *testing.T) {
	ctx := context.Background()
	cfg := RegtestConfig()
	k := mustKey(t)
	a, _ := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), btcdtest.Params)
	cfg.PayoutAddress = a.EncodeAddress()
	chain := &fakeLight{Chain: paytest.NewChain(), coins: map[wire.OutPoint]*kindCoin{}, height: 999} // the tip is 1000
	chain.Rate = 1
	seller := newManager(t, cfg, chain, NewMemStore(), seed(2), nil)
	var coins []*kindCoin
	hints := make([]int32, len(coinKinds))
	for i, kind := range coinKinds {
		c := newKindCoin(t, kind, byte(i+1), 100_000)
		coins = append(coins, c)
		chain.coins[c.op] = c
		if kind == "p2tr-key" {
			hints[i] = chain.height
		}
	}
	pay, _ := P2WSH([]byte{txscript.OP_TRUE})
	fund := func() *wire.MsgTx {
		tx, _ := spendCoins(t, coins, wire.NewTxOut(490_000, pay))
		return tx
	}
	if err := seller.checkZeroConf(ctx, "b", fund(), hints); err != nil {
		t.Fatalf("a funding of every kind of coin, the taproot key-path one with its hint: %v", err)
	}
	for name, tc := range map[string]struct {
		hints []int32
		tx    func() *wire.MsgTx
		why   string
	}{
		"no hint":                       {nil, fund, "height hint"},
		"wrong hint":                    {[]int32{0, 0, 0, 998, 0}, fund, "does not hold its transaction"},
		"every input hinted, one wrong": {[]int32{999, 999, 999, 999, 1000}, fund, "input 4"},
		"bad signature": {hints, func() *wire.MsgTx {
			tx := fund()
			tx.TxIn[1].Witness[1][10] ^= 1 // np2wsh's first signature
			return tx
		}, "input 1"},
	} {
		err := seller.checkZeroConf(ctx, "b", tc.tx(), tc.hints)
		if !errors.Is(err, ErrNotZeroConf) || !strings.Contains(err.Error(), tc.why) {
			t.Fatalf("%s: %v, want a refusal saying %q", name, err, tc.why)
		}
	}
}

// TestOpenHints: an open request's hints survive its encoding; one
// without hints encodes as before (an older seller reads it); an unknown
// extension field (a later version's) is skipped; a malformed one refused.
func TestOpenHints(t *testing.T) {
	o := &OpenRequest{BuyerKey: make([]byte, 33), SellerKey: make([]byte, 33), Expiry: 100, CloseFee: 300,
		SellerScript: []byte{0, 20}, BuyerScript: []byte{0, 20}, FundingTx: []byte{1, 2, 3}, Vout: 1}
	plain := o.Encode()
	o.InputHeights = []int32{0, 1_234_567, 5}
	hinted := o.Encode()
	if !bytes.HasPrefix(hinted, plain) || len(hinted) == len(plain) {
		t.Fatalf("the hints are not an extension after the fields")
	}
	got, err := DecodeOpenRequest(hinted)
	if err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("decoded %+v %v, want %+v", got, err, o)
	}
	// A later version's field 7 (varint) after the hints.
	later := append(bytes.Clone(hinted), 7<<3, 42)
	if got, err := DecodeOpenRequest(later); err != nil || !reflect.DeepEqual(got.InputHeights, o.InputHeights) {
		t.Fatalf("with an unknown extension field: %+v %v", got, err)
	}
	for name, b := range map[string][]byte{
		"truncated":       hinted[:len(hinted)-1],
		"critical field":  append(bytes.Clone(plain), 0x80, 0x40, 0), // field 1024, varint
		"height too high": append(bytes.Clone(plain), 1<<3|2, 5, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"repeated":        append(bytes.Clone(hinted), hinted[len(plain):]...),
	} {
		if _, err := DecodeOpenRequest(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzOpenHints: whatever follows an open request's fields, the decoder
// refuses it as malformed or returns at most maxInputHints hints, which
// encode and decode again unchanged.
func FuzzOpenHints(f *testing.F) {
	o := &OpenRequest{BuyerKey: make([]byte, 33), SellerKey: make([]byte, 33), Expiry: 100, CloseFee: 300,
		SellerScript: []byte{0, 20}, BuyerScript: []byte{0, 20}, FundingTx: []byte{1, 2, 3}, Vout: 1}
	plain := o.Encode()
	o.InputHeights = []int32{800_000, 0, 12}
	f.Add(o.Encode()[len(plain):])
	f.Add([]byte{7 << 3, 1})
	f.Fuzz(func(t *testing.T, ext []byte) {
		got, err := DecodeOpenRequest(append(bytes.Clone(plain), ext...))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if len(got.InputHeights) > maxInputHints {
			t.Fatalf("%d hints", len(got.InputHeights))
		}
		again, err := DecodeOpenRequest(got.Encode())
		if err != nil || !reflect.DeepEqual(again.InputHeights, got.InputHeights) {
			t.Fatalf("re-encoded: %+v %v, want %v", again, err, got.InputHeights)
		}
	})
}
