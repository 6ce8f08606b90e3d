package store

import (
	"testing"
	"time"
)

// TestEscrowPayoutRecordedOnce: a settled escrow counts once in the
// history's earnings and fees, however often it is recorded (a restart
// records every settled escrow again), and is listed from its time on.
func TestEscrowPayoutRecordedOnce(t *testing.T) {
	h, _ := openHistory(t)
	at := time.Now().UTC()
	p := EscrowPayout{Escrow: "ab:0", Contract: "c1", Role: "seller", Kind: "release", At: at, Amount: 4000, ToSeller: 700, ToBuyer: 2900, SpendFee: 400, Earned: 1100, FeesPaid: 400}
	for i, want := range []bool{true, false} {
		added, err := h.RecordEscrowPayout(p)
		if err != nil || added != want {
			t.Fatalf("record %d: added %v, %v", i, added, err)
		}
	}
	bs, err := h.Buckets(at.Add(-time.Hour), at.Add(time.Hour))
	if err != nil || len(bs) != 1 || bs[0].EarnedSat != 1100 || bs[0].FeesSat != 400 {
		t.Fatalf("buckets %+v, %v", bs, err)
	}
	if _, err := h.RecordEscrowPayout(EscrowPayout{}); err == nil {
		t.Fatal("a payout without an escrow was recorded")
	}
	list, err := h.EscrowPayouts(at.Add(-time.Minute))
	if err != nil || len(list) != 1 || list[0] != p {
		t.Fatalf("payouts %+v, %v", list, err)
	}
	if list, _ := h.EscrowPayouts(at.Add(time.Minute)); len(list) != 0 {
		t.Fatalf("payouts after it: %+v", list)
	}
}
