package reputation

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestAddRecordRejections(t *testing.T) {
	alice, bob, carol := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3)
	ev := contracts{
		"paid":    {Buyer: alice.id, Seller: bob.id, PaidSats: 5000},
		"paid2":   {Buyer: alice.id, Seller: bob.id, PaidSats: 5000},
		"unpaid":  {Buyer: alice.id, Seller: bob.id},
		"cheap":   {Buyer: alice.id, Seller: bob.id, PaidSats: 10},
		"others":  {Buyer: carol.id, Seller: bob.id, PaidSats: 5000},
		"selfish": {Buyer: alice.id, Seller: alice.id, PaidSats: 5000},
	}
	c := &clock{t0.Add(time.Minute)}
	b := newTestBook(t, DefaultConfig(), ev, c, nil)
	ctx := context.Background()
	valid := attest(t, alice, Attestation{ContractID: "paid", Attester: alice.id, Subject: bob.id})
	big := attest(t, alice, Attestation{ContractID: "paid2", Attester: alice.id, Subject: bob.id, Evidence: make([]byte, 9000)})
	tests := []struct {
		name string
		data []byte
		want Reason // "" = accepted
	}{
		{"valid", valid, ""},
		{"replayed", valid, ReasonReplayed},
		{"oversized", big, ReasonOversized},
		{"forged", attest(t, carol, Attestation{ContractID: "paid2", Attester: alice.id, Subject: bob.id}), ReasonForged},
		{"self-referencing", attest(t, alice, Attestation{ContractID: "selfish", Attester: alice.id, Subject: alice.id}), ReasonSelfReference},
		{"unpaid", attest(t, alice, Attestation{ContractID: "unpaid", Attester: alice.id, Subject: bob.id}), ReasonUnpaid},
		{"paid below minimum", attest(t, alice, Attestation{ContractID: "cheap", Attester: alice.id, Subject: bob.id}), ReasonUnpaid},
		{"unknown contract", attest(t, alice, Attestation{ContractID: "nope", Attester: alice.id, Subject: bob.id}), ReasonUnverifiable},
		{"not a party", attest(t, alice, Attestation{ContractID: "others", Attester: alice.id, Subject: bob.id}), ReasonUnverifiable},
		{"expired", attest(t, alice, Attestation{ContractID: "paid2", Attester: alice.id, Subject: bob.id, IssuedAt: t0.Add(-48 * time.Hour)}), ReasonExpired},
		{"from the future", attest(t, alice, Attestation{ContractID: "paid2", Attester: alice.id, Subject: bob.id, IssuedAt: t0.Add(48 * time.Hour)}), ReasonExpired},
		{"malformed", []byte{1, 2, 3}, ReasonMalformed},
		{"self trust", trustStmt(t, alice, alice.id, 1000, t0), ReasonSelfReference},
		{"trust", trustStmt(t, alice, bob.id, 1000, t0), ""},
		{"stale trust", trustStmt(t, alice, bob.id, 500, t0.Add(-time.Hour)), ReasonStale},
	}
	want := map[Reason]uint64{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := b.AddRecord(ctx, carol.id, tc.data)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var rej *Rejection
			if !errors.As(err, &rej) || !errors.Is(err, ErrRejected) || rej.Reason != tc.want {
				t.Fatalf("err %v, want reason %s", err, tc.want)
			}
			want[tc.want]++
		})
	}
	got := b.Rejections()
	for r, n := range want {
		if got[r] != n {
			t.Errorf("count %s = %d, want %d", r, got[r], n)
		}
	}
	if b.Accepted() != 2 {
		t.Errorf("accepted %d, want 2", b.Accepted())
	}
}

func TestScoreFromOwnObservations(t *testing.T) {
	p := newIdent(t, 9).id
	obs := func(outs ...Outcome) []Observation {
		var l []Observation
		for i, o := range outs {
			l = append(l, Observation{Peer: p, ContractID: string(rune('a' + i)), Outcome: o, At: t0})
		}
		return l
	}
	rep := func(o Outcome, n int) []Outcome {
		l := make([]Outcome, n)
		for i := range l {
			l[i] = o
		}
		return l
	}
	tests := []struct {
		name        string
		obs         []Observation
		blocked     bool
		minM, maxM  float64
		wantOutcome string
	}{
		{"unknown", nil, false, 0.5, 0.5, ""},
		{"one honest failure does not block", obs(OutcomeFailed), false, 0.3, 0.4, "failed"},
		{"vanished", obs(OutcomeAbandoned), true, 0, 0.3, "abandoned"},
		{"spot check mismatch", obs(OutcomeSpotCheckMismatch), true, 0, 0.1, "spot_check_mismatch"},
		{"mismatch after good record", obs(append(rep(OutcomeCompleted, 10), OutcomeSpotCheckMismatch)...), false, 0.45, 0.55, "completed"},
		{"reliable", obs(rep(OutcomeCompleted, 20)...), false, 0.95, 1, "completed"},
		{"always late", obs(rep(OutcomeLate, 10)...), false, 0.45, 0.55, "late"},
		{"inflated usage", []Observation{
			{Peer: p, ContractID: "u1", Outcome: OutcomeCompleted, UsageRatio: 0.7, At: t0},
			{Peer: p, ContractID: "u2", Outcome: OutcomeCompleted, UsageRatio: 0.7, At: t0},
		}, true, 0, 0.4, "completed"},
		{"usage within tolerance", []Observation{
			{Peer: p, ContractID: "u1", Outcome: OutcomeCompleted, UsageRatio: 0.97, At: t0},
			{Peer: p, ContractID: "u2", Outcome: OutcomeCompleted, UsageRatio: 0.97, At: t0},
		}, false, 0.7, 0.8, "completed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBook(t, DefaultConfig(), nil, &clock{t0}, nil)
			for _, o := range tc.obs {
				if err := b.Observe(o); err != nil {
					t.Fatal(err)
				}
			}
			s := b.Score(p)
			if s.Blocked != tc.blocked || b.Blocked(p) != tc.blocked {
				t.Errorf("blocked %v, want %v (%s)", s.Blocked, tc.blocked, s.Why)
			}
			if s.Mean < tc.minM || s.Mean > tc.maxM {
				t.Errorf("mean %.3f not in [%.2f, %.2f]", s.Mean, tc.minM, tc.maxM)
			}
			if !(s.Low <= s.Mean && s.Mean <= s.High) || s.StdDev <= 0 {
				t.Errorf("interval %.3f..%.3f around %.3f, sd %.3f", s.Low, s.High, s.Mean, s.StdDev)
			}
			if tc.wantOutcome != "" && (len(s.Sources) != 1 || s.Sources[0].Outcomes[tc.wantOutcome] == 0) {
				t.Errorf("explanation lacks %s: %+v", tc.wantOutcome, s.Sources)
			}
		})
	}
}

func TestDecayAndUncertainty(t *testing.T) {
	p := newIdent(t, 9).id
	c := &clock{t0}
	b := newTestBook(t, DefaultConfig(), nil, c, nil)
	for i := 0; i < 8; i++ {
		b.Observe(Observation{Peer: p, ContractID: "x", Outcome: OutcomeCompleted, At: t0})
	}
	before := b.Score(p)
	c.t = t0.Add(DefaultConfig().HalfLife)
	after := b.Score(p)
	if math.Abs(after.Evidence-before.Evidence/2) > 1e-9 {
		t.Fatalf("evidence after one half-life %.3f, want %.3f", after.Evidence, before.Evidence/2)
	}
	if after.StdDev <= before.StdDev {
		t.Fatalf("uncertainty should grow as evidence decays: %.3f → %.3f", before.StdDev, after.StdDev)
	}
}

// Attestations count in proportion to trust: not at all from strangers,
// through trust statements up to max_hops, and no longer once trust is
// withdrawn.
func TestAttestationsWeightedByTrust(t *testing.T) {
	alice, bob, carol, dave, seller := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3), newIdent(t, 4), newIdent(t, 5)
	ev := contracts{"k1": {Buyer: dave.id, Seller: seller.id, PaidSats: 9000}}
	cfg := DefaultConfig()
	cfg.MaxHops = 3
	c := &clock{t0.Add(time.Minute)}
	b := newTestBook(t, cfg, ev, c, nil)
	ctx := context.Background()
	// dave, a stranger for now, reports a failed spot check.
	if err := b.AddRecord(ctx, dave.id, attest(t, dave, Attestation{ContractID: "k1", Attester: dave.id, Subject: seller.id, Outcome: OutcomeSpotCheckMismatch})); err != nil {
		t.Fatal(err)
	}
	if s := b.Score(seller.id); s.Evidence != 0 || s.Blocked {
		t.Fatalf("stranger's attestation counted: %+v", s)
	}
	// Self → alice → bob → carol → dave is four hops: still out of reach.
	if err := b.SetTrust(alice.id, 1); err != nil {
		t.Fatal(err)
	}
	for _, st := range [][]byte{trustStmt(t, alice, bob.id, 1000, t0), trustStmt(t, bob, carol.id, 1000, t0), trustStmt(t, carol, dave.id, 1000, t0)} {
		if err := b.AddRecord(ctx, alice.id, st); err != nil {
			t.Fatal(err)
		}
	}
	if tr := b.Trust(dave.id); tr != 0 {
		t.Fatalf("trust beyond max_hops: %.2f", tr)
	}
	if tr := b.Trust(carol.id); tr != 1 {
		t.Fatalf("trust in carol (3 hops) %.2f", tr)
	}
	// Trusting bob directly brings dave within three hops.
	if err := b.SetTrust(bob.id, 0.8); err != nil {
		t.Fatal(err)
	}
	if tr := b.Trust(dave.id); math.Abs(tr-0.8) > 1e-9 {
		t.Fatalf("trust in dave %.3f, want 0.8", tr)
	}
	s := b.Score(seller.id)
	if !s.Blocked || len(s.Sources) != 1 || s.Sources[0].From != dave.id || math.Abs(s.Sources[0].Weight-0.8*cfg.AttestationWeight) > 1e-9 {
		t.Fatalf("attestation via trust: %+v", s)
	}
	if !strings.Contains(s.Why, "blocked") {
		t.Fatalf("explanation %q", s.Why)
	}
	// Revoking trust in bob puts dave out of reach again.
	if err := b.SetTrust(bob.id, 0); err != nil {
		t.Fatal(err)
	}
	if s := b.Score(seller.id); s.Blocked || s.Evidence != 0 {
		t.Fatalf("revoked trust still counts: %+v", s)
	}
	if es := b.Edges(); len(es) != 1 || es[0].To != alice.id {
		t.Fatalf("edges %+v", es)
	}
}

func TestPerAttesterCap(t *testing.T) {
	alice, seller := newIdent(t, 1), newIdent(t, 5)
	ev := contracts{}
	var recs [][]byte
	for i := 0; i < 40; i++ {
		id := string(rune('A' + i))
		ev[id] = PaidContract{Buyer: alice.id, Seller: seller.id, PaidSats: 5000}
		recs = append(recs, attest(t, alice, Attestation{ContractID: id, Attester: alice.id, Subject: seller.id}))
	}
	cfg := DefaultConfig()
	b := newTestBook(t, cfg, ev, &clock{t0}, nil)
	b.SetTrust(alice.id, 1)
	for _, r := range recs {
		if err := b.AddRecord(context.Background(), alice.id, r); err != nil {
			t.Fatal(err)
		}
	}
	if s := b.Score(seller.id); math.Abs(s.Evidence-cfg.MaxPerAttester*cfg.AttestationWeight) > 1e-9 {
		t.Fatalf("one attester contributed %.2f, cap is %.2f", s.Evidence, cfg.MaxPerAttester*cfg.AttestationWeight)
	}
}

// Everything a Book learned survives a restart through its Store.
func TestBookReload(t *testing.T) {
	alice, seller := newIdent(t, 1), newIdent(t, 5)
	ev := contracts{"k": {Buyer: alice.id, Seller: seller.id, PaidSats: 5000}}
	st := NewMemStore()
	c := &clock{t0.Add(time.Minute)}
	b := newTestBook(t, DefaultConfig(), ev, c, st)
	b.SetTrust(alice.id, 0.7)
	b.Observe(Observation{Peer: seller.id, ContractID: "own", Outcome: OutcomeLate, UsageRatio: 0.5, At: t0})
	env := attest(t, alice, Attestation{ContractID: "k", Attester: alice.id, Subject: seller.id, Outcome: OutcomeAbandoned})
	if err := b.AddRecord(context.Background(), alice.id, env); err != nil {
		t.Fatal(err)
	}
	want := b.Score(seller.id)
	again := newTestBook(t, DefaultConfig(), ev, c, st)
	got := again.Score(seller.id)
	if math.Abs(got.Mean-want.Mean) > 1e-12 || got.Evidence != want.Evidence || len(got.Sources) != 2 {
		t.Fatalf("after reload %+v, want %+v", got, want)
	}
	if err := again.AddRecord(context.Background(), alice.id, env); !errors.Is(err, ErrRejected) {
		t.Fatalf("replay after reload accepted: %v", err)
	}
}

func TestObservationEdgeEncoding(t *testing.T) {
	o := Observation{Peer: peer.ID("p"), ContractID: "c", Outcome: OutcomeLate, UsageRatio: 0.25, At: t0}
	got, err := UnmarshalObservation(MarshalObservation(o))
	if err != nil || got != o {
		t.Fatalf("observation %+v, %v", got, err)
	}
	e := Edge{From: Self, To: peer.ID("q"), Weight: 0.5, Updated: t0}
	ge, err := UnmarshalEdge(MarshalEdge(e))
	if err != nil || ge != e {
		t.Fatalf("edge %+v, %v", ge, err)
	}
	if _, err := UnmarshalObservation([]byte{0xff}); err == nil {
		t.Fatal("garbage observation decoded")
	}
}
