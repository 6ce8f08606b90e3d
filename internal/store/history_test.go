package store

import (
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

func openHistory(t testing.TB) (*HistoryStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return NewHistoryStore(db), path
}

func TestHistoryRecordsAndReads(t *testing.T) {
	h, path := openHistory(t)
	t0 := time.Date(2026, 12, 1, 10, 2, 0, 0, time.UTC)
	if _, ok, err := h.Oldest(); ok || err != nil {
		t.Fatalf("an empty history has an oldest bucket (%v)", err)
	}
	// Three acknowledged updates of one contract, one repeated: the
	// increase counts once.
	for _, c := range []struct {
		at   time.Time
		cum  int64
		want int64
	}{{t0, 100, 100}, {t0.Add(time.Minute), 250, 150}, {t0.Add(time.Minute), 250, 0}, {t0.Add(6 * time.Minute), 300, 50}} {
		d, err := h.RecordPayment(c.at, "c1", c.cum)
		if err != nil || d != c.want {
			t.Fatalf("RecordPayment(%d) = %d, %v; want %d", c.cum, d, err, c.want)
		}
	}
	must(t, h.RecordJob(t0))
	must(t, h.RecordFee(t0, 20))
	must(t, h.RecordOutcome(t0.Add(2*time.Minute), "c1", "completed"))
	must(t, h.RecordOutcome(t0, "c2", "rejected"))
	must(t, h.RecordRefusals(t0, map[string]int64{"capacity": 2, "price": 1}))
	var sum CapacitySample
	sum.Add(CapacitySample{SpareMilliCPU: 1000, SoldMilliCPU: 500, ResMilliCPU: 250, SpareMemory: 1 << 30})
	sum.Add(CapacitySample{SpareMilliCPU: 500, SoldMilliCPU: 1000, ResMemory: -5})
	must(t, h.RecordCapacity(t0, sum, 2))

	got, err := h.Buckets(t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d buckets, want 2: %+v", len(got), got)
	}
	want := HistoryBucket{Start: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), EarnedSat: 250, FeesSat: 20, Jobs: 1,
		Contracts: map[string]int64{"completed": 1, "rejected": 1}, Refusals: map[string]int64{"capacity": 2, "price": 1},
		Samples: 2, SpareMilliCPU: 1500, SoldMilliCPU: 1500, ResMilliCPU: 250, SpareMemory: 1 << 30}
	if !reflect.DeepEqual(got[0], want) {
		t.Fatalf("bucket\n got %+v\nwant %+v", got[0], want)
	}
	if got[1].EarnedSat != 50 || !got[1].Start.Equal(want.Start.Add(HistoryStep)) {
		t.Fatalf("second bucket %+v", got[1])
	}
	if oldest, ok, err := h.Oldest(); !ok || err != nil || !oldest.Equal(want.Start) {
		t.Fatalf("Oldest = %v, %v, %v; want %v", oldest, ok, err, want.Start)
	}
	cs, err := h.Contracts([]string{"c1", "c2", "c3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs["c1"] == nil {
		t.Fatalf("contracts %+v: want c1 only (c2 never ran)", cs)
	}
	c1 := cs["c1"]
	if !c1.Ended || c1.Cumulative != 300 || len(c1.Points) != 2 || c1.Points[0].Sat != 250 || c1.Points[1].Sat != 50 {
		t.Fatalf("c1 %+v", c1)
	}

	// Reopened (a restart), everything is still there.
	h.db.Close()
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h = NewHistoryStore(db)
	again, err := h.Buckets(t0.Add(-time.Hour), t0.Add(time.Hour))
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Fatalf("after reopen: %+v, %v", again, err)
	}
	// Pruning before the second bucket drops the first and keeps c1
	// (changed later).
	n, err := h.Prune(want.Start.Add(HistoryStep))
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if left, _ := h.Buckets(t0.Add(-time.Hour), t0.Add(time.Hour)); len(left) != 1 {
		t.Fatalf("after prune: %+v", left)
	}
	if n, _ := h.Prune(t0.Add(time.Hour)); n != 2 {
		t.Fatalf("second prune dropped %d, want 2 (bucket and contract)", n)
	}
}

func TestHistoryNamesAreBounded(t *testing.T) {
	b := &HistoryBucket{}
	for i := range 200 {
		addName(&b.Refusals, string(rune('a'+i%26))+string(rune('a'+i/26))+"-a-very-long-reason-name-that-goes-on-and-on-and-on-for-ever-and-ever", 1)
	}
	if len(b.Refusals) > maxHistoryNames {
		t.Fatalf("%d names", len(b.Refusals))
	}
	d, err := DecodeHistoryBucket(EncodeHistoryBucket(b))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Refusals, b.Refusals) {
		t.Fatal("names changed in the round trip")
	}
}

func TestBucketStart(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 4, 59, 999, time.FixedZone("x", 3600))
	if got := BucketStart(at); !got.Equal(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("BucketStart = %v", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeHistory: stored history is read back after crashes and by
// newer binaries; whatever the bytes, the decoders neither panic nor
// accept what they would not write back the same way.
func FuzzDecodeHistory(f *testing.F) {
	b := &HistoryBucket{EarnedSat: 5, FeesSat: 1, Jobs: 2, Samples: 3, SoldMilliCPU: 9,
		Contracts: map[string]int64{"completed": 1}, Refusals: map[string]int64{"capacity": 4}}
	f.Add(EncodeHistoryBucket(b))
	f.Add(EncodeContractHistory(&ContractHistory{Cumulative: 7, Ended: true, Last: time.Unix(1e9, 0),
		Points: []ContractPoint{{Start: time.Unix(3e8, 0), Sat: 3}, {Start: time.Unix(3e8+300, 0), Sat: 4}}}))
	f.Add([]byte{1, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if b, err := DecodeHistoryBucket(raw); err == nil {
			again, err := DecodeHistoryBucket(EncodeHistoryBucket(b))
			if err != nil || !reflect.DeepEqual(again, b) {
				t.Fatalf("bucket round trip: %+v → %+v, %v", b, again, err)
			}
		}
		if c, err := DecodeContractHistory(raw); err == nil {
			again, err := DecodeContractHistory(EncodeContractHistory(c))
			if err != nil || !reflect.DeepEqual(again, c) {
				t.Fatalf("contract round trip: %+v → %+v, %v", c, again, err)
			}
		}
	})
}

// BenchmarkRecordPayment: what the history adds to each payment the seller
// acknowledges (one fsynced transaction).
func BenchmarkRecordPayment(b *testing.B) {
	h, _ := openHistory(b)
	at := time.Now()
	var cum int64
	for b.Loop() {
		cum += 200
		if _, err := h.RecordPayment(at, "contract", cum); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRecordPaymentConcurrent: payments of many contracts acknowledged at
// once (sharing commits) each count once, and exactly.
func TestRecordPaymentConcurrent(t *testing.T) {
	h, _ := openHistory(t)
	at := time.Now()
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(1); i <= 20; i++ {
				// Each update twice: a retry counts nothing.
				for range 2 {
					if _, err := h.RecordPayment(at, fmt.Sprint("c", c), i*100); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	bs, err := h.Buckets(at.Add(-time.Hour), at.Add(time.Hour))
	if err != nil || len(bs) != 1 || bs[0].EarnedSat != 8*2000 {
		t.Fatalf("buckets %+v, %v; want one with %d sats", bs, err, 8*2000)
	}
}
