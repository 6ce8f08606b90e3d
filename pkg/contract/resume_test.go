package contract

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// A job stream that breaks mid-job (1.4.0) is resumed by the buyer: the
// job goes on, the seller sends the outputs the buyer lacks, and the job
// completes with a verified receipt, paid exactly what it bills.
func TestStreamBrokenResumed(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: 5 * testInterval, outBytes: 200 << 10}
	pay := &fakePay{}
	grace := func(c *SellerConfig) { c.RestartGrace = 5 * time.Second }
	s, sh := m.seller(run, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, grace)
	b, bh := m.buyer(pay, func(c *BuyerConfig) { c.RestartGrace = 5 * time.Second })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(10))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job runs", func() bool {
		j, _ := b.Job(id)
		return j.State == JobRunning && j.Intervals >= 2
	})
	if err := bh.Network().ClosePeer(sh.ID()); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Receipt == nil || len(j.Attempts) != 1 {
		t.Fatalf("job %+v", j)
	}
	rc := j.Receipt
	br, _ := b.Machine().Get(RoleBuyer, j.ContractID)
	sr, _ := s.Machine().Get(RoleSeller, j.ContractID)
	if br.State != StateSettled || sr.State != StateSettled {
		t.Fatalf("buyer's contract %s (%s), seller's %s (%s) %+v", br.State, br.Why, sr.State, sr.Why, j)
	}
	if rc.Billed != j.Paid || sr.Paid != j.Paid || rc.Billed != br.Proposal.Owed(rc.Intervals)+rc.Egress {
		t.Fatalf("billed %d for %d intervals, buyer paid %d, seller holds %d", rc.Billed, rc.Intervals, j.Paid, sr.Paid)
	}
	if rc.Outputs[2].Size != 200<<10 {
		t.Fatalf("out.tar %d bytes", rc.Outputs[2].Size)
	}
}

func TestResumeFrame(t *testing.T) {
	r := Resume{ContractID: "15045527c37d9d86bd9f4b124f4d0f6f9bfa5dd58731d55425c7d92055092005", Have: [3]uint64{5, 0, 1 << 40}}
	got, err := unmarshalResume(marshalResume(r))
	if err != nil || got != r {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"empty":       nil,
		"bad id":      marshalResume(Resume{ContractID: "../../etc"}),
		"trailing":    append(marshalResume(r), 0),
		"huge offset": append(marshalResume(Resume{ContractID: r.ContractID}), 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"too large":   bytes.Repeat([]byte{0x0a}, maxResumeSize+1),
	} {
		if _, err := unmarshalResume(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// FuzzResume: a buyer's jResume frame never panics the seller, and what
// decodes encodes back to the same bytes.
func FuzzResume(f *testing.F) {
	f.Add(marshalResume(Resume{ContractID: "15045527c37d9d86bd9f4b124f4d0f6f", Have: [3]uint64{1, 2, 3}}))
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := unmarshalResume(b)
		if err != nil {
			return
		}
		if !validContractID(r.ContractID) {
			t.Fatalf("accepted contract id %q", r.ContractID)
		}
		if again, err := unmarshalResume(marshalResume(r)); err != nil || again != r {
			t.Fatalf("re-encoded %+v: %+v, %v", r, again, err)
		}
	})
}

// stoppedBuyer submits a job of work intervals (duration in seconds) to
// a seller and a buyer with the given restart graces, lets it run two
// intervals, and stops the buyer (its node's SIGTERM); cfg starts the
// next buyer on the same store.
func stoppedBuyer(t *testing.T, work, duration int, sellerGrace, buyerGrace time.Duration) (*Seller, *Buyer, BuyerConfig, string) {
	t.Helper()
	m := newMarket(t)
	pay := &fakePay{}
	s, _ := m.seller(&fakeRunner{work: time.Duration(work) * testInterval}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.RestartGrace = sellerGrace })
	var cfg BuyerConfig
	b, _ := m.buyer(pay, func(c *BuyerConfig) { c.RestartGrace = buyerGrace; cfg = *c })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(duration))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job runs", func() bool {
		j, _ := b.Job(id)
		return j.State == JobRunning && j.Intervals >= 2
	})
	b.Close()
	return s, b, cfg, id
}

// A buyer that stops (its node's SIGTERM) leaves its 1.4.0 job running;
// the next buyer on the same store resumes it: same seller, one attempt,
// paid exactly what the receipt bills.
func TestBuyerStopResumed(t *testing.T) {
	s, b, cfg, id := stoppedBuyer(t, 6, 10, 5*time.Second, 5*time.Second)
	if j, _ := b.Job(id); j.State != JobRunning {
		t.Fatalf("after the stop the job is %s (%s)", j.State, j.Error)
	}
	time.Sleep(testInterval)
	b2, err := NewBuyer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	j := waitJob(t, b2, id)
	sr, _ := s.Machine().Get(RoleSeller, j.ContractID)
	if j.State != JobDone || j.Receipt == nil || len(j.Attempts) != 1 || j.Attempts[0].State != StateSettled || sr.State != StateSettled {
		t.Fatalf("job %+v; seller's contract %s", j, sr.State)
	}
	if j.Receipt.Billed != j.Paid || sr.Paid != j.Paid {
		t.Fatalf("billed %d, buyer paid %d, seller holds %d", j.Receipt.Billed, j.Paid, sr.Paid)
	}
}

// A buyer that comes back after the seller ended the job (the seller's
// grace is over) is told so at once, and does not try again until its
// own, longer, grace ends.
func TestResumeOfEndedJobRefusedAtOnce(t *testing.T) {
	s, b, cfg, id := stoppedBuyer(t, 20, 30, time.Second, time.Hour)
	j, _ := b.Job(id)
	eventually(t, "the seller to end the job of the buyer gone", func() bool {
		sr, err := s.Machine().Get(RoleSeller, j.ContractID)
		return err == nil && jobOver(sr.State)
	})
	b2, err := NewBuyer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	j = waitJob(t, b2, id) // within the test's wait, not the hour of grace
	if j.State != JobFailed || len(j.Attempts) == 0 || !strings.Contains(j.Attempts[0].Why, "has ended") {
		t.Fatalf("job %s: %q, attempts %+v; want the first to end with the seller's 'has ended'", j.State, j.Error, j.Attempts)
	}
}
