package contract

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

const testInterval = 200 * time.Millisecond

// fakeRunner imports tarballs by checking their digest and runs a job for
// `work` (or until killed), writing a line to stdout and bytes to /out. It
// tracks how much CPU its running jobs hold, to catch overselling.
type fakeRunner struct {
	work    time.Duration
	onStart func()
	// stdout, if set, is all the job writes to stdout (a deterministic job).
	stdout string
	// outBytes, if set, is how many bytes the job writes to /out.
	outBytes int

	// finished, if set, is told each job's contract ID as its work ends.
	finished chan string
	// stopDelay is how long a killed job takes to stop (a loaded
	// machine's sandbox).
	stopDelay time.Duration

	mu           sync.Mutex
	cpu, maxCPU  uint64
	runs, killed int
}

func (r *fakeRunner) ImportImage(ctx context.Context, rd io.Reader, digest string) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, rd); err != nil {
		return "", err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return "", fmt.Errorf("digest %s, want %s", got, digest)
	}
	return "img:" + digest, nil
}

func (r *fakeRunner) Pull(ctx context.Context, ref string) (string, error) { return ref, nil }

func (r *fakeRunner) Run(ctx context.Context, spec RunSpec) (*RunResult, error) {
	r.mu.Lock()
	r.cpu += spec.Resources.CPUMillis
	r.maxCPU = max(r.maxCPU, r.cpu)
	r.runs++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cpu -= spec.Resources.CPUMillis
		r.mu.Unlock()
	}()
	if r.onStart != nil {
		go r.onStart()
	}
	if r.stdout != "" {
		fmt.Fprint(spec.Stdout, r.stdout)
	} else {
		fmt.Fprintf(spec.Stdout, "hello from %s\n", spec.ContractID[:8])
	}
	if spec.InputDir != "" {
		in, err := os.ReadFile(filepath.Join(spec.InputDir, "in.txt"))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(spec.Stderr, "input: %s", in)
	}
	res := &RunResult{Reason: "exited", Usage: Usage{CPUTime: 10 * time.Millisecond, Wall: r.work}}
	select {
	case <-time.After(r.work):
	case <-ctx.Done():
		r.mu.Lock()
		r.killed++
		r.mu.Unlock()
		res.Reason, res.ExitCode = "killed", 137
		time.Sleep(r.stopDelay)
	}
	if r.finished != nil {
		r.finished <- spec.ContractID
	}
	if r.outBytes > 0 {
		spec.Output.Write(bytes.Repeat([]byte{'x'}, r.outBytes))
	} else {
		spec.Output.Write([]byte("tar bytes of /out"))
	}
	return res, nil
}

// fakePay is both sides of a payment channel: updates are "contract,total"
// and the receiver believes them. blockAfter > 0 makes Pay hang (until
// release is closed) once that many payments were made: a buyer that stops
// paying but keeps its stream open.
type fakePay struct {
	blockAfter int
	release    chan struct{}

	mu    sync.Mutex
	pays  int
	opens int
	held  map[string]int64
	// refuse, when set, may refuse an update (seller side) before it
	// is taken.
	refuse func(contractID string) error
}

func (f *fakePay) Terms() ([]byte, error) { return []byte("terms"), nil }
func (f *fakePay) AcceptOpen(ctx context.Context, buyer peer.ID, msg []byte) error {
	if string(msg) != "open" {
		return errors.New("bad open")
	}
	f.mu.Lock()
	f.opens++
	f.mu.Unlock()
	return nil
}
func (f *fakePay) AcceptUpdate(ctx context.Context, buyer peer.ID, contractID string, msg []byte) (int64, error) {
	id, n, ok := bytes.Cut(msg, []byte(","))
	if !ok || string(id) != contractID {
		return 0, errors.New("bad update")
	}
	total, k := binary.Varint(n)
	if k <= 0 {
		return 0, errors.New("bad update")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		if err := f.refuse(contractID); err != nil {
			return 0, err
		}
	}
	if f.held == nil {
		f.held = map[string]int64{}
	}
	f.held[contractID] = max(f.held[contractID], total)
	return f.held[contractID], nil
}
func (f *fakePay) Prepare(ctx context.Context, seller peer.ID, terms []byte, amount int64) ([]byte, error) {
	if string(terms) != "terms" {
		return nil, errors.New("bad terms")
	}
	return []byte("open"), nil
}
func (f *fakePay) Pay(ctx context.Context, seller peer.ID, contractID string, total int64) ([]byte, error) {
	f.mu.Lock()
	f.pays++
	block := f.blockAfter > 0 && f.pays > f.blockAfter
	f.mu.Unlock()
	if block {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return binary.AppendVarint([]byte(contractID+","), total), nil
}

// count is how many payments were asked of f (those hanging included).
func (f *fakePay) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pays
}

var (
	_ Runner          = (*fakeRunner)(nil)
	_ Payer           = (*fakePay)(nil)
	_ PaymentReceiver = (*fakePay)(nil)
)

type market struct {
	t       testing.TB
	mn      mocknet.Mocknet
	offers  []*offer.Offer
	omu     sync.Mutex
	blobs   DirBlobs
	image   string
	sellers []*Seller
}

func newMarket(t testing.TB) *market {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	m := &market{t: t, mn: mn, blobs: DirBlobs(t.TempDir())}
	dg, _, err := m.blobs.Add(bytes.NewReader([]byte("a tarball, as far as the fake runner cares")))
	if err != nil {
		t.Fatal(err)
	}
	m.image = dg
	return m
}

func (m *market) host() host.Host {
	h, err := m.mn.GenPeer()
	if err != nil {
		m.t.Fatal(err)
	}
	return h
}

func (m *market) connect() {
	if err := m.mn.LinkAll(); err != nil {
		m.t.Fatal(err)
	}
	if err := m.mn.ConnectAllButSelf(); err != nil {
		m.t.Fatal(err)
	}
}

// seller adds a seller offering capacity at coreHour msat per core-hour.
func (m *market) seller(run *fakeRunner, pay *fakePay, capacity offer.Resources, coreHour uint64, opts ...func(*SellerConfig)) (*Seller, host.Host) {
	return m.sellerOn(m.host(), run, pay, capacity, coreHour, opts...)
}

// sellerOn is seller on a host of the caller's.
func (m *market) sellerOn(h host.Host, run *fakeRunner, pay *fakePay, capacity offer.Resources, coreHour uint64, opts ...func(*SellerConfig)) (*Seller, host.Host) {
	o := &offer.Offer{Version: offer.Version, Seller: h.ID(), Resources: capacity, BillingInterval: testInterval,
		Prices: offer.Prices{CoreHour: coreHour, StartFee: 1000}, MaxDuration: time.Hour, Runtimes: []string{"runc"}, Seq: 1}
	m.omu.Lock()
	m.offers = append(m.offers, o)
	m.omu.Unlock()
	cfg := SellerConfig{Host: h, Key: h.Peerstore().PrivKey(h.ID()), Store: NewMemStore(), Runner: run, Payments: pay,
		Offer: func() *offer.Offer { return o }, Capacity: func() offer.Resources { return capacity },
		PayGrace: testInterval, WorkDir: m.t.TempDir(), AdvanceEvery: 50 * time.Millisecond,
		Timeouts: Timeouts{Start: 5 * time.Second, RunGrace: 5 * time.Second, Settle: time.Second}}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := NewSeller(cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { s.Close() })
	m.sellers = append(m.sellers, s)
	return s, h
}

func (m *market) buyer(pay Payer, opts ...func(*BuyerConfig)) (*Buyer, host.Host) {
	return m.buyerOn(m.host(), pay, opts...)
}

// buyerOn is buyer on a host of the caller's.
func (m *market) buyerOn(h host.Host, pay Payer, opts ...func(*BuyerConfig)) (*Buyer, host.Host) {
	cfg := BuyerConfig{Host: h, Key: h.Peerstore().PrivKey(h.ID()), Store: NewMemStore(), Payer: pay,
		PaymentKey: bytes.Repeat([]byte{2}, 33), Blobs: m.blobs, ResultDir: m.t.TempDir(),
		Find: func(ctx context.Context, f offer.Filter) ([]*offer.Offer, error) {
			m.omu.Lock()
			defer m.omu.Unlock()
			return append([]*offer.Offer(nil), m.offers...), nil
		},
		HeartbeatGrace: 3 * testInterval, Rounds: 200, RetryBackoff: 20 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	b, err := NewBuyer(cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { b.Close() })
	return b, h
}

// withInput stores data in the buyer's blobs and gives req it as its one
// input, in.txt (the fake job echoes it to stderr).
func (m *market) withInput(t *testing.T, req *Request, data []byte) {
	t.Helper()
	dg, n, err := m.blobs.Add(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Inputs = []Input{{Name: "in.txt", SHA256: dg, Size: uint64(n)}}
}

func (m *market) request(intervals int) Request {
	return Request{Image: m.image, Command: []string{"sh", "-c", "echo hello"},
		Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 256 << 20}, Duration: time.Duration(intervals) * testInterval}
}

func waitJob(t *testing.T, b *Buyer, id string) *JobStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := b.Wait(ctx, id)
	if err != nil {
		j, _ := b.Job(id)
		t.Fatalf("job %s did not end: %v: %+v", id, err, j)
	}
	return j
}

// eventually polls cond; the long limit only catches hangs, it asserts no
// timing.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never happened: %s", what)
}

func TestNormalRun(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: 5 * testInterval / 2}
	pay := &fakePay{}
	s, _ := m.seller(run, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	req := m.request(10)
	m.withInput(t, &req, []byte("input data"))
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if stderr, _ := os.ReadFile(filepath.Join(j.ResultDir, OutputStderr)); string(stderr) != "input: input data" {
		t.Fatalf("stderr %q: the input did not arrive; job %+v", stderr, j)
	}
	if j.State != JobDone || j.Receipt == nil {
		t.Fatalf("job %+v", j)
	}
	rc := j.Receipt
	// 2.5 intervals of work: three intervals started and paid for.
	p := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	if rc.Intervals != 3 || rc.Billed != p.Owed(3) || j.Paid != p.Owed(3) || rc.Reason != "exited" {
		t.Fatalf("receipt: intervals %d billed %d paid %d reason %s; want 3, %d", rc.Intervals, rc.Billed, j.Paid, rc.Reason, p.Owed(3))
	}
	out, err := os.ReadFile(filepath.Join(j.ResultDir, OutputTar))
	if err != nil || string(out) != "tar bytes of /out" {
		t.Fatalf("out.tar: %q %v", out, err)
	}
	env, _ := os.ReadFile(filepath.Join(j.ResultDir, "receipt"))
	if _, err := OpenReceipt(env, time.Now()); err != nil {
		t.Fatalf("saved receipt: %v", err)
	}
	br, _ := b.Machine().Get(RoleBuyer, j.ContractID)
	sr, _ := s.Machine().Get(RoleSeller, j.ContractID)
	if br.State != StateSettled || sr.State != StateSettled || sr.Paid != rc.Billed {
		t.Fatalf("buyer %s, seller %s paid %d", br.State, sr.State, sr.Paid)
	}
	if h := s.Held(); h.MilliCPU != 0 {
		t.Fatalf("still held after the contract: %+v", h)
	}
}

func TestSellerDisappearsBuyerRetries(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	var hostA host.Host
	var once sync.Once
	runA := &fakeRunner{work: time.Hour}
	runA.onStart = func() {
		// After a bit more than one interval delivered, seller A vanishes.
		time.Sleep(testInterval + testInterval/2)
		once.Do(func() { hostA.Close() })
	}
	_, hostA = m.seller(runA, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000) // cheaper: tried first
	runB := &fakeRunner{work: testInterval / 2}
	m.seller(runB, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 2_000_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	req := m.request(10)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || len(j.Attempts) != 2 || j.Attempts[0].Seller != hostA.ID() {
		t.Fatalf("job %+v", j)
	}
	first := j.Attempts[0]
	pa := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	// A delivered at most two intervals' heartbeats before vanishing; the
	// buyer paid at most one interval ahead of what was delivered.
	if first.State != StateFailed && first.State != StateRefunded || first.Paid > pa.Owed(3) || first.Paid < pa.Owed(1) {
		t.Fatalf("first attempt %+v, owed(3) = %d", first, pa.Owed(3))
	}
	if j.Receipt.Seller == hostA.ID() || j.Receipt.Reason != "exited" {
		t.Fatalf("final receipt from %s: %+v", j.Receipt.Seller, j.Receipt)
	}
}

// TestStartedIntervalCollected: an interval that started while its payment
// was within the grace is owed even when the job ends before the payment
// arrives (its beat queued behind the outputs on a slow uplink, say): the
// seller's bill asks for it and takes the buyer's late payment, so both
// sides agree on what the contract cost. The late payment was lost before:
// the buyer had signed one interval more than the seller held.
func TestStartedIntervalCollected(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: 5 * testInterval / 2, finished: make(chan string, 1)}
	s, _ := m.seller(run, &fakePay{}, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	// The buyer's third payment (the third interval's) waits until the
	// job has ended.
	bpay := &fakePay{blockAfter: 2, release: make(chan struct{})}
	b, _ := m.buyer(bpay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(10))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-run.finished:
	case <-time.After(time.Minute):
		t.Fatal("the job never ended")
	}
	close(bpay.release)
	j := waitJob(t, b, id)
	sr, err := s.Machine().Get(RoleSeller, j.ContractID)
	if err != nil || j.Receipt == nil {
		t.Fatalf("job %+v: %v", j, err)
	}
	p, rc := sr.Proposal, j.Receipt
	if rc.Intervals != 3 || rc.Billed != p.Owed(3) || sr.Paid != p.Owed(3) || j.Paid != p.Owed(3) {
		t.Fatalf("receipt: %d intervals billed %d; seller holds %d, buyer paid %d; want 3 intervals, %d each",
			rc.Intervals, rc.Billed, sr.Paid, j.Paid, p.Owed(3))
	}
}

// TestBuyerCatchesUp: a buyer whose payments stalled for several
// intervals (a loaded machine, a daemon back from a restart) pays them one
// after another once it can: each payment is answered at once by a beat
// asking for the next, so it catches up within the seller's grace instead
// of one interval a tick (never, as its debt grows as fast) and the job
// runs to its end.
func TestBuyerCatchesUp(t *testing.T) {
	m := newMarket(t)
	// The job outlasts the seller's grace (5 s), so a buyer that never
	// catches up is stopped unpaid; the grace is wide enough for a loaded
	// machine's stalls.
	run := &fakeRunner{work: 50 * testInterval}
	s, _ := m.seller(run, &fakePay{}, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, calmSeller)
	bpay := &fakePay{blockAfter: 2, release: make(chan struct{})}
	b, _ := m.buyer(bpay, calmBuyer)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(100))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the buyer's payments stalled", func() bool { return bpay.count() > 2 })
	time.Sleep(4 * testInterval) // three intervals more unpaid
	close(bpay.release)
	j := waitJob(t, b, id)
	sr, err := s.Machine().Get(RoleSeller, j.ContractID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != JobDone || j.Receipt == nil || j.Receipt.Reason != "exited" {
		t.Fatalf("job %s (%s); the seller's contract %s (%s), paid %d", j.State, j.Error, sr.State, sr.Why, sr.Paid)
	}
}

func TestBuyerStopsPayingSellerStops(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: time.Hour}
	spay := &fakePay{}
	s, _ := m.seller(run, spay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	bpay := &fakePay{blockAfter: 2, release: make(chan struct{})}
	b, _ := m.buyer(bpay)
	m.connect()
	req := m.request(50)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var contract string
	eventually(t, "seller stops the unpaid job", func() bool {
		recs, _ := s.Machine().List(RoleSeller)
		for _, r := range recs {
			if r.State == StateFailed || r.State == StateSettled {
				contract = r.ID
				return true
			}
		}
		return false
	})
	close(bpay.release)
	sr, _ := s.Machine().Get(RoleSeller, contract)
	rc, err := OpenReceipt(sr.Receipt, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := sr.Proposal
	if rc.Reason != "unpaid" || rc.Intervals != 2 || rc.Billed != p.Owed(2) || sr.Paid != p.Owed(2) {
		t.Fatalf("receipt %+v, paid %d, want 2 intervals, %d", rc, sr.Paid, p.Owed(2))
	}
	run.mu.Lock()
	killed := run.killed
	run.mu.Unlock()
	if killed != 1 {
		t.Fatalf("job killed %d times", killed)
	}
	j := waitJob(t, b, id)
	if j.Receipt == nil || j.Receipt.Reason != "unpaid" {
		t.Fatalf("buyer's job %+v", j)
	}
	if h := s.Held(); h.MilliCPU != 0 {
		t.Fatalf("still held: %+v", h)
	}
}

func TestCancel(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: time.Hour}
	pay := &fakePay{}
	m.seller(run, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(50))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "job running", func() bool { j, _ := b.Job(id); return j.State == JobRunning })
	if err := b.Cancel(id); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobCancelled || j.Receipt == nil || j.Receipt.Reason != "cancelled" {
		t.Fatalf("cancelled job %+v", j)
	}
}

// TestCancelSlowStop: a job cancelled by its buyer whose sandbox takes
// several intervals (beyond the payment grace) to stop ends "cancelled" on
// both sides and settles: the seller asks no payment for the intervals
// that begin while it stops, and does not call the stop unpaid.
func TestCancelSlowStop(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: time.Hour, stopDelay: 8 * testInterval}
	pay := &fakePay{}
	s, _ := m.seller(run, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(50))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "job running", func() bool { j, _ := b.Job(id); return j.State == JobRunning && j.Intervals >= 2 })
	if err := b.Cancel(id); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobCancelled || j.Receipt == nil || j.Receipt.Reason != "cancelled" {
		t.Fatalf("cancelled job %+v", j)
	}
	recs, _ := s.Machine().List(RoleSeller)
	if len(recs) != 1 || recs[0].State != StateSettled || recs[0].Why != "paid in full" {
		t.Fatalf("seller's records: %+v", recs)
	}
	if r := recs[0]; r.History[len(r.History)-2].Why != "cancelled" {
		t.Fatalf("seller's contract ended %+v", r.History)
	}
}

// TestCancelWhilePaying: the user cancels while the buyer's payment waits
// (on the channel's lock, its write): the payment gives up, and the seller
// is still told of the cancel, ends the job "cancelled" and settles, rather
// than waiting out its grace and calling the buyer's silence unpaid.
func TestCancelWhilePaying(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: time.Hour}
	s, _ := m.seller(run, &fakePay{}, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	bpay := &fakePay{blockAfter: 2, release: make(chan struct{})} // never released
	b, _ := m.buyer(bpay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(50))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the buyer's third payment waiting", func() bool { return bpay.count() > 2 })
	if err := b.Cancel(id); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobCancelled || j.Receipt == nil || j.Receipt.Reason != "cancelled" {
		t.Fatalf("job %s (%s), receipt %+v", j.State, j.Error, j.Receipt)
	}
	recs, _ := s.Machine().List(RoleSeller)
	if len(recs) != 1 || recs[0].State != StateSettled || recs[0].History[len(recs[0].History)-2].Why != "cancelled" {
		t.Fatalf("seller's records: %+v", recs)
	}
}

func TestConcurrentBuyersNoOverselling(t *testing.T) {
	m := newMarket(t)
	run := &fakeRunner{work: testInterval}
	pay := &fakePay{}
	capacity := offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}
	s, _ := m.seller(run, pay, capacity, 3_600_000_000)
	const n = 20
	buyers := make([]*Buyer, n)
	for i := range buyers {
		buyers[i], _ = m.buyer(pay)
	}
	m.connect()
	ids := make([]string, n)
	var wg sync.WaitGroup
	var refusedOnce atomic.Int32
	for i := range buyers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id, err := buyers[i].Submit(context.Background(), m.request(5))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = id
			j := waitJob(t, buyers[i], id)
			if j.State != JobDone {
				t.Errorf("buyer %d: %+v", i, j)
			}
			if len(j.Attempts) > 0 {
				refusedOnce.Add(0)
			}
		}(i)
	}
	wg.Wait()
	if t.Failed() {
		recs, _ := s.Machine().List(RoleSeller)
		for _, r := range recs {
			t.Logf("seller record %s %s why=%s paid=%d hist=%v", r.ID[:8], r.State, r.Why, r.Paid, r.History)
		}
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if run.maxCPU > capacity.CPUMillis || run.runs != n {
		t.Fatalf("ran %d jobs holding at most %d millicores of %d", run.runs, run.maxCPU, capacity.CPUMillis)
	}
	if s.Rejections()[ReasonCapacity] == 0 {
		t.Fatalf("20 one-core jobs on 4 cores were never refused for capacity")
	}
	if h := s.Held(); h.MilliCPU != 0 {
		t.Fatalf("still held: %+v", h)
	}
}

// TestJobStreamRefusals: a job stream must carry a contract this seller
// accepted with this buyer, still waiting to be funded.
func TestJobStreamRefusals(t *testing.T) {
	m := newMarket(t)
	s, sh := m.seller(&fakeRunner{}, &fakePay{}, offer.Resources{CPUMillis: 2000, MemoryBytes: 2 << 30}, 3_600_000_000)
	bh, other := m.host(), m.host()
	m.connect()
	bkey := bh.Peerstore().PrivKey(bh.ID())
	req := m.request(5)
	tm := TermsFor(m.offers[0], &req)
	now := time.Now()
	p := &Proposal{Version: Version, Buyer: bh.ID(), Seller: sh.ID(), Request: req, Interval: tm.Interval, Price: tm.Price,
		StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33), Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute)}
	penv, _ := SignProposal(p, bkey)
	denv, err := s.Decide(context.Background(), bh.ID(), penv)
	if err != nil {
		t.Fatal(err)
	}
	ct := (&Contract{ProposalEnv: penv, AcceptanceEnv: denv}).Marshal()
	// A decision the seller never made, signed by the buyer itself.
	fake := &Decision{Version: Version, ProposalID: p.ID(), Seller: bh.ID(), Buyer: bh.ID(), Verdict: Accept, FundBy: now.Add(time.Minute), Issued: now, Expiry: now.Add(time.Minute)}
	fenv, _ := SignDecision(fake, bkey)
	tests := []struct {
		name  string
		from  host.Host
		hello []byte
	}{
		{"garbage", bh, []byte("junk")},
		{"forged acceptance", bh, (&Contract{ProposalEnv: penv, AcceptanceEnv: fenv}).Marshal()},
		{"another buyer", other, ct},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tc.from.NewStream(context.Background(), sh.ID(), JobProtocol)
			if err != nil {
				t.Fatal(err)
			}
			c := newConn(st)
			c.send(jHello, tc.hello)
			c.send(jOpen, []byte("open"))
			if _, err := c.expect(jReady, maxCtlFrame); err == nil {
				t.Fatal("seller accepted the stream")
			}
			st.Reset()
		})
	}
	if r, _ := s.Machine().Get(RoleSeller, p.ID()); r.State != StateAccepted {
		t.Fatalf("refused streams moved the contract to %s", r.State)
	}
}

// stuckClock never ticks: a seller whose job runs but whose heartbeats
// never come.
type stuckClock struct{}

func (stuckClock) Now() time.Time                       { return time.Now() }
func (stuckClock) After(time.Duration) <-chan time.Time { return nil }

// TestMissedHeartbeatStopsPayments: the buyer pays one interval in
// advance, hears nothing, stops paying and moves on; the silent seller got
// only that interval.
func TestMissedHeartbeatStopsPayments(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	_, ha := m.seller(&fakeRunner{work: time.Hour}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000,
		func(c *SellerConfig) { c.Clock = stuckClock{} })
	m.seller(&fakeRunner{work: testInterval / 2}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 2_000_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	req := m.request(20)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || len(j.Attempts) != 2 || j.Attempts[0].Seller != ha.ID() {
		t.Fatalf("job %+v", j)
	}
	pa := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	if j.Attempts[0].Paid != pa.Owed(1) {
		t.Fatalf("silent seller was paid %d, want one interval in advance (%d)", j.Attempts[0].Paid, pa.Owed(1))
	}
}

// TestBuyerRestart: a job the buyer was running when it stopped is marked
// failed at the next start, and its contract too.
func TestBuyerRestart(t *testing.T) {
	m := newMarket(t)
	store := NewMemStore()
	h := m.host()
	mk := func() *Buyer {
		b, err := NewBuyer(BuyerConfig{Host: h, Key: h.Peerstore().PrivKey(h.ID()), Store: store, Payer: &fakePay{},
			PaymentKey: bytes.Repeat([]byte{2}, 33), ResultDir: t.TempDir(),
			Find: func(context.Context, offer.Filter) ([]*offer.Offer, error) { return nil, nil }})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := mk()
	_ = b.save(&JobStatus{ID: "j1", State: JobRunning, ContractID: "c1"})
	if err := b.machine.Create(&Record{ID: "c1", Role: RoleBuyer, State: StateRunning, Paid: 5, Proposal: &Proposal{Request: Request{Duration: time.Hour}}}); err != nil {
		t.Fatal(err)
	}
	b2 := mk()
	if err := b2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, err := b2.Job("j1")
	if err != nil || j.State != JobFailed {
		t.Fatalf("job after restart: %+v %v", j, err)
	}
	if r, _ := b2.Machine().Get(RoleBuyer, "c1"); r.State != StateFailed || r.Paid != 5 {
		t.Fatalf("contract after restart: %s paid %d", r.State, r.Paid)
	}
}

// TestSellerShutdownMidJob: a seller that shuts down kills its job, sends
// the receipt for what it delivered and is paid for that; the buyer takes
// the job elsewhere. Each contract is reported to the reputation book
// once: the killed one as the seller's failure, the other as delivered
// (issue 9, bug 7: it was recorded as a success and then a failure). A
// seller started again over the same store finds nothing left running.
func TestSellerShutdownMidJob(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	var sa *Seller
	var once sync.Once
	runA := &fakeRunner{work: time.Hour}
	runA.onStart = func() {
		time.Sleep(testInterval + testInterval/2)
		once.Do(func() { sa.Close() })
	}
	sa, ha := m.seller(runA, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000)
	_, hb := m.seller(&fakeRunner{work: testInterval / 2}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 2_000_000_000)
	rep := &recRep{}
	b, _ := m.buyer(pay, func(c *BuyerConfig) { c.Reputation = rep })
	m.connect()
	req := m.request(20)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || len(j.Attempts) != 2 || j.Attempts[0].Seller != ha.ID() || j.Attempts[0].State != StateSettled {
		t.Fatalf("job %+v", j)
	}
	want := []recOutcome{{ha.ID(), j.Attempts[0].ContractID, FaultSeller}, {hb.ID(), j.Attempts[1].ContractID, FaultNone}}
	if got := rep.outcomes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	recs, _ := sa.Machine().List(RoleSeller)
	if len(recs) != 1 || recs[0].State != StateSettled || recs[0].Paid != j.Attempts[0].Paid {
		t.Fatalf("seller A's record %+v", recs[0])
	}
	rc, _ := OpenReceipt(recs[0].Receipt, time.Now())
	if rc.Reason != "killed" || rc.Billed != recs[0].Paid {
		t.Fatalf("seller A's receipt %+v", rc)
	}
	again, err := NewSeller(sa.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if h := again.Held(); h.MilliCPU != 0 {
		t.Fatalf("restarted seller holds %+v", h)
	}
}

// TestCounterThenAccept: the buyer read a stale, cheaper offer; the seller
// counters with its price, which is within the buyer's budget, and the
// second proposal is accepted.
func TestCounterThenAccept(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	m.seller(&fakeRunner{work: testInterval / 2}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	stale := *m.offers[0]
	stale.Prices.CoreHour /= 2
	m.offers[0] = &stale
	b, _ := m.buyer(pay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(5))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || len(j.Attempts) != 1 {
		t.Fatalf("job %+v", j)
	}
	recs, _ := b.Machine().List(RoleBuyer)
	var states []State
	for _, r := range recs {
		states = append(states, r.State)
	}
	if len(recs) != 2 {
		t.Fatalf("buyer contracts %v, want a countered one and a settled one", states)
	}
}

// TestDurationEnforced: a job that outlives its contract is stopped when
// the last paid interval ends, and billed for exactly the contract.
func TestDurationEnforced(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	m.seller(&fakeRunner{work: time.Hour}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	req := m.request(2)
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	p := &Proposal{Request: req, Interval: testInterval, Price: TermsFor(m.offers[0], &req).Price, StartFee: 1000}
	if j.State != JobDone || j.Receipt.Reason != "timeout" || j.Receipt.Intervals != 2 || j.Paid != p.Total() {
		t.Fatalf("job %+v receipt %+v", j, j.Receipt)
	}
}

// TestWaitChange: a buyer's WaitChange answers each change of a job once,
// in order (every answer newer than the one before), until the job ends,
// and a finished wait answers the job as it is.
func TestWaitChange(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	m.seller(&fakeRunner{work: testInterval}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000)
	b, _ := m.buyer(pay)
	m.connect()
	id, err := b.Submit(context.Background(), m.request(50))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	j, err := b.WaitChange(ctx, id, time.Now().Add(time.Hour))
	if err != nil || j.ID != id {
		t.Fatalf("a finished wait: %+v %v", j, err)
	}
	var since time.Time
	var seen []string
	for {
		j, err := b.WaitChange(context.Background(), id, since)
		if err != nil {
			t.Fatal(err)
		}
		if !j.Updated.After(since) {
			t.Fatalf("answered unchanged: updated %s, asked after %s", j.Updated, since)
		}
		since = j.Updated
		seen = append(seen, string(j.State)+"/"+j.Phase)
		if j.State == JobDone || j.State == JobFailed || j.State == JobCancelled {
			break
		}
	}
	// Every change, in order, however short: the phases are not skipped.
	want := []string{"searching/discover", "searching/negotiate", "searching/fund", "searching/transfer", "running/run", "running/results", "done/"}
	if got := slices.Compact(slices.Clone(seen)); !slices.Equal(got, want) {
		t.Errorf("changes seen: %v, want %v", seen, want)
	}
	if _, err := b.WaitChange(context.Background(), "nosuchjob", since); !errors.Is(err, ErrNotFound) {
		t.Errorf("no such job: %v", err)
	}
}
