package payment

import (
	"context"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/txscript"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// derOf encodes (r, s) in DER as given: no low-S normalisation, so a
// high S stays high (ecdsa.Signature.Serialize would lower it).
func derOf(r, s *secp256k1.ModNScalar, pad bool) []byte {
	integer := func(v *secp256k1.ModNScalar) []byte {
		b := v.Bytes()
		i := 0
		for i < 31 && b[i] == 0 && b[i+1]&0x80 == 0 {
			i++
		}
		out := b[i:]
		if out[0]&0x80 != 0 || pad {
			out = append([]byte{0}, out...)
		}
		return append([]byte{0x02, byte(len(out))}, out...)
	}
	body := append(integer(r), integer(s)...)
	return append([]byte{0x30, byte(len(body))}, body...)
}

// withHighS is sigWithType (DER then the sighash type) with its S
// negated: the same signature, valid, but not canonical (high S).
func withHighS(t testing.TB, sigWithType []byte) []byte {
	t.Helper()
	sig, err := ecdsa.ParseDERSignature(sigWithType[:len(sigWithType)-1])
	if err != nil {
		t.Fatal(err)
	}
	r, s := sig.R(), sig.S()
	var high secp256k1.ModNScalar
	high.NegateVal(&s)
	return append(derOf(&r, &high, false), sigWithType[len(sigWithType)-1])
}

// closeDigest is the sighash of channel c's close paying paid, with the
// scripts it spends.
func closeDigest(t testing.TB, c *Channel, paid int64) (digest, ws, pk []byte) {
	t.Helper()
	ws, err := c.Script()
	if err != nil {
		t.Fatal(err)
	}
	if pk, err = P2WSH(ws); err != nil {
		t.Fatal(err)
	}
	tx, err := c.CloseTx(paid)
	if err != nil {
		t.Fatal(err)
	}
	hashes := txscript.NewTxSigHashes(tx, txscript.NewCannedPrevOutputFetcher(pk, c.Capacity))
	if digest, err = txscript.CalcWitnessSigHash(ws, hashes, txscript.SigHashAll, tx, 0, c.Capacity); err != nil {
		t.Fatal(err)
	}
	return digest, ws, pk
}

// TestBuyerSigAfterEngine: the seller checks a channel's first update with
// the script engine and the next ones with verifySigAll, which takes no
// signature the engine refuses: a high S, a padded DER, another sighash
// type, a signature of another amount or by another key are refused and
// change nothing; the honest update is then accepted.
func TestBuyerSigAfterEngine(t *testing.T) {
	p := newMemPair(t, NewMemStore(), NewMemStore())
	ctx := context.Background()
	first := p.pay(t, "c", 500)
	row, _ := p.seller.chans.lock(p.id)
	cached := row.x.buyerPub != nil
	row.mu.Unlock()
	if !cached {
		t.Fatal("the engine's check did not leave the buyer's key for the next updates")
	}
	u, err := p.buyer.Pay(ctx, p.id, "c", 700)
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := p.buyer.Channel(p.id)
	key, err := p.buyer.keys.Key(FamilyChannelBuyer, bc.KeyIndex)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := p.seller.Channel(p.id)
	digest, _, _ := closeDigest(t, sc, u.Amount)
	sig, err := ecdsa.ParseDERSignature(u.Sig[:len(u.Sig)-1])
	if err != nil {
		t.Fatal(err)
	}
	r, s := sig.R(), sig.S()
	other, _ := btcec.NewPrivateKey()
	older, _, _ := closeDigest(t, sc, u.Amount-1)
	bad := map[string][]byte{
		"high S":             withHighS(t, u.Sig),
		"padded DER":         append(derOf(&r, &s, true), byte(txscript.SigHashAll)),
		"SIGHASH_NONE":       append(append([]byte(nil), u.Sig[:len(u.Sig)-1]...), byte(txscript.SigHashNone)),
		"ALL|ANYONECANPAY":   append(append([]byte(nil), u.Sig[:len(u.Sig)-1]...), byte(txscript.SigHashAll|txscript.SigHashAnyOneCanPay)),
		"another key":        append(ecdsa.Sign(other, digest).Serialize(), byte(txscript.SigHashAll)),
		"another amount":     append(ecdsa.Sign(key, older).Serialize(), byte(txscript.SigHashAll)),
		"no sighash type":    u.Sig[:len(u.Sig)-1],
		"one byte":           {byte(txscript.SigHashAll)},
		"trailing garbage":   append(append(append([]byte(nil), u.Sig[:len(u.Sig)-1]...), 0), byte(txscript.SigHashAll)),
		"the first's update": first.Sig,
	}
	for name, s := range bad {
		before, _ := p.seller.Channel(p.id)
		forged := *u
		forged.Sig = s
		if _, err := p.seller.AcceptUpdate(ctx, "b", forged.Encode()); err == nil {
			t.Errorf("%s: accepted", name)
		}
		after, _ := p.seller.Channel(p.id)
		if after.Seq != before.Seq || after.Paid != before.Paid {
			t.Errorf("%s: a refused update changed the channel", name)
		}
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatalf("honest update after the forged ones: %v", err)
	}
}

// FuzzBuyerSig: verifySigAll never accepts a signature the script
// engine (checkCloseSig, as the channel's first update is checked)
// refuses.
func FuzzBuyerSig(f *testing.F) {
	p := newMemPair(f, NewMemStore(), NewMemStore())
	p.pay(f, "c", 500)
	c, _ := p.seller.Channel(p.id)
	buyer, err := btcec.ParsePubKey(c.BuyerKey)
	if err != nil {
		f.Fatal(err)
	}
	digest, ws, pk := closeDigest(f, c, c.Paid)
	if err := verifySigAll(buyer, digest, c.BuyerSig); err != nil {
		f.Fatalf("honest signature refused: %v", err)
	}
	f.Add(c.BuyerSig)
	f.Add(c.BuyerSig[:len(c.BuyerSig)-1])
	f.Fuzz(func(t *testing.T, sig []byte) {
		if verifySigAll(buyer, digest, sig) != nil {
			return
		}
		if err := checkCloseSig(c, ws, pk, c.Paid, sig); err != nil {
			t.Fatalf("verifySigAll accepted %x, the engine refuses it: %v", sig, err)
		}
	})
}
