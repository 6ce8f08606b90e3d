package reputation

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Spot checks adapt per seller, as BOINC's adaptive replication does: every
// deterministic job of a seller is checked until it has SpotCheckAllBelow
// verified results in a row, then a job is checked with probability about
// 1/n after n verified results in a row, never less than SpotCheckFloor. A
// lie (a spot-check mismatch, or output the buyer found to be garbage)
// starts the count again. The count is this node's own verified results
// plus those its trusted attesters report, weighted like the rest of their
// evidence and capped at MaxPerAttester each, so a newcomer is checked on
// its first jobs by whoever meets it, and a proven seller is rarely checked
// by anyone.

// SpotCheckRate is the share of a seller's deterministic jobs that are
// spot-checked when it has n verified results in a row.
func (c Config) SpotCheckRate(n float64) float64 {
	if n < c.SpotCheckAllBelow {
		return 1
	}
	return math.Max(c.SpotCheckFloor, math.Min(1, 1/n))
}

// CatchWithin is the probability that spot checks catch a seller that lies
// on share of its contracts within its first contracts contracts, in the
// worst case for the buyers: every verified result counts in full (as if one
// buyer made all the checks; attested results count less and so keep the
// rate up longer), and only a spot check catches a lie (a buyer that
// notices garbage itself, or a seller that fails some jobs, only helps).
// A checked lie is caught: the checkers are proven sellers, and a third run
// settles a disagreement.
func (c Config) CatchWithin(share float64, contracts int) float64 {
	// p[n] is the probability of being uncaught with n verified results.
	p := make([]float64, contracts+2)
	p[0] = 1
	for k := 0; k < contracts; k++ {
		next := make([]float64, len(p))
		for n, q := range p {
			if q == 0 {
				continue
			}
			r := c.SpotCheckRate(float64(n))
			next[n] += q * (1 - r)                          // not checked
			next[min(n+1, len(p)-1)] += q * r * (1 - share) // checked, honest this time
		}
		p = next
	}
	uncaught := 0.0
	for _, q := range p {
		uncaught += q
	}
	return 1 - uncaught
}

// ShouldSpotCheck decides whether a job given to seller also runs on
// another seller, to compare output digests. Only deterministic jobs can be
// checked. The chance is Config.SpotCheckRate of the seller's streak of
// verified results (see Score.Verified).
func (b *Book) ShouldSpotCheck(seller peer.ID, deterministic bool, rng *rand.Rand) bool {
	if !deterministic {
		return false
	}
	return rng.Float64() < b.SpotCheckChance(seller)
}

// SpotCheckChance is the chance that ShouldSpotCheck checks a
// deterministic job of seller now.
func (b *Book) SpotCheckChance(seller peer.ID) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.SpotCheckRate(b.verifiedLocked(seller))
}

// verifiedLocked is seller's streak: the verified results, own and from
// trusted attesters (weighted and capped), since the newest lie any of
// these sources saw.
func (b *Book) verifiedLocked(p peer.ID) float64 {
	own := b.own[p]
	var broke time.Time
	if own != nil {
		broke = own.streak.broke
	}
	type source struct {
		a peer.ID
		t *tally
		w float64
	}
	var others []source
	if m := b.att[p]; len(m) > 0 {
		trust := b.trustLocked()
		for a, t := range m {
			w := trust[a] * b.cfg.AttestationWeight
			if w <= 0 || a == b.self {
				continue
			}
			if t.streak.broke.After(broke) {
				broke = t.streak.broke
			}
			others = append(others, source{a, t, w})
		}
	}
	n := 0.0
	if own != nil {
		n = own.streak.since(broke)
	}
	// In a fixed order: float sums depend on it, and a streak sitting on
	// SpotCheckAllBelow must give the same answer every time.
	slices.SortFunc(others, func(x, y source) int { return cmp.Compare(x.a, y.a) })
	for _, s := range others {
		n += s.w * math.Min(s.t.streak.since(broke), b.cfg.MaxPerAttester)
	}
	return n
}

// maxStreak bounds the verified results a streak remembers per source;
// the spot-check rate is at its floor long before.
const maxStreak = 256

// streak is one source's verified results about one seller since the
// newest lie that source saw from it.
type streak struct {
	verified []time.Time // each after broke; unordered
	broke    time.Time
}

func (s *streak) add(o Outcome, at time.Time) {
	switch {
	case o == OutcomeVerified:
		if !s.broke.IsZero() && !at.After(s.broke) {
			return
		}
		s.verified = append(s.verified, at)
		if len(s.verified) > maxStreak {
			old := 0
			for i, v := range s.verified {
				if v.Before(s.verified[old]) {
					old = i
				}
			}
			s.verified[old] = s.verified[len(s.verified)-1]
			s.verified = s.verified[:len(s.verified)-1]
		}
	case o.lie():
		if at.After(s.broke) {
			s.broke = at
		}
		keep := s.verified[:0]
		for _, v := range s.verified {
			if v.After(s.broke) {
				keep = append(keep, v)
			}
		}
		s.verified = keep
	}
}

// since counts the verified results after t. They do not decay: a streak
// is a count of results in a row, and the floor keeps checking the oldest.
func (s *streak) since(t time.Time) float64 {
	n := 0
	for _, v := range s.verified {
		if v.After(t) {
			n++
		}
	}
	return float64(n)
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
// agreed gets an OutcomeVerified observation and every seller that
// disagreed an OutcomeSpotCheckMismatch one (to Observe and attest);
// decided is false, and there are no observations, when no digest has a
// majority (two sellers disagreeing: run the job on a third).
func ResolveSpotCheck(results []SpotResult, at time.Time) (verdicts []Observation, decided bool) {
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
		o := Observation{Peer: r.Peer, ContractID: r.ContractID, Outcome: OutcomeVerified, At: at}
		if r.Digest != win {
			o.Outcome = OutcomeSpotCheckMismatch
		}
		verdicts = append(verdicts, o)
	}
	return verdicts, true
}
