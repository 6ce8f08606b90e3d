package contract

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

func TestEgressSats(t *testing.T) {
	for _, tc := range []struct {
		bytes, price uint64
		want         int64
	}{
		{0, 50_000, 0},
		{1 << 30, 50_000, 50},
		{1, 50_000, 0},              // a byte costs a fraction: rounded down
		{5 << 20, 50_000, 0},        // 5 MiB at 50 sat/GiB: 0.24 sat
		{5 << 20, 100_000_000, 488}, // at 100k sat/GiB: 488.28 sat
		{1 << 30, 1_999, 1},
		{1 << 30, 0, 0},
		{math.MaxUint64, math.MaxUint64, maxSats},
	} {
		if got := EgressSats(tc.bytes, tc.price); got != tc.want {
			t.Errorf("EgressSats(%d, %d) = %d, want %d", tc.bytes, tc.price, got, tc.want)
		}
	}
}

// egressMarket is one seller whose job writes outBytes to /out, at an
// egress price of egress msat/GiB, and a buyer.
func egressMarket(t *testing.T, outBytes int, egress uint64, sellerOpts ...func(*SellerConfig)) (*market, *Seller, *Buyer, *fakePay) {
	m := newMarket(t)
	pay := &fakePay{}
	s, _ := m.seller(&fakeRunner{work: testInterval / 2, outBytes: outBytes}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, sellerOpts...)
	m.offers[0].Prices.EgressGiB = egress
	b, _ := m.buyer(pay)
	m.connect()
	return m, s, b, pay
}

// A job that is sent its image and a 1 MiB input and sends 5 MiB of output
// at a non-zero egress price: the seller bills the bytes moved both ways,
// the buyer pays for them with its last payment update, the receipt
// carries bytes and amount, the seller's record holds them, and the
// seller's throughput hook saw the transfers.
func TestEgressBilled(t *testing.T) {
	const out = 5 << 20
	const price = 100_000_000 // 100k sat per GiB
	var mu sync.Mutex
	var rates []float64
	m, s, b, pay := egressMarket(t, out, price, func(c *SellerConfig) {
		c.OnThroughput = func(bps float64) { mu.Lock(); rates = append(rates, bps); mu.Unlock() }
	})
	req := m.request(10)
	const in = 1 << 20
	m.withInput(t, &req, make([]byte, in))
	j := doneJob(t, b, req)
	rc := j.Receipt
	image := uint64(len("a tarball, as far as the fake runner cares")) // newMarket's image, sent by digest
	// out.tar, the stdout line, and stderr (the fake job echoes its input)
	sent := uint64(out) + uint64(len("hello from ")+8+1) + uint64(len("input: ")+in)
	moved := sent + image + in
	egress := EgressSats(moved, price)
	if rc.EgressBytes != moved || rc.Egress != egress || egress != 683 {
		t.Fatalf("receipt: %d bytes moved, %d sat; want %d bytes (%d sent, %d image, %d input), %d sat", rc.EgressBytes, rc.Egress, moved, sent, image, in, egress)
	}
	owed := (&Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}).Owed(rc.Intervals)
	if rc.Billed != owed+egress || j.Paid != rc.Billed {
		t.Fatalf("billed %d, paid %d; want %d (intervals) + %d (egress)", rc.Billed, j.Paid, owed, egress)
	}
	pay.mu.Lock()
	held := pay.held[j.ContractID]
	pay.mu.Unlock()
	if held != owed+egress {
		t.Fatalf("the channel holds %d sat for the contract, want %d", held, owed+egress)
	}
	sr, _ := s.Machine().Get(RoleSeller, j.ContractID)
	if sr.State != StateSettled || sr.Paid != owed+egress || sr.Egress != egress || sr.EgressBytes != moved {
		t.Fatalf("seller's record: %s paid %d egress %d (%d bytes)", sr.State, sr.Paid, sr.Egress, sr.EgressBytes)
	}
	br, _ := b.Machine().Get(RoleBuyer, j.ContractID)
	if br.State != StateSettled {
		t.Fatalf("buyer's contract %s: %s", br.State, br.Why)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(rates) != 2 || !(rates[0] > 0) || !(rates[1] > 0) {
		t.Fatalf("throughput observed %v, want one rate for the 1 MiB received, one for the 6 MiB sent", rates)
	}
}

// An image the seller holds is not sent and costs nothing: only the input
// received and the output sent are billed.
func TestCachedImageNotBilled(t *testing.T) {
	const out = 5 << 20
	const price = 100_000_000
	m := newMarket(t)
	pay := &fakePay{}
	run := &cachingRunner{fakeRunner: &fakeRunner{work: testInterval / 2, outBytes: out}, have: map[string]bool{m.image: true}}
	m.seller(nil, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run })
	m.offers[0].Prices.EgressGiB = price
	b, _ := m.buyer(pay)
	m.connect()
	req := m.request(10)
	input := "input data"
	m.withInput(t, &req, []byte(input))
	j := doneJob(t, b, req)
	rc := j.Receipt
	if imports, read := run.counts(); imports != 0 || read != 0 {
		t.Fatalf("the cached image was imported %d time(s), %d bytes", imports, read)
	}
	sent := uint64(out) + uint64(len("hello from ")+8+1) + uint64(len("input: "+input)) // out.tar, stdout, stderr
	moved := sent + uint64(len(input))
	if rc.EgressBytes != moved || rc.Egress != EgressSats(moved, price) {
		t.Fatalf("receipt: %d bytes moved, %d sat; want %d bytes (no image), %d sat", rc.EgressBytes, rc.Egress, moved, EgressSats(moved, price))
	}
	if br, _ := b.Machine().Get(RoleBuyer, j.ContractID); br.State != StateSettled {
		t.Fatalf("buyer's contract %s: %s", br.State, br.Why)
	}
}

// A bill decodes only when its amount is its bytes, both ways, at its
// price, and the bytes both ways do not overflow.
func TestUnmarshalBill(t *testing.T) {
	good := Bill{EgressBytes: 5 << 20, IngressBytes: 1 << 20, EgressPrice: 100_000_000, Egress: 585, Intervals: 3, Total: 1000}
	if bl, err := unmarshalBill(marshalBill(good)); err != nil || bl != good {
		t.Fatalf("%+v: %+v, %v", good, bl, err)
	}
	for name, bl := range map[string]Bill{
		"egress only":   {EgressBytes: 5 << 20, IngressBytes: 1 << 20, EgressPrice: 100_000_000, Egress: 488},
		"overflow":      {EgressBytes: math.MaxUint64, IngressBytes: 1, EgressPrice: 1, Egress: 0},
		"overflow, max": {EgressBytes: math.MaxUint64, IngressBytes: math.MaxUint64, EgressPrice: math.MaxUint64, Egress: maxSats},
	} {
		if _, err := unmarshalBill(marshalBill(bl)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %+v decoded (%v)", name, bl, err)
		}
	}
}

// The job's --max-price caps what egress may add: the buyer pays up to it,
// and the receipt bills no more than was paid.
func TestEgressWithinMaxPrice(t *testing.T) {
	const out = 5 << 20
	m, s, b, _ := egressMarket(t, out, 1_000_000_000, func(c *SellerConfig) { c.PayGrace = testInterval })
	req := m.request(10)
	terms := TermsFor(m.offers[0], &req)
	req.MaxPrice = uint64(terms.Total) + 100 // egress costs 4882 sat, more than the whole contract
	j := doneJob(t, b, req)
	rc := j.Receipt
	if j.Paid != int64(req.MaxPrice) || rc.Billed != j.Paid || rc.EgressBytes == 0 || rc.Egress >= EgressSats(rc.EgressBytes, 1_000_000_000) {
		t.Fatalf("paid %d, billed %d (egress %d sat for %d bytes), max price %d", j.Paid, rc.Billed, rc.Egress, rc.EgressBytes, req.MaxPrice)
	}
	if sr, _ := s.Machine().Get(RoleSeller, j.ContractID); sr.Paid != j.Paid || sr.State != StateSettled {
		t.Fatalf("seller's record: %s, paid %d", sr.State, sr.Paid)
	}
}

// A seller that speaks only 1.2.0 bills no egress (and a 1.3.0 buyer
// still completes with it).
func TestEgressNotBilledBefore13(t *testing.T) {
	m, s, b, _ := egressMarket(t, 1<<20, 100_000_000)
	s.cfg.Host.RemoveStreamHandler(JobProtocol)
	s.cfg.Host.RemoveStreamHandler(JobProtocol13)
	// The buyer learns it by identify's push (imgcache_test.go).
	eventually(t, "the buyer to see the seller speaks 1.2.0 at most", func() bool {
		ps, _ := b.cfg.Host.Peerstore().SupportsProtocols(s.cfg.Host.ID(), JobProtocol, JobProtocol13)
		return len(ps) == 0
	})
	req := m.request(4)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Receipt == nil || j.Receipt.Egress != 0 || j.Receipt.EgressBytes != 0 {
		t.Fatalf("job %s, receipt %+v: %s %+v", j.State, j.Receipt, j.Error, j.Attempts)
	}
	// 1.2.0 has no bill: an interval the buyer paid for as the job
	// ended (a slow run crosses the boundary) is not on the receipt.
	p := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	if owed := p.Owed(j.Receipt.Intervals); j.Paid != owed && j.Paid != p.Owed(j.Receipt.Intervals+1) {
		t.Fatalf("paid %d, want %d (no egress)", j.Paid, owed)
	}
}

// A peerstore that still lists two versions the seller dropped: the
// buyer's lazily negotiated stream is refused once per stale version,
// and the job goes through on the version the seller speaks.
func TestEveryStaleJobProtocolIsForgotten(t *testing.T) {
	m, s, b, _ := egressMarket(t, 1<<20, 100_000_000)
	s.cfg.Host.RemoveStreamHandler(JobProtocol)
	s.cfg.Host.RemoveStreamHandler(JobProtocol13)
	// As late identifies would leave it, again and again while the job
	// starts: both dropped versions listed. The seller refuses each
	// lazily negotiated stream with "not supported", or resets it as it
	// reads the hello as a protocol name.
	stop := make(chan struct{})
	stale := make(chan struct{})
	go func() {
		defer close(stale)
		for {
			_ = b.cfg.Host.Peerstore().AddProtocols(s.cfg.Host.ID(), JobProtocol, JobProtocol13)
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	j := doneJob(t, b, m.request(4))
	close(stop)
	<-stale
	if len(j.Attempts) > 1 {
		t.Fatalf("%d attempts, want the job done on its first: %+v", len(j.Attempts), j.Attempts)
	}
}

// A buyer that speaks only 1.2.0 (as before egress billing) is served by
// a 1.3.0 seller as before: no bill, a receipt without egress fields, paid
// for the intervals alone.
func TestOlderBuyerNotBilledEgress(t *testing.T) {
	m, s, b, _ := egressMarket(t, 1<<20, 100_000_000)
	old := buyerJobProtocols
	buyerJobProtocols = []protocol.ID{JobProtocol12, JobProtocol11}
	t.Cleanup(func() { buyerJobProtocols = old })
	req := m.request(4)
	j := doneJob(t, b, req)
	owed := (&Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}).Owed(j.Receipt.Intervals)
	if j.Receipt.Egress != 0 || j.Receipt.EgressBytes != 0 || j.Paid != owed {
		t.Fatalf("receipt %+v, paid %d; want no egress, %d paid", j.Receipt, j.Paid, owed)
	}
	if sr, _ := s.Machine().Get(RoleSeller, j.ContractID); sr.State != StateSettled || sr.Egress != 0 {
		t.Fatalf("seller's record: %s, egress %d", sr.State, sr.Egress)
	}
}

// capPay is a payer whose channel holds at most max sats.
type capPay struct {
	*fakePay
	max int64
}

func (p *capPay) Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error) {
	if total > p.max {
		return nil, errors.New("channel capacity exceeded")
	}
	return p.fakePay.Pay(ctx, seller, contractID, total)
}

// A bill the buyer's channel cannot hold is paid as far as it can: the job
// is still done, its results kept, and the receipt bills what was paid.
func TestEgressBeyondTheChannel(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	m.seller(&fakeRunner{work: testInterval / 2, outBytes: 5 << 20}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.PayGrace = testInterval })
	m.offers[0].Prices.EgressGiB = 1_000_000_000 // 5 MiB: 4882 sat, more than the whole contract
	req := m.request(10)
	p := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	// The channel holds every interval of the contract, not the egress.
	b, _ := m.buyer(&capPay{fakePay: pay, max: p.Total()})
	m.connect()
	j := doneJob(t, b, req)
	rc := j.Receipt
	if rc.EgressBytes == 0 || rc.Billed != j.Paid || j.Paid > p.Total() || j.Paid < p.Owed(rc.Intervals) {
		t.Fatalf("paid %d, receipt %+v; want the %d interval(s) paid (%d sat), within the channel's %d, and billed", j.Paid, rc, rc.Intervals, p.Owed(rc.Intervals), p.Total())
	}
}

// FuzzBill: whatever a seller sends as its bill decodes or is refused, and
// what decodes encodes to bytes that decode the same.
func FuzzBill(f *testing.F) {
	f.Add([]byte{})
	f.Add(marshalBill(Bill{EgressBytes: 5 << 20, EgressPrice: 100_000_000, Egress: 488, Intervals: 3, Total: 1000}))
	f.Add(marshalBill(Bill{EgressBytes: 5 << 20, IngressBytes: 1 << 20, EgressPrice: 100_000_000, Egress: 585, Intervals: 3, Total: 1000}))
	f.Add(marshalBill(Bill{IngressBytes: 3 << 30, EgressPrice: 50_000, Egress: 150}))
	f.Add(marshalBill(Bill{EgressBytes: math.MaxUint64, IngressBytes: 1, EgressPrice: 1}))
	f.Add([]byte{0x08, 1, 0x08, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		bl, err := unmarshalBill(b)
		if err != nil {
			return
		}
		moved, ok := bl.Moved()
		if !ok || bl.Egress != EgressSats(moved, bl.EgressPrice) || bl.Egress < 0 || bl.Total < 0 {
			t.Fatalf("%x: accepted %+v", b, bl)
		}
		back, err := unmarshalBill(marshalBill(bl))
		if err != nil || back != bl {
			t.Fatalf("%x: %+v, again %+v %v", b, bl, back, err)
		}
	})
}

// doneJob submits req and waits for it to be done with a receipt.
func doneJob(t *testing.T, b *Buyer, req Request) *JobStatus {
	t.Helper()
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Receipt == nil {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	return j
}

// slowPay is a payer whose payments above first take delay to leave.
type slowPay struct {
	*fakePay
	first int64
	delay time.Duration
}

func (p *slowPay) Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error) {
	if total > p.first {
		time.Sleep(p.delay)
	}
	return p.fakePay.Pay(ctx, seller, contractID, total)
}

// A 1.2.0 buyer asked for a second interval as its job ends pays for it
// after the end (under -race, a job of half an interval could end so): the
// seller takes that payment and bills the interval, so that the receipt
// bills what the buyer paid (it billed one interval of the two paid).
func TestOlderBuyerPaidAfterTheEnd(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	m.seller(&fakeRunner{work: testInterval * 5 / 4}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	req := m.request(4)
	p := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	b, _ := m.buyer(&slowPay{fakePay: pay, first: p.Owed(1), delay: testInterval / 2})
	m.connect()
	old := buyerJobProtocols
	buyerJobProtocols = []protocol.ID{JobProtocol12, JobProtocol11}
	t.Cleanup(func() { buyerJobProtocols = old })
	j := doneJob(t, b, req)
	// On a slow machine the job may end before the second interval's
	// beat; either way the receipt bills what was paid.
	if j.Paid != p.Owed(j.Receipt.Intervals) || j.Receipt.Billed != j.Paid {
		t.Fatalf("receipt: %d intervals, billed %d; paid %d; want the intervals paid billed", j.Receipt.Intervals, j.Receipt.Billed, j.Paid)
	}
	t.Logf("%d intervals billed and paid", j.Receipt.Intervals)
}
