package contract

import (
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
