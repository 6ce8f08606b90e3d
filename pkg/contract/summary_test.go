package contract

import (
	"testing"
)

// TestSummaries: Summaries says what List says about each record's
// identity and state.
func TestSummaries(t *testing.T) {
	m := NewMachine(NewMemStore(), Timeouts{}, nil, nil)
	for i, r := range []*Record{
		{ID: "a", Role: RoleSeller, State: StateAccepted},
		{ID: "b", Role: RoleBuyer, State: StateProposed},
		{ID: "c", Role: RoleSeller, State: StateProposed},
	} {
		if err := m.Create(r); err != nil {
			t.Fatal(i, err)
		}
	}
	if _, err := m.Move(RoleSeller, "a", StateFunded, "", nil); err != nil {
		t.Fatal(err)
	}
	for _, role := range []Role{0, RoleSeller, RoleBuyer} {
		recs, err := m.List(role)
		if err != nil {
			t.Fatal(err)
		}
		sums, err := m.Summaries(role)
		if err != nil {
			t.Fatal(err)
		}
		if len(sums) != len(recs) {
			t.Fatalf("role %d: %d summaries, %d records", role, len(sums), len(recs))
		}
		for i, r := range recs {
			if s := sums[i]; s.ID != r.ID || s.Role != r.Role || s.State != r.State {
				t.Errorf("role %d: summary %+v, record %s %s %s", role, s, r.ID, r.Role, r.State)
			}
		}
	}
}
