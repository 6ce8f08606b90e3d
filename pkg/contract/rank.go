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
	Total     int64         `json:"total_sats"` // the whole contract, rounded up
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

// Rank filters offers by the request's constraints (resources, region,
// runtime, total price within MaxPrice, duration within the offer's range,
// reputation at least MinReputation for sellers with evidence) and orders
// the rest by utility: expected reliability per effective sat, the price
// inflated by 20% per second of round trip. With probability explore one
// candidate with little evidence (under 3 observations) is moved first, so
// that new sellers get their first jobs. rtt may be nil.
func Rank(offers []*offer.Offer, req *Request, rep Reputation, rtt func(peer.ID) time.Duration, explore float64, rng *rand.Rand) []Candidate {
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
		eff := float64(max(t.Total, 1)) * (1 + 0.2*c.RTT.Seconds())
		c.Utility = mean / eff
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b Candidate) int {
		if c := cmp.Compare(b.Utility, a.Utility); c != 0 {
			return c
		}
		return cmp.Compare(a.Seller, b.Seller)
	})
	if rng != nil && explore > 0 && rng.Float64() < explore {
		var fresh []int
		for i, c := range out {
			if c.Evidence < 3 {
				fresh = append(fresh, i)
			}
		}
		if len(fresh) > 0 {
			i := fresh[rng.IntN(len(fresh))]
			c := out[i]
			c.Explore = true
			out = slices.Delete(out, i, i+1)
			out = slices.Insert(out, 0, c)
		}
	}
	return out
}
