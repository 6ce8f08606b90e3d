package reputation

import (
	"context"
	"testing"
	"time"
)

// TestForget: a seller blocked by this node's own failures and a trusted
// attester's report is unblocked by Forget, also after a restart; what
// happens after counts again, what was issued before does not come back.
func TestForget(t *testing.T) {
	alice, seller, other := newIdent(t, 1), newIdent(t, 5), newIdent(t, 6)
	ev := contracts{"k1": {Buyer: alice.id, Seller: seller.id, PaidSats: 5000}, "k2": {Buyer: alice.id, Seller: seller.id, PaidSats: 5000}}
	st := NewMemStore()
	c := &clock{t0.Add(time.Minute)}
	cfg := DefaultConfig()
	b := newTestBook(t, cfg, ev, c, st)
	if err := b.SetTrust(alice.id, 1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.AddRecord(ctx, alice.id, attest(t, alice, Attestation{ContractID: "k1", Attester: alice.id, Subject: seller.id, Outcome: OutcomeAbandoned})); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for _, p := range []ident{seller, other} {
			if err := b.Observe(Observation{Peer: p.id, ContractID: string(rune('a' + i)), Outcome: OutcomeFailed, At: t0.Add(time.Duration(i) * time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !b.Blocked(seller.id) || !b.Blocked(other.id) {
		t.Fatalf("not blocked after three failures: %+v", b.Score(seller.id))
	}
	if err := b.Observe(Observation{Peer: seller.id, Outcome: outcomeForget}); err == nil {
		t.Fatal("Observe took the forget marker as an outcome")
	}

	c.t = c.t.Add(time.Minute)
	if err := b.Forget(seller.id); err != nil {
		t.Fatal(err)
	}
	check := func(b *Book, when string) {
		t.Helper()
		if s := b.Score(seller.id); s.Blocked || s.Evidence != 0 || len(s.Sources) != 0 {
			t.Fatalf("%s: forgotten seller %+v", when, s)
		}
		if !b.Blocked(other.id) {
			t.Fatalf("%s: forgetting one peer unblocked another", when)
		}
		for _, p := range b.Peers() {
			if p == seller.id {
				t.Fatalf("%s: forgotten seller still listed", when)
			}
		}
	}
	check(b, "after Forget")
	again := newTestBook(t, cfg, ev, c, st)
	if err := again.SetTrust(alice.id, 1); err != nil {
		t.Fatal(err)
	}
	check(again, "after a restart")

	// What was issued before the forgetting stays out; what comes after
	// counts.
	old := attest(t, alice, Attestation{ContractID: "k2", Attester: alice.id, Subject: seller.id, Outcome: OutcomeFailed, IssuedAt: t0.Add(30 * time.Second)})
	_ = again.AddRecord(ctx, alice.id, old)
	check(again, "after an old attestation")
	if err := again.Observe(Observation{Peer: seller.id, ContractID: "new", Outcome: OutcomeCompleted, At: c.t.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if s := again.Score(seller.id); s.Evidence != 1 || s.Blocked || s.Mean <= 0.5 {
		t.Fatalf("a contract after Forget: %+v", s)
	}
}
