// Command blackbox-sim runs the reputation market simulation (make sim) and
// prints how random, cheapest-first and blackbox's seller selection fare
// against cheating sellers.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/blackbox-market/blackbox/pkg/reputation/sim"
)

func main() {
	cfg := sim.DefaultConfig()
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed (same seed, same table)")
	flag.IntVar(&cfg.Contracts, "contracts", cfg.Contracts, "market contracts")
	flag.IntVar(&cfg.Sellers, "sellers", cfg.Sellers, "sellers")
	flag.IntVar(&cfg.Buyers, "buyers", cfg.Buyers, "buyers")
	flag.Float64Var(&cfg.CheatShare, "cheats", cfg.CheatShare, "share of sellers that cheat (the Sybil ring included)")
	flag.IntVar(&cfg.SybilRing, "sybil", cfg.SybilRing, "identities in the Sybil ring")
	flag.IntVar(&cfg.LateHonest, "late", cfg.LateHonest, "honest sellers that join late")
	flag.Float64Var(&cfg.Reputation.Exploration, "exploration", cfg.Reputation.Exploration, "reputation.exploration")
	flag.Float64Var(&cfg.Reputation.SpotCheckRate, "spot-check-rate", cfg.Reputation.SpotCheckRate, "reputation.spot_check_rate")
	flag.IntVar(&cfg.Reputation.MaxHops, "max-hops", cfg.Reputation.MaxHops, "reputation.max_hops")
	flag.IntVar(&cfg.TrustPerBuyer, "trust-per-buyer", cfg.TrustPerBuyer, "other buyers each buyer trusts explicitly")
	flag.Float64Var(&cfg.Reputation.SpotCheckOwnBelow, "spot-check-own-below", cfg.Reputation.SpotCheckOwnBelow, "reputation.spot_check_own_below (0: trust others' verification)")
	flag.Float64Var(&cfg.Reputation.Threshold, "threshold", cfg.Reputation.Threshold, "reputation.threshold")
	flag.Parse()
	rs, err := sim.RunAll(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "blackbox-sim:", err)
		os.Exit(1)
	}
	sim.PrintTable(os.Stdout, cfg, rs)
}
