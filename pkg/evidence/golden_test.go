package evidence_test

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/evidence"
)

// TestGoldenEncoding pins the bytes of encoded evidence (attestations carry
// them and their signatures cover them).
func TestGoldenEncoding(t *testing.T) {
	e := &evidence.Evidence{Contract: []byte("contract"), Open: bytes.Repeat([]byte{7}, 200), Update: nil}
	b := e.Encode()
	if got := hex.EncodeToString(b); got != goldenEvidence {
		t.Fatalf("evidence encodes to\n%s\nwant\n%s", got, goldenEvidence)
	}
	back, err := evidence.Decode(b)
	if err != nil || !bytes.Equal(back.Encode(), b) || len(back.Update) != 0 || cap(back.Contract) != len(back.Contract) {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

const goldenEvidence = "0108636f6e7472616374c801070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070700"
