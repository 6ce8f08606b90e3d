package contract

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestExplain: a request no offer fits is explained by the first
// constraint that rules out the last offers, with what would work.
func TestExplain(t *testing.T) {
	mk := func(id string, cpu uint64, mem uint64, coreHour uint64, region string, runtimes ...string) *offer.Offer {
		if len(runtimes) == 0 {
			runtimes = []string{"runc"}
		}
		return &offer.Offer{Seller: peer.ID(id), Resources: offer.Resources{CPUMillis: cpu, MemoryBytes: mem, DiskBytes: 10 << 30},
			Prices:          offer.Prices{CoreHour: coreHour, StartFee: 100_000},
			BillingInterval: time.Minute, MinDuration: time.Minute, MaxDuration: time.Hour, Region: region, Runtimes: runtimes}
	}
	offers := []*offer.Offer{
		mk("cheap", 2000, 4<<30, 600_000, "eu"),
		mk("dear", 4000, 8<<30, 1_200_000, "us", "runc", "runsc"),
		mk("self", 64000, 1<<40, 1, "eu"),
	}
	base := func() Request {
		return Request{Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 256 << 20}, Duration: 10 * time.Minute, MaxPrice: 1000}
	}
	for _, tc := range []struct {
		name   string
		change func(*Request)
		miss   string
		want   []string
	}{
		{"fits", func(*Request) {}, "", nil},
		// 10 intervals of 1 core at 600 sat/h = 100 sat, plus a 100 sat start fee.
		{"price", func(r *Request) { r.MaxPrice = 50 }, MissPrice, []string{"for 50 sat or less", "the cheapest is 200 sat", "start fee 100 sat", "seller " + peer.ID("cheap").String(), "raise --max-price to 200"}},
		{"cpus", func(r *Request) { r.Resources.CPUMillis = 64000 }, MissSize, []string{"no seller offers 64 CPUs", "the largest offer is 4 CPUs / 8GiB memory", "seller " + peer.ID("dear").String()}},
		{"memory", func(r *Request) { r.Resources.MemoryBytes = 16 << 30 }, MissSize, []string{"the largest offer is 4 CPUs / 8GiB memory"}},
		{"duration", func(r *Request) { r.Duration = 2 * time.Hour }, MissDuration, []string{"1m0s to 1h0m0s", "change --time"}},
		{"runtime", func(r *Request) { r.Runtime = "crun" }, MissRuntime, []string{"runc, runsc"}},
		{"region", func(r *Request) { r.Region = "ap" }, MissRegion, []string{"eu, us"}},
		{"price after size", func(r *Request) { r.Resources.CPUMillis = 3000; r.MaxPrice = 100 }, MissPrice, []string{"seller " + peer.ID("dear").String()}},
	} {
		req := base()
		tc.change(&req)
		err := Explain(offers, &req, nil, peer.ID("self"))
		if tc.miss == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var ne *NoOfferError
		if !errors.As(err, &ne) || !errors.Is(err, ErrNoOffer) || ne.Miss != tc.miss {
			t.Errorf("%s: %v, want a %s miss", tc.name, err, tc.miss)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
		if ne.Offers != 2 {
			t.Errorf("%s: counted %d offers, want 2 (not the node's own)", tc.name, ne.Offers)
		}
	}
	req := base()
	rep := &recRep{blocked: map[peer.ID]bool{"cheap": true, "dear": true}}
	if err := Explain(offers, &req, rep, "self"); err == nil || !strings.Contains(err.Error(), "skipped 2 seller(s) you have blocked: "+peer.ID("cheap").String()+", "+peer.ID("dear").String()) {
		t.Errorf("blocked sellers: %v", err)
	}
	if err := Explain(nil, &Request{}, nil, ""); err != nil {
		t.Errorf("no offers at all: %v, want nil (the search goes on)", err)
	}
}

// goneSellerFind is the market's lookup as offer.Discoverer.FindN does it
// when a seller the DHT names is gone (behind NAT, its fetch waits the
// per-peer timeout, here gone): a lookup with a limit returns at the first
// Limit matching offers; one without waits for every fetch.
func goneSellerFind(m *market, gone time.Duration) func(context.Context, offer.Filter) ([]*offer.Offer, error) {
	return func(ctx context.Context, f offer.Filter) ([]*offer.Offer, error) {
		m.omu.Lock()
		var out []*offer.Offer
		for _, o := range m.offers {
			if f.Match(o) && (f.Limit == 0 || len(out) < f.Limit) {
				out = append(out, o)
			}
		}
		m.omu.Unlock()
		if f.Limit > 0 && len(out) >= f.Limit {
			return out, nil
		}
		select {
		case <-time.After(gone):
		case <-ctx.Done():
		}
		return out, nil
	}
}

// Submit's look at the market (QuoteUntil) ends at the first offers that
// fit and that the caller accepts, without waiting for the fetch of a gone
// seller's offer: each submit waited that fetch's 5 s before (a trivial
// job home to home took 6-7 s in BenchmarkNAT, not 0.6 s). When the caller
// does not accept them, it waits for the whole market, as Quote does.
func TestQuoteUntilSkipsGoneSeller(t *testing.T) {
	m := newMarket(t)
	capacity := offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}
	for _, price := range []uint64{1_000_000_000, 2_000_000_000, 3_000_000_000} {
		m.seller(&fakeRunner{}, &fakePay{}, capacity, price)
	}
	const gone = 3 * time.Second
	b, _ := m.buyer(&fakePay{}, func(c *BuyerConfig) { c.Find = goneSellerFind(m, gone) })
	req := m.request(2)

	began := time.Now()
	cands, accepted, err := b.QuoteUntil(context.Background(), req, func([]Candidate) bool { return true })
	if took := time.Since(began); err != nil || !accepted || len(cands) == 0 || took >= gone {
		t.Fatalf("QuoteUntil accepting the first offers: %d candidates, accepted %v, err %v, took %s (the gone seller's fetch: %s)", len(cands), accepted, err, took, gone)
	}
	for i := 1; i < len(cands); i++ {
		if cands[i].Terms.Total < cands[i-1].Terms.Total {
			t.Fatalf("candidates not cheapest first: %+v", cands)
		}
	}

	began = time.Now()
	cands, accepted, err = b.QuoteUntil(context.Background(), req, func([]Candidate) bool { return false })
	if took := time.Since(began); err != nil || accepted || len(cands) != 3 || took < gone {
		t.Fatalf("QuoteUntil refusing the first offers: %d candidates (want the whole market's 3), accepted %v, err %v, took %s (want the full lookup, >= %s)", len(cands), accepted, err, took, gone)
	}
	if cands[0].Terms.Total >= cands[2].Terms.Total {
		t.Fatalf("candidates not cheapest first: %+v", cands)
	}
}
