package contract

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

// gatePay is fakePay whose receiver is a FundingGate: a contract is
// admitted unconfirmed when zeroConf, else once confs reaches 3.
type gatePay struct {
	*fakePay
	mu       sync.Mutex
	confs    uint32
	zeroConf bool
	released []string
	admits   int
}

var _ FundingGate = (*gatePay)(nil)

func (g *gatePay) Admit(ctx context.Context, buyer peer.ID, contractID string, open []byte, amount int64) (Funding, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.admits++
	f := Funding{Confirmations: g.confs, Needed: 3, NextBlockSeconds: 420, MaxSat: 10_000}
	switch {
	case g.zeroConf:
		f.Ready, f.ZeroConf, f.ExposureSat = true, true, amount
	case g.confs >= 3:
		f.Ready = true
	default:
		f.Why = "the exposure would be above payment.zero_conf_max"
	}
	return f, nil
}

func (g *gatePay) Release(contractID string) {
	g.mu.Lock()
	g.released = append(g.released, contractID)
	g.mu.Unlock()
}

func (g *gatePay) set(confs uint32) {
	g.mu.Lock()
	g.confs = confs
	g.mu.Unlock()
}

// TestFundingWaitThenStart: a contract the seller will not start on an
// unconfirmed funding waits in funded, the buyer's job showing the
// confirmations as they come, and runs once they are all there.
func TestFundingWaitThenStart(t *testing.T) {
	m := newMarket(t)
	pay := &gatePay{fakePay: &fakePay{}}
	s, _ := m.seller(&fakeRunner{}, pay.fakePay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Payments = pay })
	b, _ := m.buyer(pay.fakePay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	job := func() *JobStatus { j, _ := b.Job(id); return j }
	eventually(t, "the job shows 0/3 confirmations", func() bool {
		f := job().Funding
		return f != nil && !f.Ready && f.Confirmations == 0 && f.Needed == 3 && f.NextBlockSeconds == 420
	})
	j := job()
	if j.State != JobSearching || j.Phase != PhaseFund {
		t.Fatalf("waiting job is %s (%s)", j.State, j.Phase)
	}
	if got := j.Funding.String(); got != "funding: 0/3 confirmations, next block in about 7m0s" {
		t.Fatalf("funding line %q", got)
	}
	rec, err := s.Machine().Get(RoleSeller, j.ContractID)
	if err != nil || rec.State != StateFunded || !strings.Contains(rec.Why, "waiting for the funding's confirmations") {
		t.Fatalf("seller's contract while it waits: %+v %v", rec, err)
	}
	if h := s.Held(); h.MilliCPU != 1000 {
		t.Fatalf("capacity held while waiting: %+v", h)
	}
	pay.set(1)
	eventually(t, "the job shows 1/3", func() bool { f := job().Funding; return f != nil && f.Confirmations == 1 })
	pay.set(3)
	j = waitJob(t, b, id)
	if j.State != JobDone || j.Funding == nil || !j.Funding.Ready || j.Funding.ZeroConf {
		t.Fatalf("job %s %s, funding %+v", j.State, j.Error, j.Funding)
	}
	eventually(t, "the contract is released at the gate", func() bool {
		pay.mu.Lock()
		defer pay.mu.Unlock()
		return slices.Contains(pay.released, j.ContractID)
	})
}

// TestFundingZeroConfStart: a contract within the seller's exposure bound
// starts at once, and the buyer's job says it started unconfirmed.
func TestFundingZeroConfStart(t *testing.T) {
	m := newMarket(t)
	pay := &gatePay{fakePay: &fakePay{}, zeroConf: true}
	s, _ := m.seller(&fakeRunner{}, pay.fakePay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Payments = pay })
	b, _ := m.buyer(pay.fakePay)
	m.connect()
	req := m.request(2)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Funding == nil || !j.Funding.ZeroConf || !j.Funding.Ready {
		t.Fatalf("job %s %s, funding %+v", j.State, j.Error, j.Funding)
	}
	rec, _ := s.Machine().Get(RoleSeller, j.ContractID)
	var started bool
	for _, h := range rec.History {
		started = started || h.To == StateRunning
	}
	if !started || !strings.Contains(j.Funding.String(), "started unconfirmed (seller's exposure") {
		t.Fatalf("history %+v, funding %q", rec.History, j.Funding)
	}
}

// TestFundingNeverConfirms: a funding that does not confirm within the
// seller's funding_wait ends the contract with funding_unconfirmed,
// before anything is paid or runs; the capacity is released.
func TestFundingNeverConfirms(t *testing.T) {
	m := newMarket(t)
	pay := &gatePay{fakePay: &fakePay{}}
	run := &fakeRunner{}
	s, _ := m.seller(run, pay.fakePay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Payments, c.FundingWait = pay, 2*time.Second })
	b, _ := m.buyer(pay.fakePay, func(c *BuyerConfig) { c.MaxAttempts = 1 })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobFailed || !strings.Contains(j.Error, string(RefuseFundingUnconfirmed)) || j.Paid != 0 {
		t.Fatalf("job %s paid %d: %s", j.State, j.Paid, j.Error)
	}
	a := j.Attempts[len(j.Attempts)-1]
	rec, _ := s.Machine().Get(RoleSeller, a.ContractID)
	if rec.State.Holds() || rec.Paid != 0 || !strings.Contains(rec.Why, "confirmations after 2s") {
		t.Fatalf("seller's contract %s paid %d: %s", rec.State, rec.Paid, rec.Why)
	}
	if a.Fault != FaultBuyer || a.Reason != ReasonFundingUnconfirmed {
		t.Fatalf("fault %s reason %q, want the buyer's (its funding), funding_unconfirmed", a.Fault, a.Reason)
	}
	if !strings.HasPrefix(rec.Why, "funding_unconfirmed: ") {
		t.Fatalf("seller's record why %q", rec.Why)
	}
	eventually(t, "the capacity is released", func() bool { return s.Held().MilliCPU == 0 })
}

// FuzzFunding: whatever a seller sends as a funding frame decodes or is
// refused, and what decodes encodes to bytes that decode the same.
func FuzzFunding(f *testing.F) {
	f.Add([]byte{})
	f.Add(marshalFunding(Funding{Confirmations: 1, Needed: 3, NextBlockSeconds: 412.5, ExposureSat: 100, MaxSat: 10_000,
		Until: time.UnixMilli(1_800_000_000_000), Why: "the exposure would be above payment.zero_conf_max"}))
	f.Add(marshalFunding(Funding{Confirmations: 0, Needed: 3, Ready: true, ZeroConf: true, ExposureSat: 9000, MaxSat: 10_000}))
	f.Add([]byte{0x08, 1, 0x08, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		fd, err := unmarshalFunding(b)
		if err != nil {
			return
		}
		if fd.Needed == 0 || fd.ExposureSat < 0 || fd.MaxSat < 0 || len(fd.Why) > maxFundingWhy {
			t.Fatalf("%x: accepted %+v", b, fd)
		}
		back, err := unmarshalFunding(marshalFunding(fd))
		if err != nil || back != fd {
			t.Fatalf("%x: %+v, again %+v %v", b, fd, back, err)
		}
		_ = fd.String()
	})
}
