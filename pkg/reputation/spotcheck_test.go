package reputation

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestResolveSpotCheck(t *testing.T) {
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	v, m := OutcomeVerified, OutcomeSpotCheckMismatch
	tests := []struct {
		name    string
		results []SpotResult
		decided bool
		want    map[peer.ID]Outcome
	}{
		{"agree", []SpotResult{{a, "1", "x"}, {b, "2", "x"}}, true, map[peer.ID]Outcome{a: v, b: v}},
		{"two disagree: need a third", []SpotResult{{a, "1", "x"}, {b, "2", "y"}}, false, nil},
		{"majority blames the odd one", []SpotResult{{a, "1", "x"}, {b, "2", "y"}, {c, "3", "x"}}, true, map[peer.ID]Outcome{a: v, b: m, c: v}},
		{"all differ", []SpotResult{{a, "1", "x"}, {b, "2", "y"}, {c, "3", "z"}}, false, nil},
		{"nothing", nil, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs, decided := ResolveSpotCheck(tc.results, t0)
			if decided != tc.decided || len(obs) != len(tc.want) {
				t.Fatalf("decided %v obs %+v", decided, obs)
			}
			for _, o := range obs {
				if o.Outcome != tc.want[o.Peer] || o.ContractID == "" || !o.At.Equal(t0) {
					t.Fatalf("observation %+v, want outcome %s", o, tc.want[o.Peer])
				}
			}
		})
	}
}

func TestSpotCheckRate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SpotCheckAllBelow, cfg.SpotCheckFloor = 45, 0.02
	for _, tc := range []struct{ n, want float64 }{
		{0, 1}, {10, 1}, {44.9, 1}, {45, 1.0 / 45}, {49, 1.0 / 49}, {50, 0.02}, {1000, 0.02},
	} {
		if got := cfg.SpotCheckRate(tc.n); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("rate after %v verified: %v, want %v", tc.n, got, tc.want)
		}
	}
	// Without a warm-up the rate is 1/n from the start.
	cfg.SpotCheckAllBelow, cfg.SpotCheckFloor = 0, 0
	for _, tc := range []struct{ n, want float64 }{{0, 1}, {0.5, 1}, {1, 1}, {4, 0.25}} {
		if got := cfg.SpotCheckRate(tc.n); got != tc.want {
			t.Errorf("rate after %v verified without warm-up: %v, want %v", tc.n, got, tc.want)
		}
	}
}

// checkShare is the share of n ShouldSpotCheck draws that say yes.
func checkShare(b *Book, p peer.ID, n int, rng *rand.Rand) float64 {
	yes := 0
	for i := 0; i < n; i++ {
		if b.ShouldSpotCheck(p, true, rng) {
			yes++
		}
	}
	return float64(yes) / float64(n)
}

// A new seller's every deterministic job is checked; after n verified
// results in a row about 1/n of them, down to the floor; a mismatch starts
// over, and a verified result older than the mismatch does not count.
func TestAdaptiveSpotCheck(t *testing.T) {
	seller := newIdent(t, 1).id
	cfg := DefaultConfig()
	cfg.SpotCheckAllBelow = 45 // so that 1/n is above the floor for a while
	c := &clock{t0}
	st := NewMemStore()
	b := newTestBook(t, cfg, nil, c, st)
	rng := rand.New(rand.NewPCG(7, 8))
	if b.ShouldSpotCheck(seller, false, rng) {
		t.Fatal("a non-deterministic job was checked")
	}
	if got := checkShare(b, seller, 200, rng); got != 1 {
		t.Fatalf("new seller checked %.2f of the time, want every job", got)
	}
	verify := func(k int) {
		for i := 0; i < k; i++ {
			c.t = c.t.Add(time.Second)
			if err := b.Observe(Observation{Peer: seller, ContractID: "v", Outcome: OutcomeVerified, At: c.t}); err != nil {
				t.Fatal(err)
			}
		}
	}
	verify(44)
	if got := checkShare(b, seller, 200, rng); got != 1 {
		t.Fatalf("after 44 verified results checked %.2f of the time, want every job", got)
	}
	verify(1)
	s := b.Score(seller)
	if math.Abs(s.Verified-45) > 0.01 || math.Abs(s.SpotCheckRate-1.0/45) > 1e-3 {
		t.Fatalf("after 45 verified results: verified %.3f, rate %.4f", s.Verified, s.SpotCheckRate)
	}
	if s.Evidence != 0 {
		t.Fatalf("verified results added %.2f evidence to the score; the contracts' own outcomes count", s.Evidence)
	}
	if got := checkShare(b, seller, 20000, rng); math.Abs(got-1.0/45) > 0.005 {
		t.Fatalf("after 45 verified results checked %.4f of the time, want about 1/45", got)
	}
	verify(200)
	if got := checkShare(b, seller, 20000, rng); math.Abs(got-cfg.SpotCheckFloor) > 0.004 {
		t.Fatalf("proven seller checked %.4f of the time, want the floor %.2f", got, cfg.SpotCheckFloor)
	}
	// Restarted: the streak is rebuilt from the stored observations.
	again := newTestBook(t, cfg, nil, c, st)
	if s := again.Score(seller); math.Abs(s.Verified-245) > 0.1 || s.SpotCheckRate != cfg.SpotCheckFloor {
		t.Fatalf("after reload: verified %.2f, rate %.4f", s.Verified, s.SpotCheckRate)
	}
	// A mismatch starts over; a verified result that happened before it
	// and arrives after it does not count.
	lie := c.t.Add(time.Second)
	if err := b.Observe(Observation{Peer: seller, ContractID: "m", Outcome: OutcomeSpotCheckMismatch, At: lie}); err != nil {
		t.Fatal(err)
	}
	if err := b.Observe(Observation{Peer: seller, ContractID: "late", Outcome: OutcomeVerified, At: lie.Add(-time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	c.t = lie
	if s := b.Score(seller); s.Verified != 0 || s.SpotCheckRate != 1 {
		t.Fatalf("after a mismatch: verified %.2f, rate %.2f", s.Verified, s.SpotCheckRate)
	}
	// Garbage the buyer noticed itself is a lie too.
	verify(50)
	if err := b.Observe(Observation{Peer: seller, ContractID: "g", Outcome: OutcomeInvalid, At: c.t.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if s := b.Score(seller); s.Verified != 0 {
		t.Fatalf("after garbage: verified %.2f", s.Verified)
	}
}

// Trusted attesters' verified results count, weighted like the rest of
// their evidence and capped per attester; a stranger's do not; a mismatch a
// trusted attester reports ends the streak for everyone's results before it.
func TestSpotCheckStreakFromAttesters(t *testing.T) {
	alice, bob, mallory, seller := newIdent(t, 1), newIdent(t, 2), newIdent(t, 3), newIdent(t, 5)
	ev := contracts{}
	cfg := DefaultConfig()
	c := &clock{t0.Add(time.Hour)}
	b := newTestBook(t, cfg, ev, c, nil)
	if err := b.SetTrust(alice.id, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.SetTrust(bob.id, 0.5); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	send := func(from ident, n int, o Outcome, at time.Time) {
		t.Helper()
		for i := 0; i < n; i++ {
			id := string(from.id[len(from.id)-4:]) + o.String() + string(rune('A'+i)) + at.Format("150405")
			ev[id] = PaidContract{Buyer: from.id, Seller: seller.id, PaidSats: 5000}
			// How the contract ended, then the spot check's verdict: both
			// are kept (one of each per attester and contract).
			if err := b.AddRecord(ctx, from.id, attest(t, from, Attestation{ContractID: id, Attester: from.id, Subject: seller.id, IssuedAt: at})); err != nil {
				t.Fatal(err)
			}
			env := attest(t, from, Attestation{ContractID: id, Attester: from.id, Subject: seller.id, Outcome: o, IssuedAt: at})
			if err := b.AddRecord(ctx, from.id, env); err != nil {
				t.Fatal(err)
			}
			if err := b.AddRecord(ctx, from.id, env); !errors.Is(err, ErrRejected) {
				t.Fatalf("replayed verdict: %v", err)
			}
		}
	}
	send(mallory, 30, OutcomeVerified, t0)
	if s := b.Score(seller.id); s.Verified != 0 {
		t.Fatalf("a stranger's verified results counted: %.2f", s.Verified)
	}
	send(alice, 4, OutcomeVerified, t0)
	send(bob, 30, OutcomeVerified, t0) // capped at max_per_attester
	want := 4*cfg.AttestationWeight + 0.5*cfg.AttestationWeight*cfg.MaxPerAttester
	if s := b.Score(seller.id); math.Abs(s.Verified-want) > 1e-3 {
		t.Fatalf("verified %.3f, want %.3f", s.Verified, want)
	}
	send(bob, 1, OutcomeSpotCheckMismatch, t0.Add(time.Minute))
	if s := b.Score(seller.id); s.Verified != 0 || s.SpotCheckRate != 1 {
		t.Fatalf("after a trusted attester's mismatch: verified %.3f rate %.2f", s.Verified, s.SpotCheckRate)
	}
	send(alice, 2, OutcomeVerified, t0.Add(2*time.Minute))
	if s := b.Score(seller.id); math.Abs(s.Verified-2*cfg.AttestationWeight) > 1e-3 {
		t.Fatalf("verified after the mismatch %.3f, want %.3f", s.Verified, 2*cfg.AttestationWeight)
	}
}

// CatchWithin is what the book's spot checks do: a seller lying on 10% of
// its contracts, each checked contract verified or caught, is caught within
// 50 contracts as often as CatchWithin says, and at least 99% of the time
// with the shipped defaults.
func TestCatchWithin(t *testing.T) {
	cfg := DefaultConfig()
	want := cfg.CatchWithin(0.1, 50)
	if want < 0.99 {
		t.Fatalf("defaults catch a 10%% liar within 50 contracts with probability %.4f, goal ≥ 0.99", want)
	}
	if never := (Config{SpotCheckAllBelow: 0, SpotCheckFloor: 0}).CatchWithin(0.1, 50); never >= want {
		t.Fatalf("1/n from the start catches %.3f, not less than the warm-up's %.3f", never, want)
	}
	seller := newIdent(t, 1).id
	rng := rand.New(rand.NewPCG(9, 10))
	const trials = 3000
	caught := 0
	for i := 0; i < trials; i++ {
		c := &clock{t0}
		b := newTestBook(t, cfg, nil, c, nil)
		for k := 0; k < 50; k++ {
			c.t = c.t.Add(time.Minute)
			lie := rng.Float64() < 0.1
			if !b.ShouldSpotCheck(seller, true, rng) {
				continue
			}
			if lie {
				caught++
				break
			}
			if err := b.Observe(Observation{Peer: seller, ContractID: "v", Outcome: OutcomeVerified, At: c.t}); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := float64(caught) / trials
	if se := math.Sqrt(want * (1 - want) / trials); math.Abs(got-want) > 4*se+1e-3 {
		t.Fatalf("book caught %.4f of liars within 50 contracts, CatchWithin says %.4f", got, want)
	}
	t.Logf("caught within 50 contracts: book %.4f (%d trials), CatchWithin %.4f", got, trials, want)
}

// A spot check's re-run goes to the best proven seller, whatever the price,
// never to an unknown one, and equal records share the work.
func TestRankForSpotCheck(t *testing.T) {
	proven, proven2, fresh, shaky := newIdent(t, 1).id, newIdent(t, 2).id, newIdent(t, 3).id, newIdent(t, 4).id
	cfg := DefaultConfig()
	cfg.Exploration = 1
	b := newTestBook(t, cfg, nil, &clock{t0}, nil)
	for i := 0; i < 30; i++ {
		b.Observe(Observation{Peer: proven, Outcome: OutcomeCompleted, At: t0})
		b.Observe(Observation{Peer: proven2, Outcome: OutcomeCompleted, At: t0})
	}
	for i := 0; i < 4; i++ {
		b.Observe(Observation{Peer: shaky, Outcome: OutcomeCompleted, At: t0})
	}
	cands := []Candidate{{Peer: fresh, PriceSats: 1}, {Peer: shaky, PriceSats: 10}, {Peer: proven, PriceSats: 900}, {Peer: proven2, PriceSats: 1000}}
	rng := rand.New(rand.NewPCG(11, 12))
	firsts := map[peer.ID]int{}
	for i := 0; i < 400; i++ {
		r, _ := b.Rank(cands, rng, ForSpotCheck())
		if len(r) != 4 || r[0].Explore || r[2].Peer != shaky || r[3].Peer != fresh {
			t.Fatalf("spot-check ranking %v", []peer.ID{r[0].Peer, r[1].Peer, r[2].Peer, r[3].Peer})
		}
		firsts[r[0].Peer]++
	}
	if firsts[proven] < 150 || firsts[proven2] < 150 {
		t.Fatalf("equal records did not share the checks: %v", firsts)
	}
}
