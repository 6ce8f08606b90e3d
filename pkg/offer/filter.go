package offer

import (
	"cmp"
	"slices"
	"strings"
)

// Filter selects offers: at least Min resources, in Region (if set), at most
// MaxPrice satoshis per hour for the requested resources (if set).
type Filter struct {
	Min      Resources
	Region   string
	MaxPrice float64
	// Runtime, if set, must be among the offer's runtimes.
	Runtime string
	// Network, if set, rules out offers paid on another Bitcoin network
	// (an offer that does not say its network is not ruled out).
	Network string
	// Limit, if above 0, ends a lookup (Discoverer.Find) once it holds
	// this many matching offers; Match ignores it.
	Limit int
}

// priceBasis is what an offer is priced on for sorting and the price cap:
// the requested resources, or one core when the filter asks for none.
func (f Filter) priceBasis() Resources {
	r := f.Min
	if r.CPUMillis == 0 && r.MemoryBytes == 0 && r.DiskBytes == 0 {
		r.CPUMillis = 1000
	}
	return r
}

// Price is what the filter's request costs per hour at o's prices.
func (f Filter) Price(o *Offer) float64 { return o.HourlyCost(f.priceBasis()) }

// Match reports whether o satisfies the filter.
func (f Filter) Match(o *Offer) bool {
	r := o.Resources
	if r.CPUMillis == 0 || r.CPUMillis < f.Min.CPUMillis || r.MemoryBytes < f.Min.MemoryBytes ||
		r.DiskBytes < f.Min.DiskBytes || r.BandwidthBps < f.Min.BandwidthBps {
		return false
	}
	if f.Region != "" && !strings.EqualFold(f.Region, o.Region) {
		return false
	}
	if f.Runtime != "" && !slices.Contains(o.Runtimes, f.Runtime) {
		return false
	}
	if f.Network != "" && o.Network != "" && o.Network != f.Network {
		return false
	}
	if f.MaxPrice > 0 && f.Price(o) > f.MaxPrice {
		return false
	}
	return true
}

// Sort orders offers by the filter's price, cheapest first, then by seller ID
// so that the order is stable.
func (f Filter) Sort(offers []*Offer) {
	slices.SortFunc(offers, func(a, b *Offer) int {
		if c := cmp.Compare(f.Price(a), f.Price(b)); c != 0 {
			return c
		}
		return cmp.Compare(a.Seller, b.Seller)
	})
}
