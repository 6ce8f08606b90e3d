package main

import (
	"slices"
	"testing"

	"github.com/blackbox-market/blackbox/internal/node"
	"github.com/blackbox-market/blackbox/pkg/reputation/sim"
)

// make sim measures the node that ships: every market it simulates runs
// the reputation config a node runs when its file says nothing.
func TestSimRunsTheShippedConfig(t *testing.T) {
	shipped := node.DefaultConfig().Reputation
	market, steady, catch := sim.Scenarios(sim.DefaultConfig())
	for name, c := range map[string]sim.Config{"market": market, "steady": steady, "catch": catch} {
		if c.Reputation != shipped {
			t.Errorf("%s market runs %+v, the node ships %+v", name, c.Reputation, shipped)
		}
	}
}

func TestParseSeeds(t *testing.T) {
	for in, want := range map[string][]uint64{"1": {1}, "1-7": {1, 2, 3, 4, 5, 6, 7}, "1-3,9": {1, 2, 3, 9}, " 4 ": {4}} {
		got, err := parseSeeds(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "3-1", "1-", "1-99999"} {
		if _, err := parseSeeds(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
