package contract

import (
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// writeCounter counts the write transactions of its store.
type writeCounter struct {
	Store
	updates int
}

func (w *writeCounter) Update(fn func(KV) error) error {
	w.updates++
	return w.Store.Update(fn)
}

// TestAdvanceIdleWritesNothing: Advance on a store with nothing due and no
// seen proposal expired opens no write transaction (each commits and syncs
// the database file, every AdvanceEvery on an idle seller); once a seen
// proposal's time is over, it is pruned.
func TestAdvanceIdleWritesNothing(t *testing.T) {
	clk := &manualClock{t: t0}
	w := &writeCounter{Store: NewMemStore()}
	m := NewMachine(w, Timeouts{}, clk.Now, nil)
	if _, err := m.Advance(); err != nil { // builds the live index once
		t.Fatal(err)
	}
	capacity := offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}
	res := Reservation{ID: "p1", Resources: offer.Resources{CPUMillis: 1000}, Until: t0.Add(time.Minute)}
	if err := Reserve(w, res, capacity, t0.Add(time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	w.updates = 0
	for range 10 {
		clk.t = clk.t.Add(5 * time.Second)
		if _, err := m.Advance(); err != nil {
			t.Fatal(err)
		}
	}
	if w.updates != 0 {
		t.Fatalf("10 idle Advances opened %d write transactions, want 0", w.updates)
	}
	clk.t = t0.Add(2 * time.Minute)
	if _, err := m.Advance(); err != nil {
		t.Fatal(err)
	}
	seen := 0
	w.View(func(kv KV) error {
		return kv.ForEach(bucketSeen, "", func(string, []byte) error { seen++; return nil })
	})
	if w.updates != 1 || seen != 0 {
		t.Fatalf("after the proposal's time: %d writes, %d seen proposals left; want 1 write, none left", w.updates, seen)
	}
}
