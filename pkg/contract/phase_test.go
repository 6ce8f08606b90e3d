package contract

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// phaseLog records what the engines report to OnPhase.
type phaseLog struct {
	mu     sync.Mutex
	phases map[Role][]string
	took   map[string]time.Duration // the seller's, by phase
}

func (l *phaseLog) record(role Role, phase string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.phases == nil {
		l.phases, l.took = map[Role][]string{}, map[string]time.Duration{}
	}
	l.phases[role] = append(l.phases[role], phase)
	if role == RoleSeller {
		l.took[phase] = d
	}
}

// TestPhasesReported: a job that runs reports each of its phases once, in
// order, on both sides; the seller's run is the job's own wall time.
func TestPhasesReported(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: testInterval}
	pay := &fakePay{}
	log := &phaseLog{}
	m.seller(run, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.OnPhase = log.record })
	b, _ := m.buyer(pay, func(c *BuyerConfig) { c.OnPhase = log.record })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(5))
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, b, id); j.State != JobDone {
		t.Fatalf("job %+v", j)
	}
	eventually(t, "the seller reports its results phase", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return slices.Contains(log.phases[RoleSeller], PhaseResults)
	})
	log.mu.Lock()
	defer log.mu.Unlock()
	if want := []string{PhaseFund, PhaseTransfer, PhasePay, PhaseStart, PhaseRun, PhaseResults}; !slices.Equal(log.phases[RoleSeller], want) {
		t.Errorf("seller phases %v, want %v", log.phases[RoleSeller], want)
	}
	if want := []string{PhaseDiscover, PhaseNegotiate, PhaseFund, PhaseTransfer, PhaseRun, PhaseResults}; !slices.Equal(log.phases[RoleBuyer], want) {
		t.Errorf("buyer phases %v, want %v", log.phases[RoleBuyer], want)
	}
	if log.took[PhaseRun] != run.work || log.took[PhaseStart] < 0 {
		t.Errorf("seller's run %s (the job's wall time is %s), start %s", log.took[PhaseRun], run.work, log.took[PhaseStart])
	}
}
