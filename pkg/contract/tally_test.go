package contract

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// svcEgressPrice makes forwarded bytes cost whole sats: 1,000,000 sat per
// GiB, about 84 sat for each 90 kB page.
const svcEgressPrice = 1_000_000_000

// TestServiceBytesBilledEachInterval: a service's forwarded bytes are
// billed with the intervals while its contract runs, and paid: the seller
// holds them before the contract ends, and the final bill adds nothing it
// had not counted.
func TestServiceBytesBilledEachInterval(t *testing.T) {
	m := newMarket(t)
	body := bytes.Repeat([]byte("blackbox "), 10000)
	run := newSvcRunner(body)
	pay := &fakePay{}
	s, _ := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run }, calmSeller)
	m.offers[0].Prices.EgressGiB = svcEgressPrice
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	id, addr := forwardedService(t, b, m.serviceRequest(1000, 1))
	const gets = 5
	for range gets {
		got, err := get(addr)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("GET through the forward: %d bytes, %v", len(got), err)
		}
	}
	j, _ := b.Job(id)
	cid := j.Service.Running[0].ContractID
	bytesSats := EgressSats(gets*uint64(len(body)), svcEgressPrice)
	// While the contract runs, what the seller holds covers its intervals
	// and the bytes forwarded.
	var running *Record
	eventually(t, "the forwarded bytes paid with an interval", func() bool {
		r, err := s.Machine().Get(RoleSeller, cid)
		if err != nil || r.State != StateRunning || r.Proposal == nil {
			return false
		}
		running = r
		return r.Paid >= r.Proposal.Owed(r.Intervals)+bytesSats
	})
	t.Logf("running contract %s: %d interval(s), paid %d sat = %d for the intervals + %d for bytes (the pages alone: %d)",
		cid[:8], running.Intervals, running.Paid, running.Proposal.Owed(running.Intervals), running.Paid-running.Proposal.Owed(running.Intervals), bytesSats)
	if err := b.Cancel(id); err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, b, id); j.State != JobCancelled {
		t.Fatalf("service %s after cancel: %s", j.State, j.Error)
	}
	eventually(t, "the seller's contract settled", func() bool {
		r, err := s.Machine().Get(RoleSeller, cid)
		return err == nil && r.State == StateSettled
	})
	r, _ := s.Machine().Get(RoleSeller, cid)
	if r.EgressBytes < gets*uint64(len(body)) || r.Egress < bytesSats || r.Paid != r.Proposal.Owed(r.Intervals)+r.Egress {
		t.Fatalf("seller's final record: %d bytes, %d sat of bytes, paid %d for %d interval(s) (%d)", r.EgressBytes, r.Egress, r.Paid, r.Intervals, r.Proposal.Owed(r.Intervals))
	}
	br, _ := b.Machine().Get(RoleBuyer, cid)
	if br.State != StateSettled || br.Paid != r.Paid {
		t.Fatalf("buyer's contract %s (%s) paid %d, the seller holds %d", br.State, br.Why, br.Paid, r.Paid)
	}
}

// TestServiceTallyOverClaimRefused: a seller whose tally claims more bytes
// than the buyer's forwards moved, beyond the tolerance, is not paid for
// them: the contract fails as the seller's fault (the reputation book's
// evidence) and the seller holds only the intervals.
func TestServiceTallyOverClaimRefused(t *testing.T) {
	over := func(bl *Bill) { bl.EgressBytes += 64 << 20 }
	tallyTamper.Store(&over)
	t.Cleanup(func() { tallyTamper.Store(nil) })
	m := newMarket(t)
	run := newSvcRunner([]byte("ok"))
	pay := &fakePay{}
	_, sh := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run }, calmSeller)
	m.offers[0].Prices.EgressGiB = svcEgressPrice
	rep := &recRep{}
	b, _ := m.buyer(pay, calmBuyer, func(c *BuyerConfig) { c.Reputation = rep })
	m.connect()
	id, err := b.Submit(context.Background(), m.serviceRequest(1000, 1))
	if err != nil {
		t.Fatal(err)
	}
	var bad recOutcome
	eventually(t, "a contract failed for its tally", func() bool {
		for _, o := range rep.outcomes() {
			if o.seller == sh.ID() && o.fault == FaultSeller {
				bad = o
				return true
			}
		}
		return false
	})
	br, err := b.Machine().Get(RoleBuyer, bad.contract)
	if err != nil || br.State != StateFailed || !strings.Contains(br.Why, "tally for") || br.Paid > br.Proposal.Owed(br.Intervals) {
		t.Fatalf("buyer's contract: %+v, %v; want failed for the tally, paid no bytes", br, err)
	}
	t.Logf("refused: %s", br.Why)
	if err := b.Cancel(id); err != nil {
		t.Fatal(err)
	}
	waitJob(t, b, id)
}

func TestParseBeat(t *testing.T) {
	p := &Proposal{Interval: testInterval, Price: 1_000_000, StartFee: 1000}
	tally := Bill{EgressBytes: 1 << 20, IngressBytes: 10, EgressPrice: svcEgressPrice, Intervals: 4}
	moved, _ := tally.Moved()
	tally.Egress = EgressSats(moved, svcEgressPrice)
	tally.Total = p.Owed(4) + tally.Egress
	good := append(binary.AppendUvarint(nil, 3), marshalBill(tally)...)
	t.Logf("a beat with the tally of %d bytes: %d bytes on the wire (the count alone: 1)", moved, len(good))
	for _, c := range []struct {
		name  string
		b     []byte
		n     uint64
		tally bool
		err   bool
	}{
		{"count only", binary.AppendUvarint(nil, 7), 7, false, false},
		{"with a tally", good, 3, true, false},
		{"empty", nil, 0, false, true},
		{"tally for another interval", append(binary.AppendUvarint(nil, 4), marshalBill(tally)...), 0, false, true},
		{"tally amount wrong", append(binary.AppendUvarint(nil, 3), marshalBill(Bill{EgressBytes: 1 << 30, EgressPrice: 1000, Egress: 5, Intervals: 4})...), 0, false, true},
		{"trailing junk", append(binary.AppendUvarint(nil, 3), 0xff), 0, false, true},
	} {
		n, got, err := parseBeat(c.b)
		if (err != nil) != c.err || err == nil && (n != c.n || (got != nil) != c.tally) {
			t.Errorf("%s: %d, %+v, %v", c.name, n, got, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v is not ErrMalformed", c.name, err)
		}
		if c.tally && err == nil && *got != tally {
			t.Errorf("%s: tally %+v, want %+v", c.name, *got, tally)
		}
	}
}

func TestTallies(t *testing.T) {
	var ts tallies
	ts.ask(2, 10)
	ts.ask(3, 25)
	ts.ask(3, 20) // asked again (a beat for the same interval): never less
	ts.ask(5, 40)
	for n, want := range map[uint64]int64{1: 0, 2: 10, 3: 25, 4: 25, 5: 40, 9: 40} {
		if got := ts.of(n); got != want {
			t.Errorf("of(%d) = %d, want %d", n, got, want)
		}
	}
	ts.drop(4)
	if got := ts.of(4); got != 25 || len(ts.at) != 2 {
		t.Errorf("after drop(4): of(4) = %d with %d kept, want 25 with 2", got, len(ts.at))
	}
}

// FuzzBeat: whatever a seller sends as a heartbeat decodes or is refused;
// a tally that decodes is one for the interval the beat asks for, with an
// amount that is its bytes at its price.
func FuzzBeat(f *testing.F) {
	f.Add([]byte{3})
	f.Add(append(binary.AppendUvarint(nil, 3), marshalBill(Bill{EgressBytes: 5 << 20, EgressPrice: 100_000_000, Egress: 488, Intervals: 4, Total: 1000})...))
	f.Add(append(binary.AppendUvarint(nil, 1<<40), 0x08, 1))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x20, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, tally, err := parseBeat(b)
		if err != nil || tally == nil {
			return
		}
		moved, ok := tally.Moved()
		if !ok || tally.Intervals != n+1 || tally.Egress != EgressSats(moved, tally.EgressPrice) {
			t.Fatalf("%x: accepted beat %d with %+v", b, n, *tally)
		}
	})
}

// TestServiceUnpaidBytesStopped: a buyer that does not pay the bytes a
// tally bills (here: its contract's max price leaves no room for them) is
// stopped as one that does not pay for time, after the grace; the seller
// does not serve on unpaid until the contract's end.
func TestServiceUnpaidBytesStopped(t *testing.T) {
	m := newMarket(t)
	body := bytes.Repeat([]byte("blackbox "), 10000)
	run := newSvcRunner(body)
	pay := &fakePay{}
	s, _ := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run; c.PayGrace = time.Second })
	m.offers[0].Prices.EgressGiB = 1_000_000_000_000 // a page costs more than the whole contract
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	req := m.serviceRequest(1000, 1)
	total := TermsFor(m.offers[0], &req).Total
	secs := uint64(req.Duration / time.Second)
	req.MaxPrice = (uint64(total)*3600 + secs - 1) / secs // per hour: each contract's cap covers its intervals only
	capSats := int64(serviceContractRequest(req).MaxPrice)
	id, addr, cid := healthyService(t, b, req, 1)
	if got, err := get(addr); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("GET through the forward: %d bytes, %v", len(got), err)
	}
	var r *Record
	eventually(t, "the seller stopped the contract unpaid", func() bool {
		r, _ = s.Machine().Get(RoleSeller, cid)
		return r != nil && r.State == StateFailed
	})
	if r.Why != "unpaid" || r.Paid > capSats {
		t.Fatalf("seller's contract: %s (%s), paid %d; want failed unpaid within the cap of %d", r.State, r.Why, r.Paid, capSats)
	}
	t.Logf("contract %s stopped unpaid after %d interval(s), paid %d of a %d sat cap", cid[:8], r.Intervals, r.Paid, capSats)
	// The contract spent its max price before its term ended: the slot
	// starts no other until then (the service stays within its max price
	// an hour), where it would have started one at once.
	time.Sleep(20 * testInterval)
	if j, _ := b.Job(id); j.Service.Contracts != 1 || len(j.Service.Running) != 0 {
		t.Fatalf("after the capped contract: %d contracts, %d running; want the slot paused until the term's end", j.Service.Contracts, len(j.Service.Running))
	}
	b.Cancel(id)
	waitJob(t, b, id)
}

// TestServiceUnpaidAfterTallies: a service's buyer paid its tallies (bytes
// forwarded included), then its payments stop coming (here: they hang). The
// seller stops the contract as unpaid, with no bill, and its receipt bills
// the bytes the buyer already paid for: the buyer settles it (it counted
// those bytes) and does not dispute an honest seller's egress.
func TestServiceUnpaidAfterTallies(t *testing.T) {
	m := newMarket(t)
	body := bytes.Repeat([]byte("blackbox "), 10000)
	run := newSvcRunner(body)
	pay := &fakePay{release: make(chan struct{})}
	s, _ := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run; c.PayGrace = time.Second })
	m.offers[0].Prices.EgressGiB = svcEgressPrice
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	id, addr := forwardedService(t, b, m.serviceRequest(1000, 1))
	if got, err := get(addr); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("GET through the forward: %d bytes, %v", len(got), err)
	}
	j, _ := b.Job(id)
	cid := j.Service.Running[0].ContractID
	eventually(t, "the forwarded bytes paid with an interval", func() bool {
		r, err := s.Machine().Get(RoleSeller, cid)
		return err == nil && r.State == StateRunning && r.Proposal != nil && r.Paid > r.Proposal.Owed(r.Intervals)
	})
	pay.mu.Lock()
	pay.blockAfter = pay.pays // every payment from now on hangs
	pay.mu.Unlock()
	var sr *Record
	eventually(t, "the seller stopped the contract unpaid", func() bool {
		sr, _ = s.Machine().Get(RoleSeller, cid)
		return sr != nil && sr.State == StateFailed
	})
	if sr.Why != "unpaid" || sr.Egress == 0 {
		t.Fatalf("seller's contract: %s (%s), egress %d sat; want failed unpaid with the bytes paid billed", sr.State, sr.Why, sr.Egress)
	}
	close(pay.release)
	var br *Record
	eventually(t, "the buyer's contract ended", func() bool {
		br, _ = b.machine.Get(RoleBuyer, cid)
		return br != nil && (br.State == StateSettled || br.State == StateDisputed)
	})
	if br.State != StateSettled {
		t.Fatalf("buyer's contract: %s (%s); the seller billed %d sat of bytes it was paid (%d paid)", br.State, br.Why, sr.Egress, sr.Paid)
	}
	t.Logf("contract %s: the seller stopped it unpaid billing %d sat of bytes of %d paid; the buyer settled it", cid[:8], sr.Egress, sr.Paid)
	b.Cancel(id)
	waitJob(t, b, id)
}
