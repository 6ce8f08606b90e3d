package contract

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fakeChecker is a Reputation that spot-checks when check is set and keeps
// what it is told.
type fakeChecker struct {
	Neutral
	check bool

	mu      sync.Mutex
	asked   []peer.ID
	results [][]SpotOutcome
}

func (f *fakeChecker) ShouldSpotCheck(p peer.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, p)
	return f.check
}

func (f *fakeChecker) SpotCheckResult(rs []SpotOutcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results = append(f.results, append([]SpotOutcome(nil), rs...))
}

var _ SpotChecker = (*fakeChecker)(nil)

func withReputation(r Reputation) func(*BuyerConfig) {
	return func(c *BuyerConfig) { c.Reputation = r }
}

var spotCapacity = offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}

// spotDone waits for job id's spot check to end and returns the job.
func spotDone(t *testing.T, b *Buyer, id string) *JobStatus {
	t.Helper()
	var j *JobStatus
	eventually(t, "spot check ends", func() bool {
		j, _ = b.Job(id)
		return j.SpotCheck != nil && j.SpotCheck.State != SpotRunning
	})
	return j
}

func TestSpotCheckMatch(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	runA := &fakeRunner{work: testInterval / 2, stdout: "42\n"}
	runB := &fakeRunner{work: testInterval / 2, stdout: "42\n"}
	_, hA := m.seller(runA, pay, spotCapacity, 1_000_000_000) // cheaper: the job's own seller
	_, hB := m.seller(runB, pay, spotCapacity, 2_000_000_000)
	chk := &fakeChecker{check: true}
	b, _ := m.buyer(pay, withReputation(chk))
	m.connect()
	req := m.request(2)
	req.Deterministic = true
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Seller != hA.ID() {
		t.Fatalf("job %+v", j)
	}
	paid, dir, ct := j.Paid, j.ResultDir, j.ContractID
	j = spotDone(t, b, id)
	sc := j.SpotCheck
	if sc.State != SpotDone || sc.Verdict != VerdictMatch || len(sc.Mismatched) != 0 || len(sc.Runs) != 2 {
		t.Fatalf("spot check %+v", sc)
	}
	if sc.Runs[0].Seller != hA.ID() || sc.Runs[1].Seller != hB.ID() || sc.Runs[0].Digest != sc.Runs[1].Digest || sc.Paid <= 0 {
		t.Fatalf("runs %+v", sc)
	}
	// The job itself is as it was: same seller, contract, results, payment.
	if j.State != JobDone || j.Paid != paid || j.ResultDir != dir || j.ContractID != ct || len(j.Attempts) != 1 {
		t.Fatalf("the spot check changed the job: %+v", j)
	}
	runB.mu.Lock()
	defer runB.mu.Unlock()
	if runB.runs != 1 {
		t.Fatalf("seller B ran %d times", runB.runs)
	}
	chk.mu.Lock()
	defer chk.mu.Unlock()
	if len(chk.results) != 1 || len(chk.results[0]) != 2 {
		t.Fatalf("results reported %+v", chk.results)
	}
}

func TestSpotCheckMajorityCatchesGarbage(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	bad := &fakeRunner{work: testInterval / 2, stdout: "garbage\n"}
	good1 := &fakeRunner{work: testInterval / 2, stdout: "42\n"}
	good2 := &fakeRunner{work: testInterval / 2, stdout: "42\n"}
	_, hBad := m.seller(bad, pay, spotCapacity, 1_000_000_000) // cheapest: gets the job
	_, h1 := m.seller(good1, pay, spotCapacity, 2_000_000_000)
	_, h2 := m.seller(good2, pay, spotCapacity, 3_000_000_000)
	chk := &fakeChecker{check: true}
	b, _ := m.buyer(pay, withReputation(chk))
	m.connect()
	req := m.request(2)
	req.Deterministic = true
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Seller != hBad.ID() {
		t.Fatalf("job %+v", j)
	}
	paid := j.Paid
	j = spotDone(t, b, id)
	sc := j.SpotCheck
	if sc.State != SpotDone || sc.Verdict != VerdictMismatch || !slices.Equal(sc.Mismatched, []peer.ID{hBad.ID()}) || len(sc.Runs) != 3 {
		t.Fatalf("spot check %+v", sc)
	}
	if sc.Runs[1].Seller != h1.ID() || sc.Runs[2].Seller != h2.ID() || sc.Runs[1].Digest != sc.Runs[2].Digest || sc.Runs[0].Digest == sc.Runs[1].Digest {
		t.Fatalf("runs %+v", sc.Runs)
	}
	// The job's own result is unaffected: still the (garbage) output it got.
	out, _ := os.ReadFile(filepath.Join(j.ResultDir, OutputStdout))
	if j.State != JobDone || j.Paid != paid || string(out) != "garbage\n" || j.Seller != hBad.ID() {
		t.Fatalf("the spot check changed the job: %+v stdout %q", j, out)
	}
	chk.mu.Lock()
	defer chk.mu.Unlock()
	if len(chk.results) != 1 || len(chk.results[0]) != 3 {
		t.Fatalf("results reported %+v", chk.results)
	}
}

func TestSpotCheckNotDeterministic(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	runA := &fakeRunner{work: testInterval / 2, stdout: "42\n"}
	runB := &fakeRunner{work: testInterval / 2, stdout: "42\n"}
	m.seller(runA, pay, spotCapacity, 1_000_000_000)
	m.seller(runB, pay, spotCapacity, 2_000_000_000)
	chk := &fakeChecker{check: true}
	b, _ := m.buyer(pay, withReputation(chk))
	m.connect()
	id, err := b.Submit(context.Background(), m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	b.Close() // waits for anything in the background
	if j.State != JobDone || j.SpotCheck != nil {
		t.Fatalf("job %+v", j)
	}
	chk.mu.Lock()
	defer chk.mu.Unlock()
	runA.mu.Lock()
	defer runA.mu.Unlock()
	runB.mu.Lock()
	defer runB.mu.Unlock()
	if len(chk.asked) != 0 || len(chk.results) != 0 || runA.runs+runB.runs != 1 {
		t.Fatalf("a non-deterministic job was spot-checked: asked %v, runs %d+%d", chk.asked, runA.runs, runB.runs)
	}
}

func TestRequestDeterministicRoundTrip(t *testing.T) {
	_, buyer := newKey(t)
	p := testProposal(buyer, buyer)
	p.Request.Deterministic = true
	var r Request
	if err := r.unmarshal(p.Request.marshal()); err != nil || !r.Deterministic {
		t.Fatalf("round trip: %v %+v", err, r)
	}
	// Only 1 is canonical.
	var e enc
	e.Uint(rqDeterministic, 2)
	if err := r.unmarshal(append(p.Request.marshal()[:0:0], e.B...)); err == nil {
		t.Fatal("deterministic=2 accepted")
	}
}
