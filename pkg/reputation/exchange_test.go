package reputation

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

type node struct {
	h    host.Host
	me   ident
	book *Book
	x    *Exchange
}

// twoNodes connects a sender and a receiver on an in-memory network. The
// books share a frozen clock, so rate limits do not depend on timing.
func twoNodes(t *testing.T, cfg Config, ev ContractEvidence) (sender, receiver node) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	c := &clock{t0.Add(time.Minute)}
	var ns [2]node
	for i := range ns {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewBook(Options{Config: cfg, Self: h.ID(), Evidence: ev, Now: c.now})
		if err != nil {
			t.Fatal(err)
		}
		ns[i] = node{h: h, me: ident{h.Peerstore().PrivKey(h.ID()), h.ID()}, book: b, x: NewExchange(h, b, nil)}
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	return ns[0], ns[1]
}

func TestExchangePush(t *testing.T) {
	seller, mallory := newIdent(t, 5), newIdent(t, 6)
	ev := contracts{}
	s, r := twoNodes(t, DefaultConfig(), ev)
	ev["k1"] = PaidContract{Buyer: s.me.id, Seller: seller.id, PaidSats: 5000}
	ev["k2"] = PaidContract{Buyer: s.me.id, Seller: seller.id}
	good := attest(t, s.me, Attestation{ContractID: "k1", Attester: s.me.id, Subject: seller.id, Outcome: OutcomeAbandoned, IssuedAt: t0})
	records := [][]byte{
		good,
		good, // replayed
		attest(t, mallory, Attestation{ContractID: "k1", Attester: s.me.id, Subject: seller.id}), // forged
		attest(t, s.me, Attestation{ContractID: "k2", Attester: s.me.id, Subject: seller.id}),    // unpaid
		attest(t, s.me, Attestation{ContractID: "k1", Attester: s.me.id, Subject: s.me.id}),      // self
		trustStmt(t, s.me, seller.id, 300, t0),
	}
	n, err := s.x.Push(context.Background(), r.h.ID(), records)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("accepted %d, want 2", n)
	}
	rej := r.book.Rejections()
	for _, reason := range []Reason{ReasonReplayed, ReasonForged, ReasonUnpaid, ReasonSelfReference} {
		if rej[reason] != 1 {
			t.Errorf("%s counted %d times, want 1 (%v)", reason, rej[reason], rej)
		}
	}
	// The receiver does not trust the sender, so the attestation is kept
	// but weighs nothing until it does.
	if sc := r.book.Score(seller.id); sc.Evidence != 0 {
		t.Fatalf("untrusted attestation counted: %+v", sc)
	}
	r.book.SetTrust(s.me.id, 1)
	if sc := r.book.Score(seller.id); sc.Evidence == 0 {
		t.Fatalf("trusted attestation ignored: %+v", sc)
	}
	if r.book.Blocked(s.me.id) {
		t.Fatal("well-behaved sender penalised")
	}
}

// A flood is cut off at the rate limit, counted, and costs the sender its
// standing until the gater refuses it.
func TestExchangeFloodHurtsSender(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RateBurst = 4
	cfg.MaxAttestationsPerStream = 10
	ev := contracts{}
	s, r := twoNodes(t, cfg, ev)
	seller := newIdent(t, 5)
	var flood [][]byte
	for i := 0; i < 10; i++ {
		id := string(rune('a' + i))
		ev[id] = PaidContract{Buyer: s.me.id, Seller: seller.id, PaidSats: 5000}
		flood = append(flood, attest(t, s.me, Attestation{ContractID: id, Attester: s.me.id, Subject: seller.id, IssuedAt: t0}))
	}
	ctx := context.Background()
	if _, err := s.x.Push(ctx, r.h.ID(), flood); err == nil {
		t.Fatal("flood accepted without error")
	}
	if got := r.book.Accepted(); got != uint64(cfg.RateBurst) {
		t.Fatalf("accepted %d records, want the burst %d", got, cfg.RateBurst)
	}
	if r.book.Rejections()[ReasonRateLimited] != 1 {
		t.Fatalf("rejections %v", r.book.Rejections())
	}
	if sc := r.book.Score(s.me.id); sc.Sources[0].Outcomes["abuse"] != 1 {
		t.Fatalf("flood not held against the sender: %+v", sc)
	}
	// The bucket is empty (the clock does not move): the next push is
	// abuse again, and now the sender falls below the threshold.
	s.x.Push(ctx, r.h.ID(), flood[:1])
	if !r.book.Blocked(s.me.id) {
		t.Fatalf("repeat flooder not blocked: %+v", r.book.Score(s.me.id))
	}
	g := NewGater(r.book, nil)
	if g.InterceptPeerDial(s.me.id) || g.InterceptSecured(network.DirInbound, s.me.id, nil) {
		t.Fatal("gater lets a blocked peer through")
	}
	if !g.InterceptPeerDial(seller.id) {
		t.Fatal("gater refuses a peer in good standing")
	}
	if n := g.Sweep(r.h.Network()); n != 1 {
		t.Fatalf("sweep dropped %d peers, want 1", n)
	}
	if r.h.Network().Connectedness(s.me.id) == network.Connected {
		t.Fatal("blocked peer still connected")
	}
}

func TestExchangeOversized(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxAttestationBytes = 512
	s, r := twoNodes(t, cfg, contracts{})
	seller := newIdent(t, 5)
	big := attest(t, s.me, Attestation{ContractID: "k", Attester: s.me.id, Subject: seller.id, Evidence: make([]byte, 600)})
	if _, err := s.x.Push(context.Background(), r.h.ID(), [][]byte{big}); err == nil {
		t.Fatal("oversized record accepted")
	}
	if r.book.Rejections()[ReasonOversized] != 1 || r.book.Accepted() != 0 {
		t.Fatalf("rejections %v", r.book.Rejections())
	}
}
