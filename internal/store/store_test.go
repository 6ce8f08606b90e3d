package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOpenMigratesAndReopens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Version(); v != SchemaVersion() {
		t.Fatalf("version %d, want %d", v, SchemaVersion())
	}
	if err := db.Update(func(tx *Tx) error { return tx.Put("contracts", "a/1", []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	// A second opener waits for the lock and then gives up with ErrLocked.
	if _, err := Open(path, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	db.Close()
	db, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got []string
	db.View(func(tx *Tx) error {
		return tx.ForEach("contracts", "a/", func(k string, v []byte) error {
			got = append(got, k+"="+string(v))
			return nil
		})
	})
	if strings.Join(got, ",") != "a/1=x" {
		t.Fatalf("after reopen: %v", got)
	}
}

func TestMigrationFailureLeavesPreviousVersion(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	boom := errors.New("boom")
	list := append(append([]Migration(nil), migrations...),
		Migration{Version: SchemaVersion() + 1, Name: "adds a key then fails", Apply: func(tx *Tx) error {
			if err := tx.Put("offers", "half", []byte("done")); err != nil {
				return err
			}
			return boom
		}})
	if err := db.migrate(list); !errors.Is(err, boom) {
		t.Fatalf("migrate: %v", err)
	}
	if v, _ := db.Version(); v != SchemaVersion() {
		t.Fatalf("version after failed migration: %d", v)
	}
	db.View(func(tx *Tx) error {
		if tx.Get("offers", "half") != nil {
			t.Error("a failed migration left a write behind")
		}
		return nil
	})
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *Tx) error { return tx.Put(metaBucket, versionKey, []byte("999")) })
	db.Close()
	if _, err := Open(path, time.Second); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("open of a newer schema: %v", err)
	}
}

// TestBatchConcurrentDurable: concurrent Batch writers all return nil, and
// every write is there after the file is closed and reopened; a writer
// whose fn fails gets its error and leaves nothing, without costing the
// others their writes (bbolt reruns the rest of the batch without it).
func TestBatchConcurrentDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	boom := errors.New("boom")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%02d", i)
			errs[i] = db.Batch(func(tx *Tx) error {
				if err := tx.Put("batch", key, []byte(key)); err != nil {
					return err
				}
				if i%8 == 3 {
					return boom // written, then refused: must not stay
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%8 == 3; errors.Is(err, boom) != want || (!want && err != nil) {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *Tx) error {
		for i := 0; i < n; i++ {
			key := fmt.Sprintf("k%02d", i)
			got := tx.Get("batch", key)
			if i%8 == 3 && got != nil {
				t.Errorf("failed writer %d left %q", i, got)
			}
			if i%8 != 3 && string(got) != key {
				t.Errorf("writer %d lost after reopen: %q", i, got)
			}
		}
		return nil
	})
}
