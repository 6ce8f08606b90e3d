package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashCopy copies the database and its payment log, as a process killed
// now would leave them on disk, into a new directory and returns the
// copy's database path. (The page cache is what a killed process leaves;
// the copy reads it.)
func crashCopy(t *testing.T, db *DB) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	for _, suffix := range []string{"", PaylogSuffix, MarkerSuffix} {
		raw, err := os.ReadFile(db.path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func channelsIn(t *testing.T, db *DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(tx *Tx) error {
		return tx.ForEach(paymentChannels, "", func(k string, v []byte) error {
			out[k] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustOpen(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestPaylogReplayAfterCrash: values put through the payment log and not
// yet in bbolt are there after a reopen of what a killed process left,
// across compactions, and the replayed log is gone.
func TestPaylogReplayAfterCrash(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	l, err := db.paylog()
	if err != nil {
		t.Fatal(err)
	}
	var hooks int
	fn := func() error { hooks++; return nil }
	db.plHook.Store(&fn)
	want := map[string]string{}
	val := bytes.Repeat([]byte("v"), 60_000)
	// Enough to fill the log several times over: compactions in between.
	for i := 0; i < 3*paylogSize/60_000+5; i++ {
		k := fmt.Sprintf("ch%d", i%7)
		v := append(append([]byte(nil), val...), fmt.Sprint(i)...)
		if err := l.put(k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = string(v)
	}
	if l.epoch < 3 || hooks < 2 {
		t.Fatalf("epoch %d, %d compactions: the log never filled", l.epoch, hooks)
	}
	// bbolt alone is behind; the copy as a killed process left it is not.
	if got := channelsIn(t, db); len(got) == len(want) && fmt.Sprint(got) == fmt.Sprint(want) {
		t.Fatal("bbolt already holds every newest value: nothing for the log to prove")
	}
	cp := crashCopy(t, db)
	db2 := mustOpen(t, cp)
	if got := channelsIn(t, db2); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after replay: %d channels, not the newest value of each", len(got))
	}
	if _, err := os.Stat(cp + PaylogSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the replayed log is still there: %v", err)
	}
	db2.Close()
	// A clean close commits everything, calls the hook and removes the log.
	before := hooks
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if hooks != before+1 {
		t.Fatalf("close ran the hook %d times", hooks-before)
	}
	if _, err := os.Stat(db.path + PaylogSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the log is still there after close: %v", err)
	}
	db3 := mustOpen(t, db.path)
	defer db3.Close()
	if got := channelsIn(t, db3); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatal("after a clean close bbolt does not hold the newest values")
	}
}

// TestPaylogGroupCommit: concurrent puts of different keys all reach the
// disk and share writes.
func TestPaylogGroupCommit(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	l, err := db.paylog()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if err := l.put(fmt.Sprintf("ch%02d", g), []byte(fmt.Sprint(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	db2 := mustOpen(t, crashCopy(t, db))
	defer db2.Close()
	got := channelsIn(t, db2)
	for g := 0; g < 16; g++ {
		if v := got[fmt.Sprintf("ch%02d", g)]; v != "19" {
			t.Fatalf("ch%02d = %q after replay, want 19", g, v)
		}
	}
}

// TestPaylogTornTail: a record cut short or damaged at the end of the log
// (a write that never completed, so was never acknowledged) ends the
// replay; everything before it is kept.
func TestPaylogTornTail(t *testing.T) {
	for _, damage := range []string{"cut", "flip", "old-epoch"} {
		t.Run(damage, func(t *testing.T) {
			db := mustOpen(t, filepath.Join(t.TempDir(), "a.db"))
			defer db.Close()
			l, _ := db.paylog()
			for i, k := range []string{"a", "b", "c"} {
				if err := l.put(k, []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			last := appendPaylogRecord(nil, l.epoch, paylogEntry{"d", []byte("torn")})
			switch damage {
			case "cut":
				last = last[:len(last)-2]
			case "flip":
				last[len(last)-1] ^= 1
			case "old-epoch":
				last = appendPaylogRecord(nil, l.epoch-1, paylogEntry{"d", []byte("torn")})
			}
			if _, err := l.f.WriteAt(last, l.pos); err != nil {
				t.Fatal(err)
			}
			db2 := mustOpen(t, crashCopy(t, db))
			defer db2.Close()
			if got := fmt.Sprint(channelsIn(t, db2)); got != "map[a:0 b:1 c:2]" {
				t.Fatalf("after replay: %s", got)
			}
		})
	}
}

// TestPaylogBadHeader: a log that is not ours is refused with what to do,
// and left as it is (it may hold the newest updates).
func TestPaylogBadHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	mustOpen(t, path).Close()
	junk := []byte("this is not a payment log at all")
	if err := os.WriteFile(path+PaylogSuffix, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, time.Second)
	if err == nil || !strings.Contains(err.Error(), "payment log") || !strings.Contains(err.Error(), "save a copy") {
		t.Fatalf("open with a foreign log: %v", err)
	}
	if raw, _ := os.ReadFile(path + PaylogSuffix); !bytes.Equal(raw, junk) {
		t.Fatal("the foreign log was changed")
	}
}

// FuzzDecodePaylog: any bytes decode without panicking; whatever decodes
// re-encodes to the same bytes.
func FuzzDecodePaylog(f *testing.F) {
	log := encodePaylogHeader(3)
	log = appendPaylogRecord(log, 3, paylogEntry{"a:0", []byte(`{"id":"a:0"}`)})
	log = appendPaylogRecord(log, 3, paylogEntry{"b:1", nil})
	f.Add(log)
	f.Add(log[:len(log)-1])
	f.Add(encodePaylogHeader(1))
	f.Add(append(encodePaylogHeader(1), make([]byte, 64)...))
	f.Add([]byte("bbpaylog"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		epoch, entries, end, err := decodePaylog(raw)
		if err != nil {
			return
		}
		re := encodePaylogHeader(epoch)
		for _, e := range entries {
			if e.key == "" {
				t.Fatal("empty key decoded")
			}
			re = appendPaylogRecord(re, epoch, e)
		}
		if int64(len(re)) != end || !bytes.Equal(re, raw[:end]) {
			t.Fatalf("re-encoding differs: %d bytes vs %d", len(re), end)
		}
	})
}
