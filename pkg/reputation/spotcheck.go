package reputation

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ShouldSpotCheck decides whether a job given to seller also runs on a
// second seller. Only deterministic jobs can be checked (their output
// digests must agree). A seller with little evidence is checked at
// SpotCheckNewRate, and so is a seller this node has not verified itself yet
// (own evidence below SpotCheckOwnBelow)
// (trust, but verify once); an established one at SpotCheckRate. Cheats are
// cheapest to catch on their first jobs, and new identities are where they
// hide.
func (b *Book) ShouldSpotCheck(seller peer.ID, deterministic bool, rng *rand.Rand) bool {
	if !deterministic {
		return false
	}
	b.mu.Lock()
	s := b.posterior(seller, b.now(), false)
	own := 0.0
	if t := b.own[seller]; t != nil {
		own = (t.good + t.bad) * t.factor(b.now(), b.cfg.HalfLife)
	}
	b.mu.Unlock()
	rate := b.cfg.SpotCheckRate
	if s.Evidence < b.cfg.ExploreBelow || own < b.cfg.SpotCheckOwnBelow {
		rate = b.cfg.SpotCheckNewRate
	}
	return rng.Float64() < rate
}

// SpotResult is one seller's output for a spot-checked deterministic job.
type SpotResult struct {
	Peer       peer.ID
	ContractID string
	// Digest is the sha256 of the outputs from the seller's signed receipt.
	Digest string
}

// ResolveSpotCheck compares the digests of one deterministic job run by
// several sellers. When one digest has a strict majority, every seller that
// disagreed gets an OutcomeSpotCheckMismatch observation (to Observe and
// attest); decided is false when there is no majority (two sellers
// disagreeing: run the job on a third).
func ResolveSpotCheck(results []SpotResult, at time.Time) (mismatches []Observation, decided bool) {
	votes := map[string]int{}
	for _, r := range results {
		votes[r.Digest]++
	}
	digests := make([]string, 0, len(votes))
	for d := range votes {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return votes[digests[i]] > votes[digests[j]] })
	if len(digests) == 0 || votes[digests[0]]*2 <= len(results) {
		return nil, false
	}
	win := digests[0]
	for _, r := range results {
		if r.Digest != win {
			mismatches = append(mismatches, Observation{Peer: r.Peer, ContractID: r.ContractID, Outcome: OutcomeSpotCheckMismatch, At: at})
		}
	}
	return mismatches, true
}
