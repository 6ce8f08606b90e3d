package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
			last := appendPaylogRecord(nil, l.epoch, paylogEntry{key: "d", value: []byte("torn")})
			switch damage {
			case "cut":
				last = last[:len(last)-2]
			case "flip":
				last[len(last)-1] ^= 1
			case "old-epoch":
				last = appendPaylogRecord(nil, l.epoch-1, paylogEntry{key: "d", value: []byte("torn")})
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
	log = appendPaylogRecord(log, 3, paylogEntry{key: "a:0", value: []byte(`{"id":"a:0"}`)})
	log = appendPaylogRecord(log, 3, paylogEntry{key: "b:1"})
	log = appendPaylogRecord(log, 3, paylogEntry{key: "c:2", value: []byte(`{"id":"c:2"}`), unchecked: true})
	f.Add(log)
	f.Add(log[:len(log)-1])
	v1 := paylogHeaderV(1, 4)
	v1 = appendPaylogRecordV(v1, 1, 4, paylogEntry{key: "a:0", value: []byte(`{"id":"a:0"}`)})
	f.Add(v1)
	f.Add(encodePaylogHeader(1))
	f.Add(append(encodePaylogHeader(1), make([]byte, 64)...))
	f.Add([]byte("bbpaylog"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		epoch, entries, end, err := decodePaylog(raw)
		if err != nil {
			return
		}
		v := binary.LittleEndian.Uint32(raw[8:12])
		re := append([]byte(nil), raw[:paylogHeaderLen]...)
		for _, e := range entries {
			if e.key == "" {
				t.Fatal("empty key decoded")
			}
			re = appendPaylogRecordV(re, v, epoch, e)
		}
		if int64(len(re)) != end || !bytes.Equal(re, raw[:end]) {
			t.Fatalf("re-encoding differs: %d bytes vs %d", len(re), end)
		}
	})
}

// paylogHeaderV is the header of a log of version v (encodePaylogHeader
// writes the current version).
func paylogHeaderV(v uint32, epoch uint64) []byte {
	b := append([]byte(nil), paylogMagic...)
	b = binary.LittleEndian.AppendUint32(b, v)
	b = binary.LittleEndian.AppendUint64(b, epoch)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// TestPaylogTruncatedAtEveryOffset: a crash in the middle of writing the
// last record, cut at every byte offset of it (the file ends there, or the
// preallocated zeros follow), loses nothing written before it and leaves
// no corrupt state: the reopened database has the earlier values, and the
// last record's value only when the record is whole. An unchecked last
// record whose value does not pass payment.VerifyUpdateSig (here: not a
// channel at all) is never loaded, whole or not: the key keeps its
// previous value.
func TestPaylogTruncatedAtEveryOffset(t *testing.T) {
	for _, last := range []paylogEntry{
		{key: "c", value: []byte("new")},
		{key: "b", value: []byte("new")},
		{key: "b", value: []byte("unchecked"), unchecked: true},
	} {
		name := last.key
		if last.unchecked {
			name += "-unchecked"
		}
		t.Run(name, func(t *testing.T) {
			db := mustOpen(t, filepath.Join(t.TempDir(), "a.db"))
			defer db.Close()
			l, _ := db.paylog()
			for i, k := range []string{"a", "b"} {
				if err := l.put(k, []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			start := l.pos
			rec := appendPaylogRecord(nil, l.epoch, last)
			if _, err := l.f.WriteAt(rec, start); err != nil {
				t.Fatal(err)
			}
			whole := crashCopy(t, db)
			for cut := start; cut <= start+int64(len(rec)); cut++ {
				for _, mode := range []string{"truncate", "zeros"} {
					if mode == "zeros" && cut == start+int64(len(rec)) {
						continue
					}
					path := filepath.Join(t.TempDir(), "b.db")
					for _, suffix := range []string{"", PaylogSuffix} {
						raw, err := os.ReadFile(whole + suffix)
						if err != nil {
							t.Fatal(err)
						}
						if suffix == PaylogSuffix {
							if mode == "truncate" {
								raw = raw[:cut]
							} else {
								clear(raw[cut : start+int64(len(rec))])
							}
						}
						if err := os.WriteFile(path+suffix, raw, 0o600); err != nil {
							t.Fatal(err)
						}
					}
					db2, err := Open(path, time.Second)
					if err != nil {
						t.Fatalf("cut at %d (%s): open: %v", cut-start, mode, err)
					}
					want := "map[a:0 b:1]"
					if cut == start+int64(len(rec)) && !last.unchecked {
						want = map[string]string{"c": "map[a:0 b:1 c:new]", "b": "map[a:0 b:new]"}[last.key]
					}
					if got := fmt.Sprint(channelsIn(t, db2)); got != want {
						t.Fatalf("cut at %d of %d (%s): %s, want %s", cut-start, len(rec), mode, got, want)
					}
					db2.Close()
					if _, err := os.Stat(path + PaylogSuffix); !errors.Is(err, os.ErrNotExist) {
						t.Fatalf("cut at %d (%s): the replayed log is still there: %v", cut-start, mode, err)
					}
				}
			}
		})
	}
}

// TestPaylogCheckedPut: a value written with putChecked is the key's only
// once its check passed; a failed check leaves the previous value (in
// memory, after compaction, and after a replay), and a compaction between
// the write and the end of the check writes the value again.
func TestPaylogCheckedPut(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	l, _ := db.paylog()
	if err := l.put("k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("bad signature")
	if err := l.putChecked("k", []byte("forged"), func() error { return bad }); !errors.Is(err, bad) {
		t.Fatalf("failed check: %v", err)
	}
	if got := string(l.latest["k"]); got != "old" {
		t.Fatalf("after a failed check the log's value is %q", got)
	}
	db2 := mustOpen(t, crashCopy(t, db))
	if got := fmt.Sprint(channelsIn(t, db2)); got != "map[k:old]" {
		t.Fatalf("replay after a failed check: %s", got)
	}
	db2.Close()

	// Compacted while the check runs: written again once checked.
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- l.putChecked("k", []byte("slow"), func() error { <-release; return nil })
	}()
	for {
		l.wmu.Lock()
		_, ok := l.pending["k"]
		l.wmu.Unlock()
		if ok {
			break
		}
		time.Sleep(time.Millisecond)
	}
	l.wmu.Lock()
	err := l.compact()
	l.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(channelsIn(t, db)); got != "map[k:old]" {
		t.Fatalf("compaction committed an unchecked value: %s", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(db.path + PaylogSuffix)
	_, entries, _, err := decodePaylog(raw)
	if err != nil || len(entries) != 1 || entries[0].unchecked || string(entries[0].value) != "slow" {
		t.Fatalf("after the check, the new epoch holds %+v (%v), want slow, checked", entries, err)
	}
}
