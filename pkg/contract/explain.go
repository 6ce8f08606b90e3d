package contract

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/quantity"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrNoOffer marks a request that no offer found on the market can take:
// the buyer's own constraints rule every seller out. It is the user's
// mistake, said before any negotiation; *NoOfferError says which
// constraint and what would work.
var ErrNoOffer = errors.New("no offer fits the request")

// Why a request fits no offer: the first of these constraints (in this
// order) that rules out every offer still left.
const (
	MissSize       = "size"       // resources
	MissDuration   = "duration"   // --time outside the contract lengths sold
	MissRuntime    = "runtime"    // --runtime
	MissRegion     = "region"     // --region
	MissReputation = "reputation" // blocked or below --min-reputation
	MissPrice      = "price"      // --max-price
	MissNetwork    = "network"    // paid on another Bitcoin network
)

// NoOfferError says why none of the offers seen fits a request and what
// would: the cheapest job for a price, the largest offer for a size, the
// contract lengths sold for a duration.
type NoOfferError struct {
	// Miss is the constraint that ruled the last offers out (Miss*).
	Miss string `json:"miss"`
	// Offers is how many offers were seen.
	Offers int `json:"offers"`
	// MaxPrice is the request's --max-price, in sats.
	MaxPrice uint64 `json:"max_price_sat,omitempty"`
	// Cheapest is the offer of the cheapest job among those that fit
	// everything but the price, and CheapestSat that job's cost (start fee
	// included).
	Cheapest    peer.ID `json:"cheapest_seller,omitempty"`
	CheapestSat int64   `json:"cheapest_sat,omitempty"`
	StartFeeSat int64   `json:"start_fee_sat,omitempty"`
	// Want is what the request asked for; Largest the offer with the most
	// of what was asked (for Miss == MissSize), and LargestSeller its
	// seller.
	Want          offer.Resources `json:"want"`
	Largest       offer.Resources `json:"largest"`
	LargestSeller peer.ID         `json:"largest_seller,omitempty"`
	// MinDuration and MaxDuration bound the contract lengths sold (for
	// Miss == MissDuration); Duration is the request's.
	Duration    time.Duration `json:"-"`
	MinDuration time.Duration `json:"-"`
	MaxDuration time.Duration `json:"-"`
	// Choices lists, for a runtime or region miss, what the offers have.
	Choices []string `json:"choices,omitempty"`
	// Network is the buyer's Bitcoin network (Miss == MissNetwork).
	Network string `json:"network,omitempty"`
	// Blocked lists, for a reputation miss, the sellers the buyer blocked.
	Blocked []string `json:"blocked,omitempty"`
}

func (e *NoOfferError) Unwrap() error { return ErrNoOffer }

func (e *NoOfferError) Error() string {
	n := fmt.Sprintf("%d offer(s) found", e.Offers)
	switch e.Miss {
	case MissNetwork:
		return fmt.Sprintf("every seller (%s) is paid on another Bitcoin network: %s; this node pays on %s (payment.network)",
			n, strings.Join(e.Choices, ", "), e.Network)
	case MissPrice:
		return fmt.Sprintf("no seller offers this job for %d sat or less (%s); the cheapest is %d sat, start fee %d sat included (seller %s): raise --max-price to %d",
			e.MaxPrice, n, e.CheapestSat, e.StartFeeSat, e.Cheapest, e.CheapestSat)
	case MissSize:
		return fmt.Sprintf("no seller offers %s (%s); the largest offer is %s (seller %s): ask for at most that (--cpus, --memory, --disk)",
			sizeString(e.Want), n, sizeString(e.Largest), e.LargestSeller)
	case MissDuration:
		return fmt.Sprintf("no seller sells a contract of %s (%s); they sell %s to %s: change --time",
			e.Duration, n, e.MinDuration, e.MaxDuration)
	case MissRuntime:
		return fmt.Sprintf("no seller that fits offers this runtime (%s); they offer %s: change or drop --runtime",
			n, strings.Join(e.Choices, ", "))
	case MissRegion:
		return fmt.Sprintf("no seller that fits is in this region (%s); they are in %s: change or drop --region",
			n, strings.Join(e.Choices, ", "))
	case MissReputation:
		msg := fmt.Sprintf("every seller that fits is blocked or scored below --min-reputation (%s)", n)
		if len(e.Blocked) > 0 {
			msg += fmt.Sprintf(": skipped %d seller(s) you have blocked: %s", len(e.Blocked), strings.Join(e.Blocked, ", "))
		}
		return msg + "; `blackbox reputation PEER` says why, `blackbox reputation forget PEER` lifts a block, a lower --min-reputation lets lower scores in"
	}
	return ErrNoOffer.Error()
}

func sizeString(r offer.Resources) string {
	return fmt.Sprintf("%s CPUs / %s memory / %s disk", quantity.FormatCPU(int64(r.CPUMillis)),
		quantity.FormatSize(int64(r.MemoryBytes)), quantity.FormatSize(int64(r.DiskBytes)))
}

// Explain returns nil when some offer in offers (self's excluded) fits
// req as Rank filters, else a *NoOfferError naming the constraint that
// ruled the last ones out and what would work. With no offers at all it
// returns nil too: the market may not be found yet, and the job's search
// goes on.
func Explain(offers []*offer.Offer, req *Request, rep Reputation, self peer.ID) error {
	if rep == nil {
		rep = Neutral{}
	}
	var left []*offer.Offer
	for _, o := range offers {
		if o != nil && o.Seller != self && o.Resources.CPUMillis > 0 {
			left = append(left, o)
		}
	}
	e := &NoOfferError{Offers: len(left), MaxPrice: req.MaxPrice, Want: req.Resources, Duration: req.Duration}
	if len(left) == 0 {
		return nil
	}
	stages := []struct {
		miss string
		fits func(*offer.Offer) bool
		// explain fills e from the offers the stage ruled out.
		explain func([]*offer.Offer)
	}{
		{MissSize, func(o *offer.Offer) bool { return offer.Filter{Min: req.Resources}.Match(o) }, func(os []*offer.Offer) {
			// The largest: the most cores, then the most memory.
			best := os[0]
			for _, o := range os[1:] {
				if o.Resources.CPUMillis > best.Resources.CPUMillis ||
					o.Resources.CPUMillis == best.Resources.CPUMillis && o.Resources.MemoryBytes > best.Resources.MemoryBytes {
					best = o
				}
			}
			e.Largest, e.LargestSeller = best.Resources, best.Seller
		}},
		{MissDuration, func(o *offer.Offer) bool {
			return !(o.MinDuration > 0 && req.Duration < o.MinDuration || o.MaxDuration > 0 && req.Duration > o.MaxDuration)
		}, func(os []*offer.Offer) {
			for i, o := range os {
				if i == 0 || o.MinDuration < e.MinDuration {
					e.MinDuration = o.MinDuration
				}
				if i == 0 || o.MaxDuration > e.MaxDuration {
					e.MaxDuration = o.MaxDuration
				}
			}
		}},
		{MissRuntime, func(o *offer.Offer) bool { return offer.Filter{Runtime: req.Runtime}.Match(o) }, func(os []*offer.Offer) {
			for _, o := range os {
				e.Choices = appendNew(e.Choices, o.Runtimes...)
			}
		}},
		{MissRegion, func(o *offer.Offer) bool { return offer.Filter{Region: req.Region}.Match(o) }, func(os []*offer.Offer) {
			for _, o := range os {
				e.Choices = appendNew(e.Choices, cmp.Or(o.Region, "(none)"))
			}
		}},
		{MissReputation, func(o *offer.Offer) bool {
			if b, ok := rep.(Blocker); ok && b.Blocked(o.Seller) {
				return false
			}
			mean, ev := rep.Score(o.Seller)
			return !(ev > 0 && mean < req.MinReputation)
		}, func(os []*offer.Offer) {
			if b, ok := rep.(Blocker); ok {
				for _, o := range os {
					if b.Blocked(o.Seller) {
						e.Blocked = appendNew(e.Blocked, o.Seller.String())
					}
				}
			}
		}},
		{MissPrice, func(o *offer.Offer) bool {
			return req.MaxPrice == 0 || uint64(TermsFor(o, req).Total) <= req.MaxPrice
		}, func(os []*offer.Offer) {
			for _, o := range os {
				t := TermsFor(o, req)
				if e.Cheapest == "" || t.Total < e.CheapestSat {
					e.Cheapest, e.CheapestSat, e.StartFeeSat = o.Seller, t.Total, int64((t.StartFee+999)/1000)
				}
			}
		}},
	}
	for _, s := range stages {
		var fit []*offer.Offer
		for _, o := range left {
			if s.fits(o) {
				fit = append(fit, o)
			}
		}
		if len(fit) == 0 {
			e.Miss = s.miss
			s.explain(left)
			return e
		}
		left = fit
	}
	return nil
}

func appendNew(list []string, vs ...string) []string {
	for _, v := range vs {
		if !slices.Contains(list, v) {
			list = append(list, v)
		}
	}
	return list
}

// quoteFirst is how many fitting offers QuoteUntil's first look waits for:
// the first one (more would wait for the whole lookup on a market with
// fewer).
const quoteFirst = 1

// QuoteUntil is Quote that may end early: it first asks the market for the
// first offer that fits req (a lookup that stops at it, as the job's
// own search with a limit does) and returns those candidates, with
// accepted true, when enough accepts them. Only otherwise does it return
// Quote's answer, which waits for every seller the lookup named: on a real
// DHT some providers are gone, and the fetch of a gone seller's offer
// behind NAT waits its full per-peer timeout (5 s) before Quote returns.
// enough may only accept candidates that a full Quote would accept too
// (the cheapest fitting offer costs no more than any of them). A refusal
// pays for both lookups.
func (b *Buyer) QuoteUntil(ctx context.Context, req Request, enough func([]Candidate) bool) (cands []Candidate, accepted bool, err error) {
	if err := req.Validate(); err != nil {
		return nil, false, err
	}
	f := offer.Filter{Min: req.Resources, Region: req.Region, Runtime: req.Runtime, Network: b.cfg.Network, Limit: quoteFirst}
	if offers, err := b.cfg.Find(ctx, f); err == nil {
		if first := b.quoted(offers, req); len(first) > 0 && enough(first) {
			return first, true, nil
		}
	}
	cands, err = b.Quote(ctx, req)
	return cands, false, err
}

// Quote looks at the market for req before anything is negotiated: it
// finds the offers of every size and returns those that fit req (as Rank
// filters them, cheapest first), or the *NoOfferError (wrapping
// ErrNoOffer) that says why none does and what would. Nothing found at all
// is no error and no candidates: the job's own search may still find
// sellers.
func (b *Buyer) Quote(ctx context.Context, req Request) ([]Candidate, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	offers, err := b.cfg.Find(ctx, offer.Filter{})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil // nothing found in time: the job searches on
		}
		return nil, fmt.Errorf("discover: %w", err)
	}
	if err := explainNetwork(offers, b.cfg.Network, b.id); err != nil {
		return nil, err
	}
	if err := Explain(offers, &req, b.cfg.Reputation, b.id); err != nil {
		return nil, err
	}
	return b.quoted(offers, req), nil
}

// quoted is the offers of other sellers that fit req, as Rank filters
// them, cheapest first.
func (b *Buyer) quoted(offers []*offer.Offer, req Request) []Candidate {
	var mine []*offer.Offer
	for _, o := range offers {
		if o != nil && o.Seller != b.id {
			mine = append(mine, o)
		}
	}
	cands := Rank(mine, &req, b.cfg.Reputation, nil, purposeOf(&JobStatus{Request: req}), nil)
	slices.SortStableFunc(cands, func(x, y Candidate) int { return cmp.Compare(x.Terms.Total, y.Terms.Total) })
	return cands
}

// explainNetwork is Explain's first stage for the buyer's Bitcoin network:
// a NoOfferError (MissNetwork) when every other seller's offer names
// another network than network.
func explainNetwork(offers []*offer.Offer, network string, self peer.ID) error {
	if network == "" {
		return nil
	}
	e := &NoOfferError{Miss: MissNetwork, Network: network}
	for _, o := range offers {
		if o == nil || o.Seller == self || o.Resources.CPUMillis == 0 {
			continue
		}
		e.Offers++
		if (offer.Filter{Network: network}).Match(o) {
			return nil
		}
		e.Choices = appendNew(e.Choices, o.Network)
	}
	if e.Offers == 0 {
		return nil
	}
	return e
}
