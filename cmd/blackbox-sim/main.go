// Command blackbox-sim runs the reputation market simulation (make sim): it
// prints how random, cheapest-first and blackbox's seller selection fare
// against cheating sellers, and each goal of the shipped selection and
// spot-check policy (reputation.DefaultConfig, what the node runs) against
// its target, for one or several seeds.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/blackbox-market/blackbox/pkg/reputation/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "blackbox-sim:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := sim.DefaultConfig()
	seeds := flag.String("seeds", "1", "seeds to run: a list and ranges, e.g. 1-7 or 1,3,5")
	parallel := flag.Int("parallel", 2, "seeds simulated at once")
	all := flag.Bool("tables", false, "print the market table of every seed, not only the first")
	flag.IntVar(&cfg.Contracts, "contracts", cfg.Contracts, "market contracts")
	flag.IntVar(&cfg.Sellers, "sellers", cfg.Sellers, "sellers")
	flag.IntVar(&cfg.Buyers, "buyers", cfg.Buyers, "buyers")
	flag.Float64Var(&cfg.CheatShare, "cheats", cfg.CheatShare, "share of sellers that cheat (the Sybil ring included)")
	flag.IntVar(&cfg.SybilRing, "sybil", cfg.SybilRing, "identities in the Sybil ring")
	flag.IntVar(&cfg.LateHonest, "late", cfg.LateHonest, "honest sellers that join late")
	flag.IntVar(&cfg.TrustPerBuyer, "trust-per-buyer", cfg.TrustPerBuyer, "other buyers each buyer trusts explicitly")
	flag.Float64Var(&cfg.Reputation.Exploration, "exploration", cfg.Reputation.Exploration, "reputation.exploration")
	flag.Float64Var(&cfg.Reputation.SpotCheckAllBelow, "spot-check-all-below", cfg.Reputation.SpotCheckAllBelow, "reputation.spot_check_all_below")
	flag.Float64Var(&cfg.Reputation.SpotCheckFloor, "spot-check-floor", cfg.Reputation.SpotCheckFloor, "reputation.spot_check_floor")
	flag.IntVar(&cfg.Reputation.MaxHops, "max-hops", cfg.Reputation.MaxHops, "reputation.max_hops")
	flag.Float64Var(&cfg.Reputation.Threshold, "threshold", cfg.Reputation.Threshold, "reputation.threshold")
	flag.Parse()
	list, err := parseSeeds(*seeds)
	if err != nil {
		return err
	}
	reps := make([]sim.Report, len(list))
	errs := make([]error, len(list))
	sem := make(chan struct{}, max(*parallel, 1))
	var wg sync.WaitGroup
	for i, s := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c := cfg
			c.Seed = s
			reps[i], errs[i] = sim.Measure(c)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("seed %d: %w", list[i], err)
		}
	}
	for i, r := range reps {
		if i > 0 && !*all {
			break
		}
		c := cfg
		c.Seed = r.Seed
		sim.PrintTable(os.Stdout, c, r.Market)
		fmt.Println()
	}
	sim.PrintGoals(os.Stdout, cfg.Reputation, reps)
	return nil
}

// parseSeeds reads "1-7" or "1,3,5" (or both: "1-3,9").
func parseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("-seeds %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a || b-a > 1000 {
				return nil, fmt.Errorf("-seeds %q: bad range %q", s, part)
			}
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	return out, nil
}
