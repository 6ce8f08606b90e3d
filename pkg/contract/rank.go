package contract

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Reputation is what ranking needs from the reputation book. Score returns
// the seller's expected reliability in [0,1] and how much evidence it rests
// on (0: never seen). Outcome reports, once per contract, how a contract
// with p ended (FaultNone: delivered), so the book can learn; it decides
// what each fault counts (a buyer's own failure, say, nothing). It must
// not block.
type Reputation interface {
	Score(p peer.ID) (mean, evidence float64)
	Outcome(p peer.ID, contractID string, f Fault)
}

// Blocker is optional for a Reputation: sellers it blocks are never
// ranked.
type Blocker interface {
	Blocked(p peer.ID) bool
}

// Neutral is the Reputation used until a real one is plugged in: every
// seller scores 0.5 with no evidence, and outcomes are dropped.
type Neutral struct{}

var _ Reputation = Neutral{}

// Score implements Reputation.
func (Neutral) Score(peer.ID) (float64, float64) { return 0.5, 0 }

// Outcome implements Reputation.
func (Neutral) Outcome(peer.ID, string, Fault) {}

// DefaultInterval is the billing interval used when an offer names none.
const DefaultInterval = time.Minute

// Terms are the billing terms a request gets under an offer.
type Terms struct {
	Interval  time.Duration `json:"interval"`
	Price     uint64        `json:"msat_per_interval"`
	StartFee  uint64        `json:"start_fee_msat"`
	Intervals uint64        `json:"intervals"`
	Total     int64         `json:"total_sat"` // the whole contract, rounded up
}

// TermsFor computes what req costs under o: the offer's interval, the price
// of one interval of the requested resources (millisats, rounded up), and
// the total. Buyer and seller run this same function, so they agree.
func TermsFor(o *offer.Offer, req *Request) Terms {
	iv := o.BillingInterval
	if iv <= 0 {
		iv = DefaultInterval
	}
	msatHour := o.HourlyCost(req.Resources) * 1000
	price := uint64(math.Ceil(msatHour * float64(iv) / float64(time.Hour)))
	p := Proposal{Interval: iv, Price: price, StartFee: o.Prices.StartFee, Request: *req}
	return Terms{Interval: iv, Price: price, StartFee: o.Prices.StartFee, Intervals: p.Intervals(), Total: p.Total()}
}

// Candidate is one offer as the buyer ranked it.
type Candidate struct {
	Offer    *offer.Offer  `json:"-"`
	Seller   peer.ID       `json:"seller"`
	Terms    Terms         `json:"terms"`
	RTT      time.Duration `json:"rtt"`
	Score    float64       `json:"score"`
	Evidence float64       `json:"evidence"`
	Utility  float64       `json:"utility"`
	Explore  bool          `json:"explore,omitempty"`
}

// Purpose is what a ranked seller is wanted for; the selection policy
// treats each differently.
type Purpose int

// Purposes.
const (
	// ForJob: a deterministic job, whose output a spot check can verify
	// (a newcomer's first jobs should be these).
	ForJob Purpose = iota
	// ForUncheckableJob: a job whose output cannot be spot-checked.
	ForUncheckableJob
	// ForSpotCheck: a re-run that checks another seller's output.
	ForSpotCheck
)

// Ranker is the seller-selection policy: pkg/reputation's (Book.Rank,
// through the node), the same code the market simulation measures. Given
// the candidates that meet a request, each with its Seller, Terms and RTT,
// it drops the ones it will not give work and orders the rest best first,
// filling in Score, Evidence, Utility and Explore. It must not keep rng.
type Ranker interface {
	Rank(cands []Candidate, purpose Purpose, rng *rand.Rand) []Candidate
}

// purposeOf is what the job j's next seller is for.
func purposeOf(j *JobStatus) Purpose {
	switch {
	case j.shadow:
		return ForSpotCheck
	case !j.Request.Deterministic:
		return ForUncheckableJob
	}
	return ForJob
}

// Rank filters offers by the request's constraints (resources, region,
// runtime, total price within MaxPrice, duration within the offer's range,
// reputation at least MinReputation for sellers with evidence, not blocked)
// and leaves the order to rep's policy when rep is a Ranker. Otherwise (no
// reputation) the cheapest first, the price inflated by 20% per second of
// round trip. rtt may be nil.
func Rank(offers []*offer.Offer, req *Request, rep Reputation, rtt func(peer.ID) time.Duration, purpose Purpose, rng *rand.Rand) []Candidate {
	if rep == nil {
		rep = Neutral{}
	}
	f := offer.Filter{Min: req.Resources, Region: req.Region, Runtime: req.Runtime}
	var out []Candidate
	for _, o := range offers {
		if o == nil || !f.Match(o) {
			continue
		}
		if o.MinDuration > 0 && req.Duration < o.MinDuration || o.MaxDuration > 0 && req.Duration > o.MaxDuration {
			continue
		}
		t := TermsFor(o, req)
		if req.MaxPrice > 0 && uint64(t.Total) > req.MaxPrice {
			continue
		}
		if b, ok := rep.(Blocker); ok && b.Blocked(o.Seller) {
			continue
		}
		mean, ev := rep.Score(o.Seller)
		if ev > 0 && mean < req.MinReputation {
			continue
		}
		c := Candidate{Offer: o, Seller: o.Seller, Terms: t, Score: mean, Evidence: ev}
		if rtt != nil {
			c.RTT = rtt(o.Seller)
		}
		out = append(out, c)
	}
	if r, ok := rep.(Ranker); ok && rng != nil {
		return r.Rank(out, purpose, rng)
	}
	for i := range out {
		c := &out[i]
		c.Utility = c.Score / (float64(max(c.Terms.Total, 1)) * (1 + 0.2*c.RTT.Seconds()))
	}
	slices.SortStableFunc(out, func(a, b Candidate) int {
		if c := cmp.Compare(b.Utility, a.Utility); c != 0 {
			return c
		}
		return cmp.Compare(a.Seller, b.Seller)
	})
	return out
}
