package sim

import (
	"bytes"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// TestGoals runs the market in full (the goals are stated for
// 5,000 contracts: with fewer, each cheat's unavoidable first contract
// weighs more) and checks the three goals of issue 6. About 30 s, most of
// it Ed25519 verification of ~365,000 attestation deliveries.
func TestGoals(t *testing.T) {
	if testing.Short() {
		t.Skip("the full simulation (make sim) takes minutes: not in -short")
	}
	cfg := DefaultConfig()
	random, err := Run(cfg, Random)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := Run(cfg, Blackbox)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	PrintTable(&out, cfg, []Result{random, bb})
	t.Log("\n" + out.String())

	if ratio := bb.LostPer1000() / random.LostPer1000(); ratio > 0.10 {
		t.Errorf("value lost to cheats is %.1f%% of the random baseline, goal ≤ 10%%", 100*ratio)
	}
	served, total, _, max := bb.FirstJobStats()
	if served != total || max > 50 {
		t.Errorf("late honest sellers: %d/%d served, slowest after %d contracts, goal ≤ 50", served, total, max)
	}
	if share := bb.SybilShare(); share >= 0.01 {
		t.Errorf("Sybil ring won %.2f%% of the work, goal < 1%%", 100*share)
	}
	if iso, tot, _, _ := bb.IsolationStats(); iso < tot*9/10 {
		t.Errorf("only %d of %d cheats isolated", iso, tot)
	}
	if bb.HonestBlocked > 2 {
		t.Errorf("%d honest sellers blocked by most buyers", bb.HonestBlocked)
	}
	// The ring's unpaid, replayed and self-referencing vouches were seen
	// and ignored.
	for _, r := range []string{"unpaid", "replayed", "self_reference"} {
		if bb.Rejected[reputationReason(r)] == 0 {
			t.Errorf("no %s attestations counted: %v", r, bb.Rejected)
		}
	}
	if !strings.Contains(out.String(), "blackbox") {
		t.Error("table lacks the blackbox row")
	}
}

func TestDeterministic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sellers, cfg.Buyers, cfg.Contracts, cfg.SybilRing, cfg.LateHonest = 40, 6, 200, 4, 2
	a, err := Run(cfg, Blackbox)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg, Blackbox)
	if err != nil {
		t.Fatal(err)
	}
	if a.LostSats != b.LostSats || a.SybilWins != b.SybilWins || a.SpotChecks != b.SpotChecks || a.Accepted != b.Accepted {
		t.Fatalf("same seed, different runs: %+v vs %+v", a, b)
	}
}

func reputationReason(s string) reputation.Reason { return reputation.Reason(s) }
