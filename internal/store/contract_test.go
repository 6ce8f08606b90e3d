package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
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
