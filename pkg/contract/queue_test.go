package contract

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// TestQueuedProposal: a seller whose capacity is all held keeps a
// proposal waiting, when its contracts are expected to end within its
// queue_wait, and accepts it the moment one gives its capacity back; it
// refuses at once without a history of holds, when the first end is
// expected later than the wait, and with queue_wait 0; a proposal still
// without room when its wait is over gets the capacity refusal and its
// retry-after.
func TestQueuedProposal(t *testing.T) {
	m := newMarket(t)
	capacity := offer.Resources{CPUMillis: 2000, MemoryBytes: 2 << 30}
	s, sh := m.seller(&fakeRunner{}, &fakePay{}, capacity, 3_600_000_000, func(c *SellerConfig) { c.QueueWait = 10 * time.Second })
	bh := m.host()
	m.connect()
	bkey := bh.Peerstore().PrivKey(bh.ID())
	o := m.offers[0]
	propose := func() (*Decision, string) {
		req := m.request(5) // 1000 mcpu: two fill the seller
		tm := TermsFor(o, &req)
		now := time.Now()
		p := &Proposal{Version: Version, Buyer: bh.ID(), Seller: sh.ID(), OfferSeq: 1, Request: req,
			Interval: tm.Interval, Price: tm.Price, StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33),
			Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute)}
		env, err := SignProposal(p, bkey)
		if err != nil {
			t.Fatal(err)
		}
		denv, err := s.Decide(context.Background(), bh.ID(), env)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenDecision(denv, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return d, p.ID()
	}
	var held []string
	for range 2 {
		d, id := propose()
		if d.Verdict != Accept {
			t.Fatalf("filling: %s %s", d.Verdict, d.Reason)
		}
		held = append(held, id)
	}
	// No contract ended yet: how long they hold is unknown, no wait.
	if d, _ := propose(); d.Verdict != Reject || d.Reason != ReasonCapacity || d.RetryAfter != noHistoryRetryAfter {
		t.Fatalf("no history: %s %s %s", d.Verdict, d.Reason, d.RetryAfter)
	}
	// Contracts held a minute each: the first end is expected in 30 s,
	// past the 10 s wait.
	s.holds.mu.Lock()
	s.holds.mean = time.Minute
	s.holds.mu.Unlock()
	if d, _ := propose(); d.Verdict != Reject || d.Reason != ReasonCapacity {
		t.Fatalf("long holds: %s %s", d.Verdict, d.Reason)
	}

	// Holds of 2 s: one of the two is expected to end within a second.
	s.holds.mu.Lock()
	s.holds.mean = 2 * time.Second
	s.holds.mu.Unlock()
	got := make(chan *Decision, 1)
	go func() { d, _ := propose(); got <- d }()
	eventually(t, "the proposal to wait", func() bool {
		s.holds.mu.Lock()
		defer s.holds.mu.Unlock()
		return s.holds.queued == 1
	})
	select {
	case d := <-got:
		t.Fatalf("answered while the capacity is held: %s %s", d.Verdict, d.Reason)
	default:
	}
	// One contract gives its capacity back (it was never funded).
	if _, err := s.machine.Move(RoleSeller, held[0], StateExpired, "not funded", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.Verdict != Accept {
			t.Fatalf("after a release: %s %s %s", d.Verdict, d.Reason, d.Message)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting proposal was not admitted after a release")
	}
	if h := s.Held(); h.MilliCPU != 2000 {
		t.Fatalf("held %+v, want the two contracts' 2000", h)
	}

	// Nothing ends within the wait: refused with the hint when it is over.
	s.cfg.QueueWait = 200 * time.Millisecond
	s.holds.mu.Lock()
	s.holds.mean = 200 * time.Millisecond
	s.holds.mu.Unlock()
	if d, _ := propose(); d.Verdict != Reject || d.Reason != ReasonCapacity || d.RetryAfter == 0 {
		t.Fatalf("wait over: %s %s %s", d.Verdict, d.Reason, d.RetryAfter)
	}
	s.holds.mu.Lock()
	queued := s.holds.queued
	s.holds.mu.Unlock()
	if queued != 0 {
		t.Fatalf("%d proposals still queued", queued)
	}
	// queue_wait 0: refused at once.
	s.cfg.QueueWait = 0
	if d, _ := propose(); d.Verdict != Reject || d.Reason != ReasonCapacity {
		t.Fatalf("no queue: %s %s", d.Verdict, d.Reason)
	}
}

// TestQueueTurns: a proposal waits only when its turn is expected within
// the wait: a release every mean hold divided among the contracts holding
// capacity, after the proposals already waiting; never beyond maxQueued.
func TestQueueTurns(t *testing.T) {
	h := holdStats{mean: 8 * time.Second, holding: 2} // a release every 4 s
	var leaves []func()
	for i := range 2 { // turns at 4 s and 8 s
		_, leave, ok := h.enqueue(10 * time.Second)
		if !ok {
			t.Fatalf("proposal %d not queued", i)
		}
		leaves = append(leaves, leave)
	}
	if _, _, ok := h.enqueue(10 * time.Second); ok {
		t.Fatal("a third proposal queued: its turn is expected at 12 s, past the 10 s wait")
	}
	leaves[0]()
	if _, _, ok := h.enqueue(10 * time.Second); !ok {
		t.Fatal("one left the queue: the next has its turn at 8 s")
	}
	if _, _, ok := (&holdStats{holding: 2}).enqueue(time.Hour); ok {
		t.Fatal("queued without a history of holds")
	}
	h = holdStats{mean: time.Millisecond, holding: 1}
	for range maxQueued {
		if _, _, ok := h.enqueue(time.Hour); !ok {
			t.Fatal("refused before the queue is full")
		}
	}
	if _, _, ok := h.enqueue(time.Hour); ok {
		t.Fatalf("more than %d queued", maxQueued)
	}
}
