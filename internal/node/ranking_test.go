package node

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The buyer's ranking is the book's policy: for the same candidates and
// the same random draws, bookRanking orders sellers exactly as Book.Rank
// does (the function the simulation measures), for every purpose, and
// drops the blocked ones.
func TestBookRankingIsBookRank(t *testing.T) {
	t0 := time.Now()
	cfg := reputation.DefaultConfig()
	cfg.Exploration = 0.5
	book, err := reputation.NewBook(reputation.Options{Config: cfg, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	r := bookRanking{b: book}
	var cands []contract.Candidate
	for i := range 12 {
		p := spotPeer(t)
		for k := range i % 4 * 3 {
			o := reputation.OutcomeCompleted
			if i%5 == 0 && k%2 == 0 {
				o = reputation.OutcomeFailed
			}
			if err := book.Observe(reputation.Observation{Peer: p, ContractID: "c", Outcome: o, At: t0}); err != nil {
				t.Fatal(err)
			}
		}
		cands = append(cands, contract.Candidate{Seller: p, Terms: contract.Terms{Total: int64(100 + 37*i%90)}, RTT: time.Duration(i) * 10 * time.Millisecond})
	}
	blocked := cands[0].Seller
	for range 3 {
		_ = book.Observe(reputation.Observation{Peer: blocked, ContractID: "x", Outcome: reputation.OutcomeSpotCheckMismatch, At: t0})
	}
	for _, tc := range []struct {
		purpose contract.Purpose
		opts    []reputation.RankOption
	}{
		{contract.ForJob, nil},
		{contract.ForUncheckableJob, []reputation.RankOption{reputation.Uncheckable()}},
		{contract.ForSpotCheck, []reputation.RankOption{reputation.ForSpotCheck()}},
	} {
		for seed := range uint64(50) {
			got := r.Rank(cands, tc.purpose, rand.New(rand.NewPCG(seed, 1)))
			in := make([]reputation.Candidate, len(cands))
			for i, c := range cands {
				in[i] = reputation.Candidate{Peer: c.Seller, PriceSats: uint64(c.Terms.Total), RTT: c.RTT}
			}
			want, _ := book.Rank(in, rand.New(rand.NewPCG(seed, 1)), tc.opts...)
			if len(got) != len(want) || len(got) > len(cands)-1 {
				t.Fatalf("purpose %v: %d ranked, book ranked %d of %d", tc.purpose, len(got), len(want), len(cands))
			}
			for i := range got {
				if got[i].Seller != want[i].Peer || got[i].Explore != want[i].Explore || got[i].Utility != want[i].Utility ||
					got[i].Evidence != want[i].Evidence || got[i].Seller == blocked {
					t.Fatalf("purpose %v seed %d rank %d: %s, book: %s", tc.purpose, seed, i, got[i].Seller, want[i].Peer)
				}
			}
		}
	}
}

// A spot check's majority lengthens the agreeing sellers' streaks of
// verified results, which lowers how often their jobs are checked; the
// disagreeing seller starts over.
func TestBookRankingSpotCheckStreak(t *testing.T) {
	book, err := reputation.NewBook(reputation.Options{Config: reputation.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	r := bookRanking{b: book}
	bad, good1, good2 := spotPeer(t), spotPeer(t), spotPeer(t)
	for i := range 70 {
		r.SpotCheckResult([]contract.SpotOutcome{
			{Seller: good1, ContractID: "a" + string(rune('0'+i)), Digest: "sha256:y"},
			{Seller: good2, ContractID: "b" + string(rune('0'+i)), Digest: "sha256:y"},
		})
	}
	r.SpotCheckResult([]contract.SpotOutcome{{Seller: bad, ContractID: "c1", Digest: "sha256:x"}, {Seller: good1, ContractID: "c2", Digest: "sha256:y"}, {Seller: good2, ContractID: "c3", Digest: "sha256:y"}})
	for _, p := range []peer.ID{good1, good2} {
		if s := book.Score(p); s.Verified != 71 || s.SpotCheckRate != book.Config().SpotCheckFloor {
			t.Fatalf("agreeing seller: verified %.1f, rate %.3f", s.Verified, s.SpotCheckRate)
		}
	}
	if s := book.Score(bad); s.Verified != 0 || s.SpotCheckRate != 1 {
		t.Fatalf("disagreeing seller: verified %.1f, rate %.3f", s.Verified, s.SpotCheckRate)
	}
	checks := 0
	for range 1000 {
		if r.ShouldSpotCheck(good1) {
			checks++
		}
	}
	if checks == 0 || checks > 60 {
		t.Fatalf("proven seller checked %d times in 1000 at a 2%% floor", checks)
	}
}

// reputation.exploration decides what the buyer's ranking puts first: at 1
// the seller nobody has tried leads every ranking of a checkable job, at 0
// the proven one leads all but the draws where Thompson sampling favours
// the unknown, and an uncheckable job or a spot check never goes to the
// newcomer first.
func TestExplorationReachesTheBuyer(t *testing.T) {
	proven, fresh := spotPeer(t), spotPeer(t)
	mk := func(p peer.ID) *offer.Offer {
		return &offer.Offer{Seller: p, Resources: offer.Resources{CPUMillis: 4000, MemoryBytes: 8 << 30},
			Prices: offer.Prices{CoreHour: 1e6}, BillingInterval: time.Minute}
	}
	offers := []*offer.Offer{mk(proven), mk(fresh)}
	req := &contract.Request{Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}, Duration: 10 * time.Minute, Deterministic: true}
	for _, tc := range []struct {
		exploration float64
		purpose     contract.Purpose
		first       peer.ID
		atLeast     int // of 100 rankings
	}{
		{1, contract.ForJob, fresh, 100},
		{0, contract.ForJob, proven, 85},
		{1, contract.ForUncheckableJob, proven, 100},
		{1, contract.ForSpotCheck, proven, 100},
	} {
		cfg := reputation.DefaultConfig()
		cfg.Exploration = tc.exploration
		book, err := reputation.NewBook(reputation.Options{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			_ = book.Observe(reputation.Observation{Peer: proven, ContractID: "c", Outcome: reputation.OutcomeCompleted})
		}
		rng := rand.New(rand.NewPCG(1, 2))
		firsts := 0
		for range 100 {
			got := contract.Rank(offers, req, bookRanking{b: book}, nil, tc.purpose, rng)
			if len(got) != 2 {
				t.Fatalf("ranked %d of 2", len(got))
			}
			if got[0].Seller == tc.first {
				firsts++
			}
		}
		if firsts < tc.atLeast {
			t.Errorf("exploration %v purpose %v: the expected seller first in %d of 100 rankings, want at least %d", tc.exploration, tc.purpose, firsts, tc.atLeast)
		}
	}
}
