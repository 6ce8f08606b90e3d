package contract

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

func TestChangeLog(t *testing.T) {
	var c changeLog
	steps := []struct {
		key, value string
		want       slog.Level
	}{
		{"a", "busy", slog.LevelInfo},
		{"a", "busy", slog.LevelDebug},
		{"a", "busy", slog.LevelDebug},
		{"b", "busy", slog.LevelInfo},  // another peer
		{"a", "price", slog.LevelInfo}, // the reason changed
		{"a", "price", slog.LevelDebug},
		{"a", "busy", slog.LevelInfo}, // and back
	}
	for i, s := range steps {
		if got := c.level(s.key, s.value); got != s.want {
			t.Errorf("step %d %s=%s: %s, want %s", i, s.key, s.value, got, s.want)
		}
	}
	c.forget("a")
	if got := c.level("a", "busy"); got != slog.LevelInfo {
		t.Errorf("after forget: %s, want INFO", got)
	}
	for i := range maxChangeKeys + 10 {
		c.level(strings.Repeat("k", i%7)+string(rune(i)), "x")
	}
	if len(c.last) > maxChangeKeys {
		t.Errorf("%d keys kept, want at most %d", len(c.last), maxChangeKeys)
	}
}

// logRecorder is a slog.Handler that keeps every record with the
// attributes its logger was given, and fails the test on a key that a
// line holds twice.
type logRecorder struct {
	t     *testing.T
	mu    *sync.Mutex
	lines *[]logLine
	attrs []slog.Attr
}

type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogRecorder(t *testing.T) (*slog.Logger, func() []logLine) {
	r := &logRecorder{t: t, mu: &sync.Mutex{}, lines: &[]logLine{}}
	return slog.New(r), func() []logLine {
		r.mu.Lock()
		defer r.mu.Unlock()
		return append([]logLine(nil), (*r.lines)...)
	}
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	l := logLine{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	add := func(a slog.Attr) {
		if _, dup := l.attrs[a.Key]; dup {
			r.t.Errorf("log line %q has the key %q twice", rec.Message, a.Key)
		}
		l.attrs[a.Key] = a.Value.String()
	}
	for _, a := range r.attrs {
		add(a)
	}
	rec.Attrs(func(a slog.Attr) bool { add(a); return true })
	r.mu.Lock()
	*r.lines = append(*r.lines, l)
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(append([]slog.Attr(nil), r.attrs...), as...)
	return &c
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

func count(lines []logLine, msg string, lvl slog.Level) int {
	n := 0
	for _, l := range lines {
		if l.msg == msg && l.level == lvl {
			n++
		}
	}
	return n
}

// TestBusySellerRefusalsLoggedOnce: a buyer whose job finds the only
// seller busy retries it every round; the seller logs its refusal, and the
// buyer the refused attempt, at info once per reason and at debug after,
// and no line names a key twice (role was in both the engine's and the
// state machine's attributes).
func TestBusySellerRefusalsLoggedOnce(t *testing.T) {
	m := newMarket(t)
	sellerLog, sellerLines := newLogRecorder(t)
	buyerLog, buyerLines := newLogRecorder(t)
	capacity := offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}
	s, sh := m.seller(&fakeRunner{}, &fakePay{}, capacity, 3_600_000_000, func(c *SellerConfig) {
		c.Log, c.FundTimeout = sellerLog, time.Hour
	})
	// Another buyer's accepted contract holds all of it (until funded,
	// which it never is here).
	other := m.host()
	b, _ := m.buyer(&fakePay{}, func(c *BuyerConfig) { c.Log, c.Rounds, c.RetryBackoff = buyerLog, 6, time.Millisecond })
	m.connect()
	o := m.offers[0]
	req := m.request(5)
	tm := TermsFor(o, &req)
	now := time.Now()
	p := &Proposal{Version: Version, Buyer: other.ID(), Seller: sh.ID(), OfferSeq: 1, Request: req,
		Interval: tm.Interval, Price: tm.Price, StartFee: tm.StartFee, PaymentKey: bytes.Repeat([]byte{2}, 33),
		Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute)}
	env, err := SignProposal(p, other.Peerstore().PrivKey(other.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if denv, err := s.Decide(context.Background(), other.ID(), env); err != nil {
		t.Fatal(err)
	} else if d, _ := OpenDecision(denv, time.Now()); d == nil || d.Verdict != Accept {
		t.Fatalf("the first contract was not accepted: %+v", d)
	}

	id, err := b.Submit(context.Background(), m.request(5))
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, b, id); j.State != JobFailed {
		t.Fatalf("job %s, want failed (the seller is busy)", j.State)
	}
	sl, bl := sellerLines(), buyerLines()
	if n, d := count(sl, "proposal rejected", slog.LevelInfo), count(sl, "proposal rejected", slog.LevelDebug); n != 1 || d < 2 {
		t.Errorf("seller: %d refusals at info, %d at debug; want 1 and the rest (at least 2)", n, d)
	}
	if n, d := count(bl, "attempt ended", slog.LevelInfo), count(bl, "attempt ended", slog.LevelDebug); n != 1 || d < 2 {
		t.Errorf("buyer: %d refused attempts at info, %d at debug; want 1 and the rest", n, d)
	}
	for _, l := range bl {
		if l.msg == "contract moved" && l.attrs["to"] == "rejected" && l.level > slog.LevelDebug {
			t.Errorf("buyer logged a rejected contract at %s: %v", l.level, l.attrs)
		}
		if l.msg == "attempt ended" && l.attrs["outcome"] != "refused" {
			t.Errorf("outcome logged as %q, want its name", l.attrs["outcome"])
		}
	}
}
