package contract

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestDecide: every kind of bad proposal gets a signed decision with its
// reason and changes nothing; a good one is accepted once.
func TestDecide(t *testing.T) {
	m := newMarket(t)
	capacity := offer.Resources{CPUMillis: 2000, MemoryBytes: 2 << 30}
	s, sh := m.seller(&fakeRunner{}, &fakePay{}, capacity, 3_600_000_000)
	bh := m.host()
	m.connect()
	bkey := bh.Peerstore().PrivKey(bh.ID())
	o := m.offers[0]
	good := func() *Proposal {
		req := m.request(5)
		tm := TermsFor(o, &req)
		now := time.Now()
		return &Proposal{Version: Version, Buyer: bh.ID(), Seller: sh.ID(), OfferSeq: 1, Request: req,
			Interval: tm.Interval, Price: tm.Price, StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33),
			Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute)}
	}
	sign := func(p *Proposal) []byte {
		env, err := SignProposal(p, bkey)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	s.cfg.Network = "regtest"
	replayed := sign(good())
	if _, err := s.Decide(context.Background(), bh.ID(), replayed); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		from    peer.ID
		env     []byte
		verdict Verdict
		reason  Reason
	}{
		{"good", bh.ID(), sign(good()), Accept, ReasonNone},
		{"replayed", bh.ID(), replayed, Reject, ReasonReplayed},
		{"over capacity now", bh.ID(), sign(good()), Reject, ReasonCapacity},
		{"garbage", bh.ID(), []byte("garbage"), Reject, ReasonMalformed},
		{"expired", bh.ID(), sign(func() *Proposal {
			p := good()
			p.Issued = p.Issued.Add(-time.Hour)
			p.Expiry = p.Issued.Add(time.Minute)
			return p
		}()), Reject, ReasonExpired},
		{"sent by another peer", sh.ID(), sign(good()), Reject, ReasonPolicy},
		{"cheap", bh.ID(), sign(func() *Proposal { p := good(); p.Price--; return p }()), Counter, ReasonPrice},
		{"too long", bh.ID(), sign(func() *Proposal { p := good(); p.Request.Duration = 2 * time.Hour; return p }()), Counter, ReasonDuration},
		{"runtime", bh.ID(), sign(func() *Proposal { p := good(); p.Request.Runtime = "runsc"; return p }()), Reject, ReasonRuntime},
		{"bigger than the offer", bh.ID(), sign(func() *Proposal { p := good(); p.Request.Resources.CPUMillis = 8000; return p }()), Reject, ReasonCapacity},
		{"wrong interval", bh.ID(), sign(func() *Proposal { p := good(); p.Interval = time.Second; return p }()), Reject, ReasonPolicy},
		{"another bitcoin network", bh.ID(), sign(func() *Proposal { p := good(); p.Network = "mainnet"; return p }()), Reject, ReasonNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := s.Decide(context.Background(), tc.from, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			d, err := OpenDecision(env, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if d.Verdict != tc.verdict || d.Reason != tc.reason {
				t.Fatalf("got %s %q (%s), want %s %q", d.Verdict, d.Reason, d.Message, tc.verdict, tc.reason)
			}
			// Only a refusal for the capacity held now says when to
			// come back (no contract ended yet: the default hint).
			if want := map[bool]time.Duration{true: noHistoryRetryAfter}[tc.name == "over capacity now"]; d.RetryAfter != want {
				t.Fatalf("retry after %s, want %s", d.RetryAfter, want)
			}
		})
	}
	recs, _ := s.Machine().List(RoleSeller)
	if len(recs) != 2 {
		t.Fatalf("%d contracts recorded, want the 2 accepted", len(recs))
	}
	if h := s.Held(); h.MilliCPU != 2000 {
		t.Fatalf("held %+v", h)
	}

	// Over the wire: Propose gets the same answers; a stream of garbage
	// gets a malformed rejection, never a hang or a panic.
	d, _, err := Propose(context.Background(), bh, sh.ID(), sign(good()), nil)
	if err != nil || d.Reason != ReasonCapacity {
		t.Fatalf("propose: %v %+v", err, d)
	}
	st, err := bh.NewStream(context.Background(), sh.ID(), NegotiateProtocol)
	if err != nil {
		t.Fatal(err)
	}
	st.Write(append(binary.AppendUvarint(nil, 4), 9, 9, 9, 9))
	st.CloseWrite()
	c := newConn(st)
	env, err := c.expect(frameDecision, MaxDecisionSize)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := OpenDecision(env, time.Now()); err != nil || d.Reason != ReasonMalformed {
		t.Fatalf("garbage stream: %v %+v", err, d)
	}
	st, _ = bh.NewStream(context.Background(), sh.ID(), NegotiateProtocol)
	st.Write(binary.AppendUvarint(nil, MaxProposalSize+100))
	st.CloseWrite()
	if _, err := newConn(st).expect(frameDecision, MaxDecisionSize); err != nil {
		t.Logf("oversized frame: %v", err)
	}
}

func TestRank(t *testing.T) {
	mk := func(id string, coreHour uint64, cpu uint64, region string) *offer.Offer {
		return &offer.Offer{Seller: peer.ID(id), Resources: offer.Resources{CPUMillis: cpu, MemoryBytes: 8 << 30},
			Prices: offer.Prices{CoreHour: coreHour}, BillingInterval: time.Minute, Region: region}
	}
	offers := []*offer.Offer{mk("cheap", 1e6, 4000, "eu"), mk("dear", 5e6, 4000, "eu"), mk("small", 1e5, 500, "eu"), mk("us", 1e5, 4000, "us")}
	req := &Request{Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}, Duration: 10 * time.Minute, Region: "eu"}
	tests := []struct {
		name     string
		maxPrice uint64
		rep      Reputation
		want     []peer.ID
	}{
		{"cheapest first", 0, nil, []peer.ID{"cheap", "dear"}},
		{"budget", 200, nil, []peer.ID{"cheap"}},
		{"reputation beats price", 0, repMap{"dear": {0.99, 10}, "cheap": {0.1, 10}}, []peer.ID{"dear", "cheap"}},
		{"blocked", 0, repMap{"cheap": {-1, 0}}, []peer.ID{"dear"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := *req
			r.MaxPrice = tc.maxPrice
			got := Rank(offers, &r, tc.rep, nil, ForJob, nil)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d candidates, want %v", len(got), tc.want)
			}
			for i := range got {
				if got[i].Seller != tc.want[i] {
					t.Fatalf("rank %d: %s, want %s", i, got[i].Seller, tc.want[i])
				}
			}
		})
	}
	// With a Ranker, the order is the policy's: contract only filters.
	pol := &policy{repMap: repMap{"cheap": {0.9, 50}}}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, p := range []Purpose{ForJob, ForUncheckableJob, ForSpotCheck} {
		got := Rank(offers, req, pol, func(peer.ID) time.Duration { return 30 * time.Millisecond }, p, rng)
		if pol.purpose != p || pol.rng != rng || len(pol.got) != 2 || pol.got[0].RTT != 30*time.Millisecond || pol.got[1].Terms.Total == 0 {
			t.Fatalf("ranker got %+v for %v", pol, p)
		}
		if len(got) != 2 || got[0].Seller != "dear" || !got[0].Explore {
			t.Fatalf("order not the policy's: %+v", got)
		}
	}
	// The buyer asks for the right purpose.
	for _, tc := range []struct {
		j    JobStatus
		want Purpose
	}{
		{JobStatus{Request: Request{Deterministic: true}}, ForJob},
		{JobStatus{}, ForUncheckableJob},
		{JobStatus{Request: Request{Deterministic: true}, shadow: true}, ForSpotCheck},
	} {
		if got := purposeOf(&tc.j); got != tc.want {
			t.Errorf("purpose of %+v: %v, want %v", tc.j, got, tc.want)
		}
	}
}

// policy is a Ranker that reverses the order it gets and marks the first
// as explored.
type policy struct {
	repMap
	got     []Candidate
	purpose Purpose
	rng     *rand.Rand
}

func (p *policy) Rank(cands []Candidate, purpose Purpose, rng *rand.Rand) []Candidate {
	p.got, p.purpose, p.rng = cands, purpose, rng
	out := slices.Clone(cands)
	slices.Reverse(out)
	out[0].Explore = true
	return out
}

type repMap map[peer.ID][2]float64

func (r repMap) Score(p peer.ID) (float64, float64) {
	if v, ok := r[p]; ok {
		return v[0], v[1]
	}
	return 0.5, 0
}
func (r repMap) Outcome(peer.ID, string, Fault) {}
func (r repMap) Blocked(p peer.ID) bool         { return r[p][0] < 0 }

// BenchmarkDecide measures proposals a seller answers per second
// (accepting, each into its own reservation; capacity never runs out).
func BenchmarkDecide(b *testing.B) {
	m := newMarket(b)
	s, sh := m.seller(&fakeRunner{}, &fakePay{}, offer.Resources{CPUMillis: 1 << 60, MemoryBytes: 1 << 60}, 3_600_000_000)
	bh := m.host()
	bkey := bh.Peerstore().PrivKey(bh.ID())
	req := m.request(5)
	tm := TermsFor(m.offers[0], &req)
	envs := make([][]byte, b.N)
	for i := range envs {
		now := time.Now()
		p := &Proposal{Version: Version, Buyer: bh.ID(), Seller: sh.ID(), Request: req, Interval: tm.Interval, Price: tm.Price,
			StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33), Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute)}
		envs[i], _ = SignProposal(p, bkey)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Decide(context.Background(), bh.ID(), envs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecide: whatever bytes a peer sends as a proposal, the seller answers
// with a decision it signed, and nothing but a valid proposal is accepted.
func FuzzDecide(f *testing.F) {
	// No network and no Start: nothing runs in the background of a fuzz
	// worker.
	skey, sid := newKey(f)
	bkey, bid := newKey(f)
	sh, bh := idHost{id: sid}, idHost{id: bid}
	o := &offer.Offer{Version: offer.Version, Seller: sh.ID(), Resources: offer.Resources{CPUMillis: 1 << 40, MemoryBytes: 1 << 60},
		BillingInterval: testInterval, Prices: offer.Prices{CoreHour: 3_600_000_000}, Seq: 1}
	s, err := NewSeller(SellerConfig{Host: sh, Key: skey, Store: NewMemStore(), Runner: &fakeRunner{},
		Payments: &fakePay{}, Offer: func() *offer.Offer { return o }, Capacity: func() offer.Resources { return o.Resources }})
	if err != nil {
		f.Fatal(err)
	}
	req := Request{Image: "sha256:" + strings.Repeat("ab", 32), Command: []string{"true"},
		Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 256 << 20}, Duration: time.Second}
	tm := TermsFor(o, &req)
	now := time.Now()
	p := &Proposal{Version: Version, Buyer: bh.ID(), Seller: sh.ID(), Request: req, Interval: tm.Interval, Price: tm.Price,
		StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33), Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute)}
	env, _ := SignProposal(p, bkey)
	f.Add(env)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := s.Decide(context.Background(), bh.ID(), b)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenDecision(out, time.Now())
		if err != nil {
			t.Fatalf("seller's own decision does not open: %v", err)
		}
		if d.Verdict == Accept {
			if _, err := OpenProposal(b, time.Now()); err != nil {
				t.Fatalf("accepted an invalid proposal: %v", err)
			}
		}
	})
}

// idHost is a host.Host that only knows its ID: enough for Decide.
type idHost struct {
	host.Host
	id peer.ID
}

func (h idHost) ID() peer.ID { return h.id }
