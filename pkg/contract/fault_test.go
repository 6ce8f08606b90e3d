package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// recRep is a Reputation that records every outcome it is told.
type recRep struct {
	mu      sync.Mutex
	got     []recOutcome
	blocked map[peer.ID]bool
}

type recOutcome struct {
	seller   peer.ID
	contract string
	fault    Fault
}

func (r *recRep) Score(peer.ID) (float64, float64) { return 0.5, 0 }
func (r *recRep) Outcome(p peer.ID, id string, f Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, recOutcome{p, id, f})
}
func (r *recRep) Blocked(p peer.ID) bool { return r.blocked[p] }

func (r *recRep) outcomes() []recOutcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recOutcome(nil), r.got...)
}

// badImageRunner refuses every image as the sandbox refuses a file that
// is not an image tarball.
type badImageRunner struct{ fakeRunner }

func (r *badImageRunner) ImportImage(ctx context.Context, rd io.Reader, digest string) (string, error) {
	_, _ = io.Copy(io.Discard, rd)
	return "", fmt.Errorf("import: %w: not a valid tar archive", ErrBadImage)
}

// TestBadImageIsTheBuyersFault: a seller refuses the buyer's image. The
// refusal's reason reaches the buyer (not a stream reset), the buyer paid
// nothing, tried no other seller (they would all refuse it) and the book
// is told the fault was the buyer's (issue 9, bug 8b).
func TestBadImageIsTheBuyersFault(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	bad := func(c *SellerConfig) { c.Runner = &badImageRunner{} }
	_, ha := m.seller(&fakeRunner{}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000, bad)
	m.seller(&fakeRunner{}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 2_000_000_000, bad)
	rep := &recRep{}
	b, _ := m.buyer(pay, func(c *BuyerConfig) { c.Reputation = rep })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(5))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobFailed || len(j.Attempts) != 1 || j.Paid != 0 || j.Attempts[0].Paid != 0 {
		t.Fatalf("job %s paid %d after %d attempts: %+v", j.State, j.Paid, len(j.Attempts), j.Attempts)
	}
	if !strings.Contains(j.Error, "bad_image") || !strings.Contains(j.Error, "not a valid tar archive") {
		t.Fatalf("job error %q does not carry the seller's reason", j.Error)
	}
	if got := rep.outcomes(); len(got) != 1 || got[0].seller != ha.ID() || got[0].fault != FaultBuyer {
		t.Fatalf("outcomes %v; want one, the buyer's fault", got)
	}
	pay.mu.Lock()
	pays := pay.pays
	pay.mu.Unlock()
	if pays != 0 {
		t.Fatalf("the buyer signed %d payments for an image the seller refused", pays)
	}
}

// brokePayer cannot fund a channel: an empty wallet.
type brokePayer struct{ fakePay }

func (*brokePayer) Prepare(context.Context, peer.ID, []byte, int64) ([]byte, error) {
	return nil, errors.New("fund channel: insufficient funds: 0 sat spendable")
}

// TestEmptyWalletIsTheBuyersFault: the buyer cannot fund the channel; the
// job fails at once with that error, no other seller is tried, and the
// seller is not blamed.
func TestEmptyWalletIsTheBuyersFault(t *testing.T) {
	m := newMarket(t)
	spay := &fakePay{}
	m.seller(&fakeRunner{work: testInterval}, spay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000)
	m.seller(&fakeRunner{work: testInterval}, spay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 2_000_000_000)
	rep := &recRep{}
	b, _ := m.buyer(&brokePayer{}, func(c *BuyerConfig) { c.Reputation = rep })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(5))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobFailed || len(j.Attempts) != 1 || !strings.Contains(j.Error, "insufficient funds") {
		t.Fatalf("job %s after %d attempts: %q", j.State, len(j.Attempts), j.Error)
	}
	if got := rep.outcomes(); len(got) != 1 || got[0].fault != FaultBuyer {
		t.Fatalf("outcomes %v; want one, the buyer's fault", got)
	}
}

// TestMaxPriceAcrossAttempts: the job's max price is what all its attempts
// together may cost (issue 9, bug 3). A seller vanishes mid-job after
// being paid for a few intervals; with a budget that no longer covers a
// whole contract elsewhere the job fails without spending more, and with
// one that does, the retry is offered only what is left.
func TestMaxPriceAcrossAttempts(t *testing.T) {
	run := func(t *testing.T, extra int64) (*JobStatus, *Proposal, []*Seller, host.Host) {
		m := newMarket(t)
		pay := &fakePay{}
		var hostA host.Host
		var once sync.Once
		runA := &fakeRunner{work: time.Hour}
		runA.onStart = func() {
			time.Sleep(2*testInterval + testInterval/2)
			once.Do(func() { hostA.Close() })
		}
		// A is cheaper: tried first.
		_, hostA = m.seller(runA, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 900_000_000)
		m.seller(&fakeRunner{work: testInterval / 2}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000)
		b, _ := m.buyer(pay)
		m.connect()
		req := m.request(10)
		full := TermsFor(m.offers[1], &req).Total
		req.MaxPrice = uint64(full + extra)
		id, err := b.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		j := waitJob(t, b, id)
		if len(j.Attempts) == 0 || j.Attempts[0].Seller != hostA.ID() {
			t.Fatalf("job %+v", j)
		}
		if j.Paid > int64(req.MaxPrice) || j.Paid != j.Attempts[0].Paid+func() int64 {
			if len(j.Attempts) > 1 {
				return j.Attempts[1].Paid
			}
			return 0
		}() {
			t.Fatalf("paid %d against a max price of %d (a contract costs %d): attempts %+v", j.Paid, req.MaxPrice, full, j.Attempts)
		}
		return j, &Proposal{Request: req}, m.sellers, hostA
	}
	t.Run("budget spent", func(t *testing.T) {
		t.Parallel() // each runs its own market
		// A is paid for three intervals or so: more than 50 sat.
		j, p, _, _ := run(t, 50)
		if j.State != JobFailed || len(j.Attempts) != 1 || !strings.Contains(j.Error, "left of its max price") {
			t.Fatalf("job %s after %d attempts, paid %d of %d: %q", j.State, len(j.Attempts), j.Paid, p.Request.MaxPrice, j.Error)
		}
	})
	t.Run("retry within what is left", func(t *testing.T) {
		t.Parallel()
		j, p, sellers, _ := run(t, 1_000_000)
		if j.State != JobDone || len(j.Attempts) != 2 {
			t.Fatalf("job %s after %d attempts: %q", j.State, len(j.Attempts), j.Error)
		}
		rec, err := sellers[1].Machine().Get(RoleSeller, j.Attempts[1].ContractID)
		if err != nil {
			t.Fatal(err)
		}
		if left := p.Request.MaxPrice - uint64(j.Attempts[0].Paid); rec.Proposal.Request.MaxPrice != left {
			t.Fatalf("the retry was offered %d sat; %d were left of %d", rec.Proposal.Request.MaxPrice, left, p.Request.MaxPrice)
		}
	})
}

// TestBlockedSellersNamed: when every seller on offer is blocked, the job's
// error says so and how to lift it, instead of "no offer matches" alone.
func TestBlockedSellersNamed(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	_, ha := m.seller(&fakeRunner{work: testInterval}, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 1_000_000_000)
	rep := &recRep{blocked: map[peer.ID]bool{ha.ID(): true}}
	b, _ := m.buyer(pay, func(c *BuyerConfig) { c.Reputation = rep; c.Rounds = 2 })
	m.connect()
	id, err := b.Submit(context.Background(), m.request(5))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobFailed || !strings.Contains(j.Error, "skipped 1 seller(s) you have blocked: "+ha.ID().String()) ||
		!strings.Contains(j.Error, "blackbox reputation forget PEER") {
		t.Fatalf("job %s: %q", j.State, j.Error)
	}
}

func TestFaultOf(t *testing.T) {
	base := errors.New("boom")
	for _, tc := range []struct {
		err  error
		want Fault
	}{
		{nil, FaultNone},
		{base, FaultSeller},
		{buyerFault(base), FaultBuyer},
		{fmt.Errorf("wrapped: %w", sellerGone(base)), FaultSellerGone},
		{sellerFault(buyerFault(base)), FaultBuyer}, // the innermost mark wins
		{errCancelled, FaultCancelled},
		{withFault((&JobError{Reason: RefusePull}).Reason.Fault(), base), FaultUnreachable},
	} {
		if got := FaultOf(tc.err); got != tc.want {
			t.Errorf("FaultOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	for f := FaultNone; f <= FaultCancelled; f++ {
		b, err := json.Marshal(f)
		var back Fault
		if err != nil || json.Unmarshal(b, &back) != nil || back != f || string(b) != `"`+f.String()+`"` {
			t.Errorf("fault %d as JSON: %s %v", f, b, err)
		}
	}
	if err := buyerFault(base); !errors.Is(err, ErrBuyerFault) || errors.Is(err, ErrSellerFault) || !errors.Is(err, base) || err.Error() != "boom" {
		t.Errorf("buyerFault: Is and Error do not hold: %v", err)
	}
}

func TestJobErrorRoundTrip(t *testing.T) {
	in := &JobError{Reason: RefuseBadImage, Message: "import image sha256:ab: bad image: not a valid tar archive"}
	if got := UnmarshalJobError(marshalJobError(in)); !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip %+v, want %+v", got, in)
	}
	// An older seller's plain text, and a newer seller's unknown reason.
	if got := UnmarshalJobError([]byte("accept channel: no such tx")); got.Reason != RefuseUnknown || got.Message != "accept channel: no such tx" || got.Reason.Fault() != FaultSeller {
		t.Fatalf("plain text: %+v", got)
	}
	if got := UnmarshalJobError(marshalJobError(&JobError{Reason: "weather", Message: "rain\x1b[2J"})); got.Reason != RefuseUnknown || got.Message != "rain?[2J" {
		t.Fatalf("unknown reason: %+v", got)
	}
}

// TestJobErrorHeld: a payment refusal carries the update the seller holds
// (field 4); a field this buyer does not know is ignored, not taken for an
// unknown refusal (which would blame the seller); a held update over its
// cap makes the frame unknown.
func TestJobErrorHeld(t *testing.T) {
	in := &JobError{Reason: RefusePayment, Message: "stale update", Held: []byte{1, 2, 3}}
	b := marshalJobError(in)
	if got := UnmarshalJobError(b); !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip %+v, want %+v", got, in)
	}
	var w enc
	w.Bytes(9, []byte("a newer seller's field"))
	if got := UnmarshalJobError(append(bytes.Clone(b), w.B...)); !reflect.DeepEqual(got, in) || got.Reason.Fault() != FaultBuyer {
		t.Fatalf("with an unknown field: %+v", got)
	}
	var big enc
	big.String(jeReason, string(RefusePayment))
	big.Bytes(jeHeld, make([]byte, maxJobErrorHeld+1))
	if got := UnmarshalJobError(big.B); got.Reason != RefuseUnknown || got.Held != nil {
		t.Fatalf("oversized held update: %+v", got)
	}
}

func FuzzJobError(f *testing.F) {
	f.Add(marshalJobError(&JobError{Reason: RefusePayment, Message: "stale update", Held: bytes.Repeat([]byte{1}, 200)}))
	f.Add(marshalJobError(&JobError{Reason: RefuseChannel, Message: "channel closing", Closing: []byte{1, 0, 0, 0, 1, 2, 3}}))
	f.Add(marshalJobError(&JobError{Reason: RefuseBadImage, Message: "bad image"}))
	f.Add([]byte("plain text"))
	f.Add([]byte{0x0a, 0xff, 0x01})
	f.Add(bytes.Repeat([]byte{0x12, 0x01, 'x'}, 400))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := UnmarshalJobError(b)
		if e == nil || e.Reason == "" || len(e.Message) > maxJobErrorText || !knownJobReason(e.Reason) && e.Reason != RefuseUnknown || len(e.Held) > maxJobErrorHeld {
			t.Fatalf("UnmarshalJobError(%q) = %+v", b, e)
		}
		for _, r := range e.Message {
			if r < 0x20 && r != '\t' || r == 0x7f {
				t.Fatalf("control character in %q", e.Message)
			}
		}
		if again := UnmarshalJobError(marshalJobError(e)); e.Reason != RefuseUnknown && !reflect.DeepEqual(again, e) {
			t.Fatalf("re-encoded %+v as %+v", e, again)
		}
	})
}

// TestSubmitChecksImageAndInputs: Submit refuses, before anything else, an
// image its CheckImage fails and an input missing from the blob store.
func TestSubmitChecksImageAndInputs(t *testing.T) {
	m := newMarket(t)
	notImage := errors.New("bad image: not a valid tar archive")
	b, _ := m.buyer(&fakePay{}, func(c *BuyerConfig) {
		c.CheckImage = func(r io.Reader) error {
			if b, _ := io.ReadAll(r); bytes.HasPrefix(b, []byte("a tarball")) {
				return nil
			}
			return notImage
		}
	})
	req := m.request(5)
	if _, err := b.Submit(context.Background(), req); err != nil {
		t.Fatalf("a good image: %v", err)
	}
	bad, _, err := m.blobs.Add(strings.NewReader("not an image"))
	if err != nil {
		t.Fatal(err)
	}
	r := req
	r.Image = bad
	if _, err := b.Submit(context.Background(), r); !errors.Is(err, notImage) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("a bad image: %v", err)
	}
	r = req
	r.Inputs = []Input{{Name: "x", SHA256: "sha256:" + strings.Repeat("ab", 32), Size: 3}}
	if _, err := b.Submit(context.Background(), r); err == nil || !strings.Contains(err.Error(), "input x") {
		t.Fatalf("a missing input: %v", err)
	}
	jobs, _ := b.Jobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs; the refused submits made some", len(jobs))
	}
}
