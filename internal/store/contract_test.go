package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
)

func TestContractStoreAtomicAndDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := NewContractStore(db)
	boom := errors.New("boom")
	if err := s.Update(func(kv contract.KV) error {
		if err := kv.Put("contracts", "a", []byte("1")); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	if err := s.Update(func(kv contract.KV) error { return kv.Put("contracts", "b", []byte("2")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = NewContractStore(db)
	var keys []string
	_ = s.View(func(kv contract.KV) error {
		return kv.ForEach("contracts", "", func(k string, _ []byte) error { keys = append(keys, k); return nil })
	})
	if len(keys) != 1 || keys[0] != "b" {
		t.Fatalf("after reopen: %v (a failed update must leave nothing)", keys)
	}
}

// TestContractStoreNoOverselling: 40 concurrent admissions of one core
// each against five cores on the real database: exactly five get in.
func TestContractStoreNoOverselling(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := NewContractStore(db)
	now := time.Now()
	capacity := offer.Resources{CPUMillis: 5000, MemoryBytes: 5 << 30}
	var ok, full atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res := contract.Reservation{ID: fmt.Sprintf("p%02d", i), Resources: offer.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30}, Until: now.Add(time.Hour)}
			switch err := contract.Reserve(s, res, capacity, now.Add(time.Minute), now); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, contract.ErrCapacity):
				full.Add(1)
			default:
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if ok.Load() != 5 || full.Load() != 35 {
		t.Fatalf("admitted %d, refused %d; want 5 and 35", ok.Load(), full.Load())
	}
	m := contract.NewMachine(s, contract.Timeouts{}, func() time.Time { return now }, nil)
	if held, err := m.Held(); err != nil || held.CPUMillis != 5000 {
		t.Fatalf("held %+v %v", held, err)
	}
}
