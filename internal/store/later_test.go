package store_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/store"
	"github.com/blackbox-market/blackbox/pkg/contract"
)

// Later changes: the newest under a key replaces a pending one, nothing is
// on disk before the commit, FlushLater and Close commit them, and a
// reader of the history sees the payments recorded before it.
func TestLaterCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db.SetLaterDelay(time.Hour)
	get := func(key string) string {
		var v []byte
		if err := db.View(func(tx *store.Tx) error { v = tx.Get("b", key); return nil }); err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	put := func(key, v string) func(*store.Tx) error {
		return func(tx *store.Tx) error { return tx.Put("b", key, []byte(v)) }
	}
	db.Later("k", put("k", "1"))
	db.Later("k", put("k", "2"))
	db.Later("j", put("j", "x"))
	if got := get("k"); got != "" {
		t.Fatalf("a later change on disk before its commit: %q", got)
	}
	if err := db.FlushLater(); err != nil {
		t.Fatal(err)
	}
	if get("k") != "2" || get("j") != "x" {
		t.Fatalf("after FlushLater: k=%q j=%q, want 2 and x", get("k"), get("j"))
	}

	// The history: the first payment ever at once, the next ones later;
	// a read flushes them.
	h := store.NewHistoryStore(db)
	if err := h.RecordPaymentLater(time.Now(), "c", 10); err != nil {
		t.Fatal(err)
	}
	if got := get("k"); got != "2" {
		t.Fatal(got)
	}
	for _, v := range []int64{20, 30} {
		if err := h.RecordPaymentLater(time.Now(), "c", v); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := h.Contracts([]string{"c"})
	if err != nil || cs["c"] == nil || cs["c"].Cumulative != 30 {
		t.Fatalf("history after later payments: %+v, %v; want 30", cs["c"], err)
	}
	b, err := h.Buckets(time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil || len(b) != 1 || b[0].EarnedSat != 30 {
		t.Fatalf("buckets %+v, %v; want 30 earned", b, err)
	}

	// A contract's Paid, raised later, is committed by Close.
	st := store.NewContractStore(db)
	m := contract.NewMachine(st, contract.Timeouts{}, nil, nil)
	if err := m.Create(&contract.Record{ID: "c", Role: contract.RoleSeller, State: contract.StateRunning}); err != nil {
		t.Fatal(err)
	}
	for _, paid := range []int64{5, 7} {
		if err := m.NotePaid(contract.RoleSeller, "c", paid, uint64(paid)); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := m.Get(contract.RoleSeller, "c"); r.Paid != 0 {
		t.Fatalf("Paid %d on disk before the commit", r.Paid)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = store.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m = contract.NewMachine(store.NewContractStore(db), contract.Timeouts{}, nil, nil)
	if r, err := m.Get(contract.RoleSeller, "c"); err != nil || r.Paid != 7 || r.Intervals != 7 || r.State != contract.StateRunning {
		t.Fatalf("after Close: %+v, %v; want paid 7, 7 intervals, running", r, err)
	}
	// RaisePaid raises, never lowers, and skips unknown contracts.
	raised, err := contract.RaisePaid(store.NewContractStore(db), contract.RoleSeller, map[string]int64{"c": 6, "gone": 9})
	if err != nil || len(raised) != 0 {
		t.Fatalf("raise below: %v %v", raised, err)
	}
	raised, err = contract.RaisePaid(store.NewContractStore(db), contract.RoleSeller, map[string]int64{"c": 11})
	if r, _ := m.Get(contract.RoleSeller, "c"); err != nil || len(raised) != 1 || r.Paid != 11 {
		t.Fatalf("raise: %v %v, paid %d; want 11", raised, err, r.Paid)
	}
}
