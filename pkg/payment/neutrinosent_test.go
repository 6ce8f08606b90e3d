package payment

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

func sentSample(n int) []sentTx {
	var out []sentTx
	for i := range n {
		tx := wire.NewMsgTx(2)
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Hash: chainhash.Hash{byte(i + 1)}, Index: uint32(i)}, nil, wire.TxWitness{{1, 2}, bytes.Repeat([]byte{2}, 33)}))
		tx.AddTxOut(wire.NewTxOut(int64(1000+i), []byte{0x00, 0x14, byte(i)}))
		out = append(out, sentTx{Height: int32(100 + i), Tx: tx})
	}
	return out
}

// TestSentFile: the light client's file of its own unconfirmed
// transactions reads back what was written; a cut, a flipped byte, an
// unknown version or trailing bytes are refused with errSentFile.
func TestSentFile(t *testing.T) {
	in := sentSample(3)
	b, err := encodeSent(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeSent(b)
	if err != nil || len(out) != 3 {
		t.Fatalf("decode: %d entries, %v", len(out), err)
	}
	for i := range in {
		if out[i].Height != in[i].Height || out[i].Tx.TxHash() != in[i].Tx.TxHash() {
			t.Fatalf("entry %d: %+v, want %+v", i, out[i], in[i])
		}
	}
	empty, _ := encodeSent(nil)
	if out, err := decodeSent(empty); err != nil || len(out) != 0 {
		t.Fatalf("empty file: %v %v", out, err)
	}
	for cut := range len(b) {
		if _, err := decodeSent(b[:cut]); !errors.Is(err, errSentFile) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := decodeSent(c); !errors.Is(err, errSentFile) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	dup, _ := encodeSent(append(sentSample(1), sentSample(1)...))
	if _, err := decodeSent(dup); !errors.Is(err, errSentFile) {
		t.Fatalf("a transaction twice: %v", err)
	}
}

// TestSentFileSetAside: a light client whose file is corrupt starts
// without it and sets it aside, naming it; a good file is loaded.
func TestSentFileSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, sentFileName)
	if err := os.WriteFile(path, []byte("not a file of ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &NeutrinoChain{log: testLogger(t), sent: map[chainhash.Hash]*wire.MsgTx{}, sentAt: map[chainhash.Hash]int32{}}
	n.loadSent(dir)
	if len(n.sent) != 0 {
		t.Fatalf("a corrupt file gave %d transactions", len(n.sent))
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the corrupt file is still in place: %v", err)
	}
	if m, _ := filepath.Glob(path + ".bad-*"); len(m) != 1 {
		t.Fatalf("set aside as %v", m)
	}
	b, _ := encodeSent(sentSample(2))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	n.loadSent(dir)
	if len(n.sent) != 2 || len(n.sentAt) != 2 {
		t.Fatalf("loaded %d transactions (%d heights), want 2", len(n.sent), len(n.sentAt))
	}
}

// FuzzDecodeSent: whatever the file holds, decodeSent returns entries
// that encode to a file decoding to the same entries, or an error
// wrapping errSentFile; it never panics. The fuzzer writes the body and
// the test adds its checksum (else nearly every input fails on it).
func FuzzDecodeSent(f *testing.F) {
	for _, n := range []int{0, 1, 3} {
		b, _ := encodeSent(sentSample(n))
		f.Add(b[:len(b)-sha256.Size])
	}
	f.Add([]byte(sentMagic))
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := sha256.Sum256(body)
		b := append(bytes.Clone(body), sum[:]...)
		out, err := decodeSent(b)
		if err != nil {
			if !errors.Is(err, errSentFile) {
				t.Fatalf("error not wrapping errSentFile: %v", err)
			}
			return
		}
		again, err := encodeSent(out)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeSent(again)
		if err != nil || len(back) != len(out) {
			t.Fatalf("%d entries encode to a file that decodes to %d: %v", len(out), len(back), err)
		}
		for i := range out {
			if back[i].Height != out[i].Height || back[i].Tx.TxHash() != out[i].Tx.TxHash() {
				t.Fatalf("entry %d changed on the way back", i)
			}
		}
	})
}
