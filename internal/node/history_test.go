package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/payment"
	"github.com/btcsuite/btcd/wire"
)

// historyNode is a node with only its database and history: what Earnings
// reads when nothing else runs.
func historyNode(tb testing.TB) *Node {
	tb.Helper()
	db, err := store.Open(filepath.Join(tb.TempDir(), DBFile), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	n := &Node{db: db, log: slog.New(slog.DiscardHandler)}
	n.history = newHistory(n)
	return n
}

// TestEarningsSplit: what was earned in a window is pending while its
// contract runs, in channels once it ended in a channel still open, and
// settled once that channel is closed; fees come off the net; each window
// counts only its buckets.
func TestEarningsSplit(t *testing.T) {
	n := historyNode(t)
	st := n.history.st
	now := time.Now()
	day := 24 * time.Hour
	// settled: 3 days ago; ended: 2 h ago, channel open; running: now.
	for _, p := range []struct {
		id  string
		at  time.Time
		cum int64
	}{{"settled", now.Add(-3 * day), 1000}, {"ended", now.Add(-2 * time.Hour), 300}, {"running", now.Add(-time.Minute), 50}} {
		if _, err := st.RecordPayment(p.at, p.id, p.cum); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"settled", "ended"} {
		if err := st.RecordOutcome(now.Add(-time.Hour), id, "completed"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RecordFee(now.Add(-10*day), 40); err != nil {
		t.Fatal(err)
	}
	buckets, err := st.Buckets(now.Add(-30*day), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := st.Contracts([]string{"ended", "running"})
	if err != nil {
		t.Fatal(err)
	}
	split := earned{history: hist, inOpen: map[string]bool{"ended": true, "running": true}}

	today := totals(buckets, split, now.Add(-day))
	if today.EarnedSat != 350 || today.PendingSat != 50 || today.ChannelSat != 300 || today.SettledSat != 0 ||
		today.FeesSat != 0 || today.NetSat != 350 || today.Contracts["completed"] != 2 {
		t.Fatalf("today %+v", today)
	}
	week := totals(buckets, split, now.Add(-7*day))
	if week.EarnedSat != 1350 || week.SettledSat != 1000 || week.ChannelSat != 300 || week.PendingSat != 50 || week.NetSat != 1350 {
		t.Fatalf("week %+v", week)
	}
	month := totals(buckets, split, now.Add(-30*day))
	if month.FeesSat != 40 || month.NetSat != 1310 {
		t.Fatalf("month %+v", month)
	}

	// The same through Earnings (no payments: no open channel is known, so
	// everything earned counts as settled).
	e, err := n.Earnings(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if e.Today.EarnedSat != 350 || e.Today.SettledSat != 350 || e.Week.EarnedSat != 1350 || e.Month.NetSat != 1310 ||
		e.Period.EarnedSat != e.Today.EarnedSat {
		t.Fatalf("earnings %+v", e)
	}
}

// TestCoarsen: a long period is listed in wider buckets, capacity averaged
// over the samples of each.
func TestCoarsen(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var in []store.HistoryBucket
	for i := range 24 { // two hours of 5-minute buckets
		in = append(in, store.HistoryBucket{Start: start.Add(time.Duration(i) * store.HistoryStep), EarnedSat: 1, Jobs: 1,
			Samples: 2, SoldMilliCPU: 2000, SpareMilliCPU: 2 * int64(i),
			Contracts: map[string]int64{"completed": 1}})
	}
	out, width := coarsen(in, start, 7*24*time.Hour)
	if width != 3600 || len(out) != 2 {
		t.Fatalf("width %d, %d buckets; want 1 h, 2", width, len(out))
	}
	if out[0].EarnedSat != 12 || out[0].Jobs != 12 || out[0].Contracts["completed"] != 12 || out[0].SoldMilliCPU != 1000 ||
		out[0].SpareMilliCPU != 5 || out[1].SpareMilliCPU != 17 {
		t.Fatalf("coarse buckets %+v", out)
	}
	if out, width := coarsen(in, start.Add(time.Hour), 24*time.Hour); width != 300 || len(out) != 12 {
		t.Fatalf("a day: width %d, %d buckets; want 5 min, 12 from since on", width, len(out))
	}
}

func TestNoWorkReasons(t *testing.T) {
	codes := func(f idleFacts) string {
		s := ""
		for _, r := range noWorkReasons(f) {
			if r.Fix == "" || r.Detail == "" {
				t.Errorf("%s without detail or fix", r.Code)
			}
			s += r.Code + " "
		}
		return s
	}
	ok := idleFacts{selling: true, measured: true, spareCPU: 1000, meterReason: "spare", own: 100, median: 100,
		repKnown: true, repMean: 0.9, repEvid: 3, repThreshold: 0.45, listenKnown: true, reach: StatePublic}
	for _, c := range []struct {
		name string
		f    func(*idleFacts)
		want string
	}{
		{"all well", func(*idleFacts) {}, ""},
		{"payments off", func(f *idleFacts) { f.paymentsOff = "no btcd" }, "payments "},
		{"no sandbox", func(f *idleFacts) { f.sandboxOff = "no containerd" }, "sandbox "},
		{"hours", func(f *idleFacts) { f.meterReason = "outside available hours 22:00-07:00"; f.spareCPU = 0 }, "hours "},
		{"power floor", func(f *idleFacts) { f.meterReason = "price 2 sat/core-h below power floor 3"; f.spareCPU = 0 }, "price "},
		{"no capacity", func(f *idleFacts) { f.meterReason = "nothing to spare: no cpu left after reserve"; f.spareCPU = 0 }, "capacity "},
		{"dear", func(f *idleFacts) { f.own = 150 }, "price "},
		{"a little dear is fine", func(f *idleFacts) { f.own = 105 }, ""},
		{"median unknown", func(f *idleFacts) { f.own = 1e6; f.median = 0 }, ""},
		{"bad reputation", func(f *idleFacts) { f.repMean = 0.2 }, "reputation "},
		{"blocked", func(f *idleFacts) { f.repBlocked = true }, "reputation "},
		{"no reputation yet", func(f *idleFacts) { f.repMean, f.repEvid = 0.1, 0 }, ""},
		{"unreachable", func(f *idleFacts) { f.reach = StateUnreachable }, "reachability "},
		{"no verdict", func(f *idleFacts) { f.reach = StateUnknown }, "reachability "},
		{"behind NAT with a relay slot", func(f *idleFacts) { f.reach = StatePrivate }, ""},
		{"buyers gave up", func(f *idleFacts) { f.unreachable = 2 }, "unreachable "},
		{"everything", func(f *idleFacts) {
			*f = idleFacts{paymentsOff: "x", sandboxOff: "y", listenKnown: true, reach: StateUnknown}
		}, "payments sandbox reachability "},
	} {
		f := ok
		c.f(&f)
		if got := codes(f); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// BenchmarkEarnings90Days: `blackbox earnings` answered from a store
// holding 90 days of 5-minute buckets (each with capacity samples, and
// every tenth with a paid contract, an outcome and refusals).
func BenchmarkEarnings90Days(b *testing.B) {
	n := historyNode(b)
	if err := fillHistory(n.history.st, time.Now()); err != nil {
		b.Fatal(err)
	}
	for _, since := range []time.Duration{0, 7 * 24 * time.Hour, store.HistoryKeep} {
		b.Run(fmt.Sprintf("since=%s", since), func(b *testing.B) {
			for b.Loop() {
				e, err := n.Earnings(context.Background(), since)
				if err != nil || e.Month.EarnedSat == 0 {
					b.Fatalf("%+v %v", e.Month, err)
				}
			}
		})
	}
}

// fillHistory writes 90 days of history up to now.
func fillHistory(st *store.HistoryStore, now time.Time) error {
	var buckets []store.HistoryBucket
	contracts := map[string]*store.ContractHistory{}
	for i := int(store.HistoryKeep/store.HistoryStep) - 1; i >= 0; i-- { // oldest first: bbolt appends
		b := store.HistoryBucket{Start: store.BucketStart(now.Add(-time.Duration(i) * store.HistoryStep)),
			Samples: 60, SpareMilliCPU: 60 * 1000, SoldMilliCPU: 60 * 500, SpareMemory: 60 << 30}
		if i%10 == 0 {
			id := fmt.Sprintf("contract-%06d", i)
			b.EarnedSat, b.Jobs = 1200, 1
			b.Contracts = map[string]int64{"completed": 1}
			b.Refusals = map[string]int64{"capacity": 2, "price": 1}
			contracts[id] = &store.ContractHistory{Cumulative: 1200, Ended: true, Last: b.Start,
				Points: []store.ContractPoint{{Start: b.Start, Sat: 1200}}}
		}
		buckets = append(buckets, b)
	}
	return st.Import(buckets, contracts)
}

// feesToday sums the fees recorded in the last day.
func feesToday(t *testing.T, n *Node) int64 {
	t.Helper()
	bs, err := n.history.st.Buckets(time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var f int64
	for _, b := range bs {
		f += b.FeesSat
	}
	return f
}

// TestFeesRecorded: a seller's close counts its close fee once (not again
// when the record is persisted again, nor after a restart), a buyer's
// refund what its spend leaves out, a funding what the wallet was asked to
// pay; nothing is recorded when the store or the broadcast fails.
func TestFeesRecorded(t *testing.T) {
	n := historyNode(t)
	mem := payment.NewMemStore()
	fs := n.watchFees(mem)
	spend := func(outs ...int64) []byte {
		tx := wire.NewMsgTx(2)
		tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{}, nil, nil))
		for _, v := range outs {
			tx.AddTxOut(wire.NewTxOut(v, []byte{0x51}))
		}
		var b bytes.Buffer
		if err := tx.Serialize(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	sell := &payment.Channel{ID: "a:0", Role: payment.RoleSeller, State: payment.StateOpen, Capacity: 10_000, CloseFee: 300}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fs.PutChannel(sell))
	sell.State, sell.SpendTx = payment.StateClosing, spend(1000, 8700)
	must(fs.PutChannel(sell))
	must(fs.PutChannel(sell)) // persisted again (a rebroadcast): not counted again
	if f := feesToday(t, n); f != 300 {
		t.Fatalf("after the close: fees %d, want the close fee 300", f)
	}
	// A restart: the closing channel is loaded, not counted again.
	fs = n.watchFees(mem)
	if _, err := fs.LoadChannels(); err != nil {
		t.Fatal(err)
	}
	sell.State = payment.StateClosed
	must(fs.PutChannel(sell))
	buy := &payment.Channel{ID: "b:0", Role: payment.RoleBuyer, State: payment.StateClosing, Capacity: 5000, SpendTx: spend(4800)}
	mem.Fail = errors.New("disk full")
	if err := fs.PutChannel(buy); err == nil {
		t.Fatal("the store's failure was not returned")
	}
	mem.Fail = nil
	must(fs.PutChannel(buy))
	if f := feesToday(t, n); f != 500 {
		t.Fatalf("after the refund: fees %d, want 300 + 200", f)
	}

	fund := n.watchFunding(&fakeFunder{})
	tx, err := fund.FundTx(context.Background(), []*wire.TxOut{wire.NewTxOut(5000, []byte{0x51})}, 2)
	must(err)
	must(fund.PublishTx(context.Background(), tx))
	want := 500 + 2*payment.VSize(tx)
	if f := feesToday(t, n); f != want {
		t.Fatalf("after a funding: fees %d, want %d", f, want)
	}
	tx2, err := fund.FundTx(context.Background(), []*wire.TxOut{wire.NewTxOut(6000, []byte{0x51})}, 2)
	must(err)
	fund.(*feeFunder).Funder.(*fakeFunder).fail = errors.New("refused")
	if err := fund.PublishTx(context.Background(), tx2); err == nil {
		t.Fatal("the broadcast's failure was not returned")
	}
	if f := feesToday(t, n); f != want {
		t.Fatalf("a funding never broadcast counted: fees %d, want %d", f, want)
	}
}

type fakeFunder struct{ fail error }

func (f *fakeFunder) FundTx(_ context.Context, outs []*wire.TxOut, _ int64) (*wire.MsgTx, error) {
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(&wire.OutPoint{Index: 1}, nil, nil))
	for _, o := range outs {
		tx.AddTxOut(o)
	}
	return tx, nil
}

func (f *fakeFunder) NewScript(context.Context) ([]byte, error) { return []byte{0x51}, nil }

func (f *fakeFunder) PublishTx(context.Context, *wire.MsgTx) error { return f.fail }

// TestCatchUp: after a crash between the channel's record of a payment and
// the history's, the restart records the difference; a contract from before
// the history began is left alone, and so are closed channels.
func TestCatchUp(t *testing.T) {
	n := historyNode(t)
	h := n.history
	now := time.Now()
	begin := now.Add(-time.Hour)
	if got, err := h.catchUp(now, nil, nil); got != 0 || err != nil {
		t.Fatalf("no history: %d, %v", got, err)
	}
	if _, err := h.st.RecordPayment(begin, "known", 100); err != nil {
		t.Fatal(err)
	}
	chans := []*payment.Channel{
		{ID: "a:0", Role: payment.RoleSeller, State: payment.StateOpen,
			Contracts: map[string]int64{"known": 300, "new": 50, "old": 1000}},
		{ID: "b:0", Role: payment.RoleSeller, State: payment.StateClosed, Contracts: map[string]int64{"closed": 70}},
		{ID: "c:0", Role: payment.RoleBuyer, State: payment.StateOpen, Contracts: map[string]int64{"bought": 80}},
	}
	created := map[string]time.Time{"new": now.Add(-time.Minute), "old": begin.Add(-24 * time.Hour), "closed": now, "bought": now}
	added, err := h.catchUp(now, chans, func(id string) time.Time { return created[id] })
	if err != nil || added != 200+50 {
		t.Fatalf("caught up %d, %v; want 200 (known) + 50 (new)", added, err)
	}
	if again, _ := h.catchUp(now, chans, func(id string) time.Time { return created[id] }); again != 0 {
		t.Fatalf("a second catch-up added %d", again)
	}
}

// TestUnwritten: samples not yet written join their bucket, in order.
func TestUnwritten(t *testing.T) {
	h := &history{}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	h.acc, h.accN, h.accAt = store.CapacitySample{SoldMilliCPU: 30}, 3, t0.Add(store.HistoryStep)
	for _, in := range [][]store.HistoryBucket{
		nil,
		{{Start: t0}},
		{{Start: t0}, {Start: t0.Add(store.HistoryStep), Samples: 1, SoldMilliCPU: 10}},
		{{Start: t0}, {Start: t0.Add(2 * store.HistoryStep)}},
	} {
		out := h.unwritten(slices.Clone(in))
		var got *store.HistoryBucket
		for i := range out {
			if i > 0 && !out[i-1].Start.Before(out[i].Start) {
				t.Fatalf("out of order: %+v", out)
			}
			if out[i].Start.Equal(h.accAt) {
				got = &out[i]
			}
		}
		want := int64(3)
		if len(in) == 2 && in[1].Samples == 1 {
			want = 4
		}
		if got == nil || got.Samples != want {
			t.Fatalf("from %+v: %+v", in, out)
		}
	}
}
