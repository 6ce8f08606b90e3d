package reputation

import (
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Candidate is one seller offer the contract code's ranker hands to Rank.
type Candidate struct {
	Peer peer.ID
	// PriceSats is the expected total price of the job with this seller.
	PriceSats uint64
	// RTT is the measured round-trip time to the seller (0 if unknown).
	RTT time.Duration
	// Ref is the caller's own handle (for example the offer); Rank returns
	// it untouched.
	Ref any
}

// Ranked is a candidate with the numbers that ordered it.
type Ranked struct {
	Candidate
	// Sample is the reliability drawn from the candidate's Beta posterior.
	Sample float64
	// Utility is Sample per effective sat (price inflated by RTT); higher
	// is better.
	Utility float64
	// Explore marks the candidate put first for exploration.
	Explore bool
	// Mean, Low and Evidence are the candidate's posterior mean, the lower
	// end of its 90% interval, and its evidence.
	Mean     float64
	Low      float64
	Evidence float64
}

// rttCostPerSecond inflates the price by 20% per second of round trip: a
// slow link costs the buyer time on every transfer and billing tick.
const rttCostPerSecond = 0.2

// RankOption adjusts one Rank call.
type RankOption func(*rankOpts)

type rankOpts struct{ uncheckable, spotCheck bool }

// Uncheckable says the job cannot be spot-checked (its output is not
// deterministic). Such a job is not used for exploration, and sellers with
// little evidence rank after proven ones: a newcomer's first jobs should be
// ones whose results can be verified.
func Uncheckable() RankOption { return func(o *rankOpts) { o.uncheckable = true } }

// ForSpotCheck ranks sellers to re-run another seller's job and check its
// output: the best proven record first (the highest lower end of the
// score's 90% interval), equal ones in random order, whatever the price,
// and no exploration. A checker must be one whose word can be taken.
func ForSpotCheck() RankOption { return func(o *rankOpts) { o.spotCheck = true } }

// Rank is the node's seller-selection policy, the one the buyer runs
// (pkg/contract's Rank calls it through the node) and the simulation
// measures. It orders candidates for a buyer: peers below the threshold are
// dropped (returned in blocked), the rest are ranked by Thompson sampling —
// a reliability drawn from each peer's Beta posterior divided by the
// effective price — and, with probability Exploration, a candidate with
// little evidence is put first so that new sellers get their first job.
// rng makes it deterministic in tests and the simulation.
func (b *Book) Rank(cands []Candidate, rng *rand.Rand, opts ...RankOption) (ranked []Ranked, blocked []Candidate) {
	var o rankOpts
	for _, f := range opts {
		f(&o)
	}
	b.mu.Lock()
	now := b.now()
	var fresh []int
	firstSeen := map[int]time.Time{}
	for _, c := range cands {
		seen, ok := b.firstSeen[c.Peer]
		if !ok {
			seen = now
			b.firstSeen[c.Peer] = now
		}
		s := b.posterior(c.Peer, now, false)
		if s.Blocked {
			blocked = append(blocked, c)
			continue
		}
		theta := sampleBeta(rng, s.Alpha, s.Beta)
		price := math.Max(float64(c.PriceSats), 1) * (1 + rttCostPerSecond*c.RTT.Seconds())
		if s.Evidence < b.cfg.ExploreBelow {
			firstSeen[len(ranked)] = seen
			fresh = append(fresh, len(ranked))
		}
		ranked = append(ranked, Ranked{Candidate: c, Sample: theta, Utility: theta / price, Mean: s.Mean, Low: s.Low, Evidence: s.Evidence})
	}
	b.mu.Unlock()
	if o.spotCheck {
		rng.Shuffle(len(ranked), func(i, j int) { ranked[i], ranked[j] = ranked[j], ranked[i] })
		sort.SliceStable(ranked, func(i, j int) bool { return ranked[i].Low > ranked[j].Low })
		return ranked, blocked
	}
	if len(fresh) > 0 && !o.uncheckable && rng.Float64() < b.cfg.Exploration {
		// The least-known candidate goes first; among equally unknown ones
		// the one this node saw appear most recently, then at random. A
		// seller nobody has tried is tried before one with some history, and
		// a newcomer does not queue behind every old, expensive seller
		// nobody ever picked.
		least, newest := math.Inf(1), time.Time{}
		var pool []int
		for _, i := range fresh {
			e, seen := ranked[i].Evidence, firstSeen[i]
			switch {
			case e < least-0.25 || (e <= least+0.25 && seen.After(newest)):
				least, newest, pool = math.Min(e, least), seen, []int{i}
			case e <= least+0.25 && seen.Equal(newest):
				pool = append(pool, i)
			}
		}
		ranked[pool[rng.IntN(len(pool))]].Explore = true
	}
	sort.SliceStable(ranked, func(i, j int) bool {
		if ranked[i].Explore != ranked[j].Explore {
			return ranked[i].Explore
		}
		if o.uncheckable {
			pi, pj := ranked[i].Evidence >= b.cfg.ExploreBelow, ranked[j].Evidence >= b.cfg.ExploreBelow
			if pi != pj {
				return pi
			}
		}
		return ranked[i].Utility > ranked[j].Utility
	})
	return ranked, blocked
}

// Choose returns the best candidate of Rank, or false when every candidate
// is blocked (or there are none).
func (b *Book) Choose(cands []Candidate, rng *rand.Rand, opts ...RankOption) (Ranked, bool) {
	r, _ := b.Rank(cands, rng, opts...)
	if len(r) == 0 {
		return Ranked{}, false
	}
	return r[0], true
}

// sampleBeta draws from Beta(a, b) as X/(X+Y) with X~Gamma(a), Y~Gamma(b).
func sampleBeta(rng *rand.Rand, a, b float64) float64 {
	x := sampleGamma(rng, a)
	y := sampleGamma(rng, b)
	if x+y == 0 {
		return 0.5
	}
	return x / (x + y)
}

// sampleGamma is Marsaglia and Tsang's method, boosted for shape < 1.
func sampleGamma(rng *rand.Rand, shape float64) float64 {
	if shape < 1 {
		u := rng.Float64()
		return sampleGamma(rng, shape+1) * math.Pow(u, 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}
