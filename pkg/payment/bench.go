package payment

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/ecdsa"
	"github.com/btcsuite/btcd/wire"
)

// RawSignVerify runs n rounds of one btcec ECDSA signature and its
// verification over distinct digests and returns the time taken: the
// baseline the channel-update benchmarks report their ratio against.
func RawSignVerify(n int) time.Duration {
	key, _ := btcec.NewPrivateKey()
	pub := key.PubKey()
	start := time.Now()
	for i := 0; i < n; i++ {
		d := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
		sig := ecdsa.Sign(key, d[:])
		if !sig.Verify(d[:], pub) {
			panic("btcec signature does not verify")
		}
	}
	return time.Since(start)
}

// ChannelChainVBytes is what one channel costs on chain, in virtual bytes:
// a funding transaction (one P2WPKH input, the channel output and change)
// and a close (both parties' outputs), with maximal signatures. It is the
// same whether the channel carries one contract or a hundred.
func ChannelChainVBytes() int64 {
	key, _ := btcec.NewPrivateKey()
	ws, _ := ChannelScript(key.PubKey(), key.PubKey(), 1000)
	pk, _ := P2WSH(ws)
	p2wpkh := append([]byte{0x00, 0x14}, make([]byte, 20)...)
	fund := wire.NewMsgTx(2)
	fund.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, wire.TxWitness{placeholderSig, make([]byte, 33)}))
	fund.AddTxOut(wire.NewTxOut(0, pk))
	fund.AddTxOut(wire.NewTxOut(0, p2wpkh))
	return VSize(fund) + closeVSize(ws, p2wpkh, p2wpkh)
}
