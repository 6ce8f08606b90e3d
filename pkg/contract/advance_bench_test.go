package contract

import (
	"fmt"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// advanceMachine is a seller's machine holding finished settled contracts
// and live running ones (their deadlines ahead), as a long-lived seller's.
func advanceMachine(tb testing.TB, finished, live int) *Machine {
	tb.Helper()
	clk := &manualClock{t: t0}
	m := NewMachine(NewMemStore(), Timeouts{}, clk.Now, nil)
	p := &Proposal{Request: Request{Image: "sha256:" + fmt.Sprintf("%064d", 0), Command: []string{"sh", "-c", "echo hello"},
		Duration: time.Hour, Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}}, Expiry: t0.Add(time.Minute)}
	for i := 0; i < finished+live; i++ {
		id := fmt.Sprintf("c%06d", i)
		if err := m.Create(&Record{ID: id, Role: RoleSeller, State: StateAccepted, Proposal: p}); err != nil {
			tb.Fatal(err)
		}
		path := []State{StateFunded, StateRunning}
		if i < finished {
			path = append(path, StateCompleted, StateSettled)
		}
		for _, s := range path {
			if _, err := m.Move(RoleSeller, id, s, "bench", func(r *Record) { r.Paid = 1000 }); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return m
}

// BenchmarkAdvance: the machine's 5 s tick on a seller with 10,000
// finished contracts and 10 running. "list" is what Advance used to pay
// (every record decoded) for comparison.
func BenchmarkAdvance(b *testing.B) {
	m := advanceMachine(b, 10_000, 10)
	if _, err := m.Advance(); err != nil { // a first tick (builds what it keeps)
		b.Fatal(err)
	}
	b.Run("advance", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			moved, err := m.Advance()
			if err != nil || len(moved) != 0 {
				b.Fatal(moved, err)
			}
		}
	})
	b.Run("list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.List(0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Advance over a store written before the live index (no index, no
// marker) builds the index from every record and times out the due ones
// as before; final records leave the index.
func TestAdvanceBuildsLiveIndex(t *testing.T) {
	m := advanceMachine(t, 3, 2) // c000000..2 settled, c000003..4 running
	err := m.store.Update(func(kv KV) error {
		var keys []string
		kv.ForEach(bucketLive, "", func(k string, _ []byte) error { keys = append(keys, k); return nil })
		if len(keys) != 2 { // the two running ones (no Advance yet: no marker)
			t.Errorf("live index %q, want the 2 running records", keys)
		}
		for _, k := range keys {
			kv.Delete(bucketLive, k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if moved, err := m.Advance(); err != nil || len(moved) != 0 {
		t.Fatalf("advance before any deadline: %v %v", moved, err)
	}
	m.now = func() time.Time { return t0.Add(2 * time.Hour) } // past duration + run grace
	moved, err := m.Advance()
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 2 || moved[0].ID != "c000003" || moved[0].State != StateFailed || moved[1].ID != "c000004" {
		t.Fatalf("moved %v, want the 2 running ones failed", moved)
	}
	m.now = func() time.Time { return t0.Add(3 * time.Hour) } // past settle
	moved, err = m.Advance()
	if err != nil || len(moved) != 2 || moved[0].State != StateSettled {
		t.Fatalf("moved %v %v, want the 2 failed ones settled", moved, err)
	}
	m.store.View(func(kv KV) error {
		return kv.ForEach(bucketLive, "", func(k string, _ []byte) error {
			if k != liveBuilt {
				t.Errorf("final record %q still in the live index", k)
			}
			return nil
		})
	})
}
