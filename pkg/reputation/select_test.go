package reputation

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestRank(t *testing.T) {
	good, bad, fresh, pricey := newIdent(t, 1).id, newIdent(t, 2).id, newIdent(t, 3).id, newIdent(t, 4).id
	setup := func(t *testing.T, cfg Config) *Book {
		b := newTestBook(t, cfg, nil, &clock{t0}, nil)
		for i := 0; i < 20; i++ {
			b.Observe(Observation{Peer: good, Outcome: OutcomeCompleted, At: t0})
			b.Observe(Observation{Peer: pricey, Outcome: OutcomeCompleted, At: t0})
		}
		b.Observe(Observation{Peer: bad, Outcome: OutcomeSpotCheckMismatch, At: t0})
		return b
	}
	cands := []Candidate{
		{Peer: bad, PriceSats: 10},
		{Peer: good, PriceSats: 100, RTT: 20 * time.Millisecond},
		{Peer: fresh, PriceSats: 100},
		{Peer: pricey, PriceSats: 300},
	}
	tests := []struct {
		name        string
		exploration float64
		opts        []RankOption
		wantFirst   peer.ID
		explore     bool
	}{
		{"proven and cheap wins without exploration", 0, nil, good, false},
		{"exploration puts the unknown first", 1, nil, fresh, true},
		{"uncheckable jobs are not explored", 1, []RankOption{Uncheckable()}, good, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Exploration = tc.exploration
			b := setup(t, cfg)
			rng := rand.New(rand.NewPCG(1, 2))
			wins := map[peer.ID]int{}
			for i := 0; i < 200; i++ {
				r, blocked := b.Rank(cands, rng, tc.opts...)
				if len(blocked) != 1 || blocked[0].Peer != bad {
					t.Fatalf("blocked %+v, want only the cheat", blocked)
				}
				if len(r) != 3 {
					t.Fatalf("ranked %d candidates", len(r))
				}
				if r[0].Explore != tc.explore {
					t.Fatalf("explore flag %v", r[0].Explore)
				}
				wins[r[0].Peer]++
			}
			// Thompson sampling is random; the expected winner must win
			// most draws.
			if wins[tc.wantFirst] < 150 {
				t.Fatalf("wins %v, want %s most", wins, tc.wantFirst)
			}
			if wins[pricey] > 10 {
				t.Fatalf("3× more expensive seller won %d times", wins[pricey])
			}
		})
	}
}

func TestRankUncheckablePrefersProven(t *testing.T) {
	good, fresh := newIdent(t, 1).id, newIdent(t, 3).id
	b := newTestBook(t, DefaultConfig(), nil, &clock{t0}, nil)
	for i := 0; i < 5; i++ {
		b.Observe(Observation{Peer: good, Outcome: OutcomeCompleted, At: t0})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100; i++ {
		// The unknown seller is ten times cheaper, yet an uncheckable job
		// goes to the proven one.
		r, _ := b.Rank([]Candidate{{Peer: fresh, PriceSats: 10}, {Peer: good, PriceSats: 100}}, rng, Uncheckable())
		if r[0].Peer != good {
			t.Fatalf("draw %d: uncheckable job to unproven seller", i)
		}
	}
	if _, ok := b.Choose(nil, rng); ok {
		t.Fatal("Choose with no candidates")
	}
}

func TestSampleBetaMean(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, ab := range [][2]float64{{1, 1}, {0.5, 0.5}, {20, 2}, {2, 30}} {
		sum := 0.0
		const n = 20000
		for i := 0; i < n; i++ {
			x := sampleBeta(rng, ab[0], ab[1])
			if x < 0 || x > 1 {
				t.Fatalf("sample %v out of [0,1]", x)
			}
			sum += x
		}
		want := ab[0] / (ab[0] + ab[1])
		if got := sum / n; got < want-0.01 || got > want+0.01 {
			t.Errorf("Beta(%v,%v) mean %.3f, want %.3f", ab[0], ab[1], got, want)
		}
	}
}
