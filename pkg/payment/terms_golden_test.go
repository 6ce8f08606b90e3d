package payment

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// TestSellerTermsGolden pins the bytes of encoded terms (they travel in a
// signed contract acceptance) and which error bad terms wrap.
func TestSellerTermsGolden(t *testing.T) {
	key, _ := hex.DecodeString("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
	st := SellerTerms{Key: key, PayoutScript: append([]byte{0x00, 0x14}, bytes.Repeat([]byte{0xab}, 20)...)}
	b := st.Encode()
	if got := hex.EncodeToString(b); got != goldenTerms {
		t.Fatalf("terms encode to %s, want %s", got, goldenTerms)
	}
	back, err := DecodeSellerTerms(b)
	if err != nil || !bytes.Equal(back.Key, st.Key) || !bytes.Equal(back.PayoutScript, st.PayoutScript) {
		t.Fatalf("round trip: %x %x %v", back.Key, back.PayoutScript, err)
	}
	for name, bad := range map[string][]byte{
		"empty":           {},
		"unknown version": append([]byte{2}, b[1:]...),
		"truncated":       b[:len(b)-1],
		"trailing":        append(bytes.Clone(b), 0),
		"non-minimal":     append([]byte{1, 0xa1, 0x00}, b[2:]...),
		"too large":       make([]byte, MaxTermsSize+1),
		"bad key":         append([]byte{1, 33, 5}, b[3:]...),
		"empty script":    append(bytes.Clone(b[:35]), 0),
	} {
		if _, err := DecodeSellerTerms(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

const goldenTerms = "01210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798160014abababababababababababababababababababab"
