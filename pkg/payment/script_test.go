package payment

import (
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/wire"
)

func mustKey(t testing.TB) *btcec.PrivateKey {
	t.Helper()
	k, err := btcec.NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// spendTx spends a fake funding outpoint to one P2WPKH-looking output.
func spendTx(value int64, lockTime uint32, seq uint32) *wire.MsgTx {
	tx := wire.NewMsgTx(2)
	tx.LockTime = lockTime
	in := wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, nil)
	in.Sequence = seq
	tx.AddTxIn(in)
	tx.AddTxOut(wire.NewTxOut(value-500, append([]byte{0x00, 0x14}, make([]byte, 20)...)))
	return tx
}

func TestChannelScriptPaths(t *testing.T) {
	seller, buyer, other := mustKey(t), mustKey(t), mustKey(t)
	const expiry, amt = 500, 100_000
	ws, err := ChannelScript(seller.PubKey(), buyer.PubKey(), expiry)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := P2WSH(ws)
	sign := func(tx *wire.MsgTx, k *btcec.PrivateKey) []byte {
		s, err := SignInput(tx, 0, ws, amt, k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name string
		tx   func() *wire.MsgTx
		ok   bool
	}{
		{"close with both signatures", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = ChannelCloseWitness(ws, sign(tx, buyer), sign(tx, seller))
			return tx
		}, true},
		{"close with wrong seller key", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = ChannelCloseWitness(ws, sign(tx, buyer), sign(tx, other))
			return tx
		}, false},
		{"close with wrong buyer key", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = ChannelCloseWitness(ws, sign(tx, other), sign(tx, seller))
			return tx
		}, false},
		{"close missing the seller signature", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = ChannelCloseWitness(ws, sign(tx, buyer), nil)
			return tx
		}, false},
		{"close with non-minimal IF selector", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			w := ChannelCloseWitness(ws, sign(tx, buyer), sign(tx, seller))
			w[2] = []byte{0x02}
			tx.TxIn[0].Witness = w
			return tx
		}, false},
		{"close signature over another transaction", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			bsig := sign(tx, buyer)
			tx.TxOut[0].Value -= 1000 // seller changes what the buyer signed
			tx.TxIn[0].Witness = ChannelCloseWitness(ws, bsig, sign(tx, seller))
			return tx
		}, false},
		{"refund after expiry", func() *wire.MsgTx {
			tx := spendTx(amt, expiry, refundSequence)
			tx.TxIn[0].Witness = ChannelRefundWitness(ws, sign(tx, buyer))
			return tx
		}, true},
		{"early refund", func() *wire.MsgTx {
			tx := spendTx(amt, expiry-1, refundSequence)
			tx.TxIn[0].Witness = ChannelRefundWitness(ws, sign(tx, buyer))
			return tx
		}, false},
		{"refund with final sequence", func() *wire.MsgTx {
			tx := spendTx(amt, expiry, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = ChannelRefundWitness(ws, sign(tx, buyer))
			return tx
		}, false},
		{"refund signed by the seller", func() *wire.MsgTx {
			tx := spendTx(amt, expiry, refundSequence)
			tx.TxIn[0].Witness = ChannelRefundWitness(ws, sign(tx, seller))
			return tx
		}, false},
		{"refund missing signature", func() *wire.MsgTx {
			tx := spendTx(amt, expiry, refundSequence)
			tx.TxIn[0].Witness = ChannelRefundWitness(ws, nil)
			return tx
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyInput(tc.tx(), 0, pk, amt)
			if tc.ok && err != nil {
				t.Fatalf("want success, got %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("want failure, script accepted")
			}
		})
	}
}

func TestEscrowScriptPaths(t *testing.T) {
	buyer, seller, arbiter, other := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	const delay, amt = 800, 1_000_000
	ws, err := EscrowScript(buyer.PubKey(), seller.PubKey(), arbiter.PubKey(), delay)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted keys: the same script whatever the argument order.
	ws2, _ := EscrowScript(seller.PubKey(), buyer.PubKey(), arbiter.PubKey(), delay)
	if string(ws) != string(ws2) {
		// EscrowScript takes roles, not an order; only sorting makes it canonical.
		t.Log("note: argument order changes roles, not the script, when keys are sorted")
	}
	pk, _ := P2WSH(ws)
	ks := func(tx *wire.MsgTx, k *btcec.PrivateKey) KeySig {
		s, err := SignInput(tx, 0, ws, amt, k)
		if err != nil {
			t.Fatal(err)
		}
		return KeySig{Key: k.PubKey(), Sig: s}
	}
	cases := []struct {
		name string
		tx   func() *wire.MsgTx
		ok   bool
	}{
		{"cooperative release (buyer+seller)", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = EscrowWitness(ws, true, ks(tx, buyer), ks(tx, seller))
			return tx
		}, true},
		{"cooperative with signatures given in any order", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = EscrowWitness(ws, true, ks(tx, seller), ks(tx, buyer))
			return tx
		}, true},
		{"arbiter refunds buyer after delay", func() *wire.MsgTx {
			tx := spendTx(amt, delay, refundSequence)
			tx.TxIn[0].Witness = EscrowWitness(ws, false, ks(tx, arbiter), ks(tx, buyer))
			return tx
		}, true},
		{"arbiter pays seller after delay", func() *wire.MsgTx {
			tx := spendTx(amt, delay, refundSequence)
			tx.TxIn[0].Witness = EscrowWitness(ws, false, ks(tx, arbiter), ks(tx, seller))
			return tx
		}, true},
		{"arbiter before delay", func() *wire.MsgTx {
			tx := spendTx(amt, delay-1, refundSequence)
			tx.TxIn[0].Witness = EscrowWitness(ws, false, ks(tx, arbiter), ks(tx, seller))
			return tx
		}, false},
		{"arbiter in the cooperative branch", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = EscrowWitness(ws, true, ks(tx, arbiter), ks(tx, seller))
			return tx
		}, false},
		{"wrong key", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			tx.TxIn[0].Witness = EscrowWitness(ws, true, ks(tx, other), ks(tx, seller))
			return tx
		}, false},
		{"missing signature", func() *wire.MsgTx {
			tx := spendTx(amt, 0, wire.MaxTxInSequenceNum)
			s := ks(tx, seller)
			tx.TxIn[0].Witness = wire.TxWitness{nil, s.Sig, {0x01}, ws}
			return tx
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyInput(tc.tx(), 0, pk, amt)
			if tc.ok && err != nil {
				t.Fatalf("want success, got %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("want failure, script accepted")
			}
		})
	}
}
