package contract

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// resumeGrace is the restart grace of the service resume tests.
func resumeGrace(c *SellerConfig) { c.RestartGrace = 10 * time.Second }

// A service contract's job stream breaks (its connection closed): the
// buyer resumes it, the same contract goes on serving on the same seller,
// whose health reports go to the new stream; cancelled, it settles.
func TestServiceStreamResumed(t *testing.T) {
	m := newMarket(t)
	run := newSvcRunner([]byte("resumed"))
	pay := &fakePay{}
	s, sh := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run }, calmSeller, resumeGrace)
	var resumed atomic.Int32
	b, bh := m.buyer(pay, calmBuyer, func(c *BuyerConfig) {
		c.RestartGrace = 10 * time.Second
		c.Log = slog.New(slog.NewTextHandler(countWriter{"job stream resumed", &resumed}, nil))
	})
	m.connect()
	req := m.serviceRequest(1000, 1)
	id, addr, cid := healthyService(t, b, req, 1)
	if err := bh.Network().ClosePeer(sh.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "resumed and serving", func() bool {
		if resumed.Load() == 0 {
			return false
		}
		got, err := get(addr)
		return err == nil && string(got) == "resumed"
	})
	j, _ := b.Job(id)
	if j.Service.Contracts != 1 || len(j.Service.Running) != 1 || j.Service.Running[0].ContractID != cid || j.Service.Replacements != 0 {
		t.Fatalf("after the streams broke: %+v", j.Service)
	}
	// The seller's health reports reach the resumed stream: a crash and
	// restart of the job shows.
	close(run.dead)
	eventually(t, "the restart reported", func() bool {
		j, _ := b.Job(id)
		return j.Service.Running[0].Health.Restarts >= 1
	})
	b.Cancel(id)
	if j := waitJob(t, b, id); j.State != JobCancelled {
		t.Fatalf("service %s", j.State)
	}
	eventually(t, "the seller's contract settled", func() bool {
		r, err := s.Machine().Get(RoleSeller, cid)
		return err == nil && r.State == StateSettled
	})
}

// A buyer node that stops (and one whose process died, which leaves the
// same records) runs its service again at its next start: the same
// contract on the same seller, paid on, and the forward listens again on
// the address it had.
func TestServiceBuyerRestart(t *testing.T) {
	m := newMarket(t)
	run := newSvcRunner([]byte("restored"))
	pay := &fakePay{}
	s, _ := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run }, calmSeller, resumeGrace)
	var cfg BuyerConfig
	b, _ := m.buyer(pay, calmBuyer, func(c *BuyerConfig) { c.RestartGrace = 10 * time.Second; cfg = *c })
	m.connect()
	req := m.serviceRequest(1000, 1)
	id, addr, cid := healthyService(t, b, req, 1)
	if _, err := get(addr); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if j, _ := b.Job(id); j.State != JobRunning {
		t.Fatalf("after the stop the service is %s (%s)", j.State, j.Error)
	}
	if _, err := get(addr); err == nil {
		t.Fatal("the forward serves with its node stopped")
	}
	b2, err := NewBuyer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	eventually(t, "the restored service serving", func() bool {
		got, err := get(addr)
		return err == nil && string(got) == "restored"
	})
	paid := func() int64 { j, _ := b2.Job(id); return j.Paid }
	before := paid()
	eventually(t, "paying on", func() bool { return paid() > before })
	j, _ := b2.Job(id)
	if j.State != JobRunning || j.Service.Contracts != 1 || len(j.Service.Running) != 1 || j.Service.Running[0].ContractID != cid {
		t.Fatalf("restored service: %s %+v", j.State, j.Service)
	}
	b2.Cancel(id)
	if j := waitJob(t, b2, id); j.State != JobCancelled {
		t.Fatalf("service %s", j.State)
	}
	eventually(t, "the seller's contract settled", func() bool {
		r, err := s.Machine().Get(RoleSeller, cid)
		return err == nil && r.State == StateSettled
	})
	r, _ := s.Machine().Get(RoleSeller, cid)
	if j, _ := b2.Job(id); r.Paid != j.Paid {
		t.Fatalf("the seller holds %d, the buyer paid %d", r.Paid, j.Paid)
	}
}

// countWriter counts the log lines that hold s.
type countWriter struct {
	s string
	n *atomic.Int32
}

func (w countWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.s) {
		w.n.Add(1)
	}
	return len(p), nil
}
