package node

import "testing"

func TestEscrowPay(t *testing.T) {
	for _, v := range []int64{0, 1, 61001, 21e14} {
		if got, err := decodeEscrowPay(escrowPay(v)); err != nil || got != v {
			t.Fatalf("%d: %d, %v", v, got, err)
		}
	}
	for _, b := range [][]byte{nil, {'E'}, {'X', 1}, append(escrowPay(5), 0), escrowPay(21e14 + 1)} {
		if _, err := decodeEscrowPay(b); err == nil {
			t.Fatalf("%x decoded", b)
		}
	}
}

func FuzzEscrowPay(f *testing.F) {
	f.Add(escrowPay(61001))
	f.Add([]byte{'E', 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeEscrowPay(b)
		if err != nil {
			return
		}
		if v < 0 || string(escrowPay(v)) != string(b) {
			t.Fatalf("%x decoded to %d, which encodes differently", b, v)
		}
	})
}
