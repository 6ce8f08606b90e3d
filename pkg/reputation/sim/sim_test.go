package sim

import (
	"bytes"
	"strings"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// TestGoals runs the market in full (the goals are stated for
// 5,000 contracts: with fewer, each cheat's unavoidable first contract
// weighs more), the steady and the catch markets, with the shipped policy,
// and checks every goal. A few minutes: most of it Ed25519 verification of
// a million attestation deliveries.
func TestGoals(t *testing.T) {
	if testing.Short() {
		t.Skip("the full simulation (make sim) takes minutes: not in -short")
	}
	cfg := DefaultConfig()
	if cfg.Reputation != reputation.DefaultConfig() {
		t.Fatal("the simulation does not run the shipped reputation config")
	}
	rep, err := Measure(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	PrintTable(&out, cfg, rep.Market)
	PrintGoals(&out, cfg.Reputation, []Report{rep})
	t.Log("\n" + out.String())
	for _, g := range rep.Goals {
		if g.Target != "info" && !g.Met {
			t.Errorf("goal %q: %s, target %s", g.Name, g.Value, g.Target)
		}
	}
	bb := rep.Market[len(rep.Market)-1]
	if bb.Policy != Blackbox {
		t.Fatalf("last policy %s", bb.Policy)
	}
	if iso, tot, _, _ := bb.IsolationStats(); iso < tot*9/10 {
		t.Errorf("only %d of %d cheats isolated", iso, tot)
	}
	if bb.HonestBlocked > 2 {
		t.Errorf("%d honest sellers blocked by most buyers", bb.HonestBlocked)
	}
	if rep.Steady.HonestBlocked > 1 || rep.Catch.HonestBlocked > 1 {
		t.Errorf("honest sellers blocked by most buyers: %d in the steady market, %d in the catch market", rep.Steady.HonestBlocked, rep.Catch.HonestBlocked)
	}
	// The ring's unpaid, replayed and self-referencing vouches were seen
	// and ignored.
	for _, r := range []string{"unpaid", "replayed", "self_reference"} {
		if bb.Rejected[reputation.Reason(r)] == 0 {
			t.Errorf("no %s attestations counted: %v", r, bb.Rejected)
		}
	}
	if !strings.Contains(out.String(), "blackbox") {
		t.Error("table lacks the blackbox row")
	}
}

// Spot checks follow the policy: a newcomer's every deterministic job is
// checked, so in a short market nearly all are, and the verdicts reach the
// books.
func TestSpotChecksRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sellers, cfg.Buyers, cfg.Contracts, cfg.SybilRing, cfg.LateHonest, cfg.Occasional = 40, 6, 300, 4, 2, 4
	r, err := Run(cfg, Blackbox)
	if err != nil {
		t.Fatal(err)
	}
	if r.SpotChecks < 150 || r.Extra < r.SpotChecks || r.ExtraPaid <= 0 || r.CheckShare() <= 0.2 {
		t.Fatalf("%d spot checks, %d re-runs, %.1f%% of spending in 300 contracts of new sellers", r.SpotChecks, r.Extra, 100*r.CheckShare())
	}
	caught, known := r.CaughtWithin(Garbage, 50)
	if caught == 0 || known == 0 {
		t.Fatalf("no garbage seller caught (%d of %d)", caught, known)
	}
	if r.SteadyPaid != r.PaidSats || r.SteadyExtraPaid != r.ExtraPaid {
		t.Fatalf("measured from contract 0, steady spending %v/%v differs from all %v/%v", r.SteadyExtraPaid, r.SteadyPaid, r.ExtraPaid, r.PaidSats)
	}
}

func TestDeterministic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sellers, cfg.Buyers, cfg.Contracts, cfg.SybilRing, cfg.LateHonest, cfg.Occasional = 40, 6, 200, 4, 2, 2
	a, err := Run(cfg, Blackbox)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg, Blackbox)
	if err != nil {
		t.Fatal(err)
	}
	if a.LostSats != b.LostSats || a.SybilWins != b.SybilWins || a.SpotChecks != b.SpotChecks || a.Accepted != b.Accepted || a.ExtraPaid != b.ExtraPaid {
		t.Fatalf("same seed, different runs: %+v vs %+v", a, b)
	}
}
