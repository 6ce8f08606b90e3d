package reputation

import (
	"strings"
	"testing"
	"time"
)

// TestFundingOutcomes: a proven double-spend of a channel funding blocks
// the buyer at once; a funding that never confirmed weighs half a failed
// contract (four in a half-life block: three are just under min_evidence). Each keeps its reason through the store and a
// restart, a Score shows the newest few, and Forget drops them.
func TestFundingOutcomes(t *testing.T) {
	c := &clock{t: t0}
	st := NewMemStore()
	b := newTestBook(t, DefaultConfig(), nil, c, st)
	cheat, slow := newIdent(t, 1).id, newIdent(t, 2).id
	why := "funding double-spent: its input is spent by ab12"
	if err := b.Observe(Observation{Peer: cheat, ContractID: "channel:x:0", Outcome: OutcomeFundingDoubleSpent, Reason: why}); err != nil {
		t.Fatal(err)
	}
	if s := b.Score(cheat); !s.Blocked || s.Evidence != 10 || len(s.Notes) != 1 || s.Notes[0].Reason != why || s.Notes[0].Outcome != "funding_double_spent" {
		t.Fatalf("after a double-spend: %+v", s)
	}
	for i := range 7 {
		c.t = c.t.Add(time.Second)
		if err := b.Observe(Observation{Peer: slow, ContractID: "channel:y:" + string(rune('0'+i)), Outcome: OutcomeFundingUnconfirmed,
			Reason: "funding not confirmed: " + strings.Repeat("x", 400)}); err != nil {
			t.Fatal(err)
		}
		if s := b.Score(slow); s.Blocked != (i >= 3) {
			t.Fatalf("after %d unconfirmed fundings: blocked %v (%+v)", i+1, s.Blocked, s)
		}
	}
	// Kept through the store (as the node's database keeps it).
	var obs []Observation
	snap, _ := st.Load()
	for _, o := range snap.Observations {
		got, err := UnmarshalObservation(MarshalObservation(o))
		if err != nil || got.Reason != o.Reason || len(got.Reason) > maxReason {
			t.Fatalf("stored observation %+v: %+v %v", o, got, err)
		}
		obs = append(obs, got)
	}
	// A later version's observation (an outcome and a field this one
	// does not know) is skipped, not fatal.
	later, err := UnmarshalObservation(append(MarshalObservation(Observation{Peer: slow, ContractID: "x", Outcome: 99, At: c.t}), 9<<3, 1))
	if err != nil {
		t.Fatalf("a later version's observation: %v", err)
	}
	obs = append(obs, later)
	b2 := newTestBook(t, DefaultConfig(), nil, c, &MemStore{obs: obs, records: map[string][]byte{}})
	if s := b2.Score(slow); len(s.Notes) != maxNotes || s.Notes[maxNotes-1].ContractID != "channel:y:6" || !s.Blocked {
		t.Fatalf("after a restart: %+v", s)
	}
	if err := b2.Forget(cheat); err != nil {
		t.Fatal(err)
	}
	if s := b2.Score(cheat); s.Blocked || len(s.Notes) != 0 {
		t.Fatalf("after forget: %+v", s)
	}
}
