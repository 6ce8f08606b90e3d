package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The payment log: the newest value of every channel changed since the last
// compaction, appended to a file beside the database (path + PaylogSuffix)
// and fdatasync'd before PutChannel returns. One update costs one small
// write and one fdatasync of preallocated blocks (no metadata change),
// where a bbolt commit costs two fdatasyncs, and updates of different
// channels that arrive together share one write and one fdatasync (group
// commit). When the log fills its preallocated space, its newest values
// are committed to bbolt in one transaction and the log starts over under
// a new epoch (compaction). Close compacts and removes the log; Open
// replays a log left by a killed process into bbolt (and removes it) before
// anything reads the database, so every reader (the daemon, the CLI,
// restore) sees the newest update.
//
// A seller's update is written while its signature is being checked
// (putChecked: the check and the fdatasync overlap): its record is marked
// unchecked, and counts as the channel's value (for LoadChannels and
// compaction) only once both are done. When the check fails the record
// stays in the log, ignored, until the next compaction drops it; a replay
// after a crash checks an unchecked record again (payment.VerifyUpdateSig)
// and falls back to the key's previous value when it fails.
//
// Layout (little endian):
//
//	header  magic "bbpaylog" | version u32 | epoch u64 | crc32c(previous 20 bytes) u32
//	record  length u32 | epoch u64 | crc32c(epoch, payload) u32 | payload
//	payload flags u8 | keylen u16 | key | value   (a key of payment_channels)
//
// flags bit 0: unchecked. Version 1 (written before the flags) has no flags
// byte; it is still replayed.
//
// Replay stops at the first record that does not check out (zeros past the
// end, a torn write, a record of an older epoch): records are written in
// order and each group is fdatasync'd before the next is written (an
// fdatasync covers every write before it), so no acknowledged record lies
// behind one that does not check out.

// PaylogSuffix names the payment log beside the database (path + PaylogSuffix).
const PaylogSuffix = ".paylog"

const (
	paylogMagic      = "bbpaylog"
	paylogVersion    = 2
	paylogHeaderLen  = 24
	paylogRecHdrLen  = 16
	paylogMaxPayload = 1 << 20
	// paylogSize is the space preallocated (and reused after each
	// compaction): about 600 channel updates between compactions.
	paylogSize = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// paylogEntry is one logged value.
type paylogEntry struct {
	key   string
	value []byte
	// unchecked: written while its check runs (putChecked).
	unchecked bool
}

// paylogFlagUnchecked marks an unchecked record.
const paylogFlagUnchecked = 1

// pendingValue is an unchecked value written to the log, waiting for its
// check: the epoch it was written in (a compaction since dropped it).
type pendingValue struct {
	value []byte
	epoch uint64
}

// paylogBatch is the group of entries written by one write and fdatasync.
type paylogBatch struct {
	entries []paylogEntry
	done    chan struct{}
	err     error
}

// paylog is an open payment log. Entries queue in cur; the first writer to
// find nobody writing becomes the leader and writes batches until none is
// left, while the others wait for theirs.
type paylog struct {
	db   *DB
	path string

	mu      sync.Mutex // guards cur, writing
	cur     *paylogBatch
	writing bool

	// Owned by the writer (wmu): the file, where the next record goes,
	// how far the file is allocated, and the newest value of every key
	// logged since the last compaction.
	wmu    sync.Mutex
	f      *os.File
	epoch  uint64
	pos    int64
	alloc  int64
	latest map[string][]byte
	// pending: unchecked values written, their check not yet done.
	pending map[string]pendingValue
}

// encodePaylogHeader returns the header of epoch.
func encodePaylogHeader(epoch uint64) []byte {
	b := make([]byte, 0, paylogHeaderLen)
	b = append(b, paylogMagic...)
	b = binary.LittleEndian.AppendUint32(b, paylogVersion)
	b = binary.LittleEndian.AppendUint64(b, epoch)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// appendPaylogRecord appends the record of e under epoch to b.
func appendPaylogRecord(b []byte, epoch uint64, e paylogEntry) []byte {
	return appendPaylogRecordV(b, paylogVersion, epoch, e)
}

// appendPaylogRecordV is appendPaylogRecord in the layout of version v.
func appendPaylogRecordV(b []byte, v uint32, epoch uint64, e paylogEntry) []byte {
	payload := make([]byte, 0, 3+len(e.key)+len(e.value))
	if v >= 2 {
		var flags byte
		if e.unchecked {
			flags |= paylogFlagUnchecked
		}
		payload = append(payload, flags)
	}
	payload = binary.LittleEndian.AppendUint16(payload, uint16(len(e.key)))
	payload = append(payload, e.key...)
	payload = append(payload, e.value...)
	var ep [8]byte
	binary.LittleEndian.PutUint64(ep[:], epoch)
	sum := crc32.Update(crc32.Checksum(ep[:], castagnoli), castagnoli, payload)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, ep[:]...)
	b = binary.LittleEndian.AppendUint32(b, sum)
	return append(b, payload...)
}

// errPaylogHeader is a log whose header does not check out.
var errPaylogHeader = errors.New("not a payment log (bad header)")

// decodePaylog parses a log: its epoch, the entries that check out in
// order, and the offset just past the last of them. A header that does not
// check out is an error (the file is not ours to replay or reuse).
func decodePaylog(raw []byte) (epoch uint64, entries []paylogEntry, end int64, err error) {
	if len(raw) < paylogHeaderLen || string(raw[:8]) != paylogMagic ||
		crc32.Checksum(raw[:20], castagnoli) != binary.LittleEndian.Uint32(raw[20:24]) {
		return 0, nil, 0, errPaylogHeader
	}
	v := binary.LittleEndian.Uint32(raw[8:12])
	if v < 1 || v > paylogVersion {
		return 0, nil, 0, fmt.Errorf("payment log version %d, this binary reads 1 to %d", v, paylogVersion)
	}
	flagsLen := 0
	if v >= 2 {
		flagsLen = 1
	}
	epoch = binary.LittleEndian.Uint64(raw[12:20])
	off := paylogHeaderLen
	for len(raw)-off >= paylogRecHdrLen {
		h := raw[off : off+paylogRecHdrLen]
		n := int(binary.LittleEndian.Uint32(h[0:4]))
		if n < flagsLen+2 || n > paylogMaxPayload || n > len(raw)-off-paylogRecHdrLen ||
			binary.LittleEndian.Uint64(h[4:12]) != epoch {
			break
		}
		payload := raw[off+paylogRecHdrLen : off+paylogRecHdrLen+n]
		if crc32.Update(crc32.Checksum(h[4:12], castagnoli), castagnoli, payload) != binary.LittleEndian.Uint32(h[12:16]) {
			break
		}
		var e paylogEntry
		if flagsLen > 0 {
			if f := payload[0] &^ paylogFlagUnchecked; f != 0 {
				// Whole and checksummed, so written by a binary that
				// knows more: not ours to skip or cut short.
				return 0, nil, 0, fmt.Errorf("payment log record flags %#x, unknown to this binary", f)
			}
			e.unchecked = payload[0]&paylogFlagUnchecked != 0
			payload = payload[1:]
		}
		kl := int(binary.LittleEndian.Uint16(payload))
		if kl == 0 || 2+kl > len(payload) {
			break
		}
		e.key, e.value = string(payload[2:2+kl]), payload[2+kl:]
		entries = append(entries, e)
		off += paylogRecHdrLen + n
	}
	return epoch, entries, int64(off), nil
}

// replayPaylog commits what a log left by a killed process holds into
// bbolt and removes the log (a crash in between replays it again).
func replayPaylog(db *DB) error {
	path := db.path + PaylogSuffix
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read payment log %s: %w", path, err)
	}
	if len(raw) > 0 {
		_, entries, _, err := decodePaylog(raw)
		if err != nil {
			return fmt.Errorf("payment log %s: %w; it may hold the newest channel updates: save a copy, move it aside and start again", path, err)
		}
		if newest := replayValues(entries); len(newest) > 0 {
			err = db.Update(func(tx *Tx) error {
				for _, k := range slices.Sorted(maps.Keys(newest)) {
					if err := tx.Put(paymentChannels, k, newest[k]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("replay payment log %s: %w", path, err)
			}
		}
	}
	return removeSynced(path)
}

// replayValues is the newest value of every key in entries (in log
// order) that may be loaded: an unchecked record only when it passes
// payment.VerifyUpdateSig, else the key's previous record counts.
func replayValues(entries []paylogEntry) map[string][]byte {
	newest := map[string][]byte{}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if _, ok := newest[e.key]; ok {
			continue
		}
		if e.unchecked {
			c, err := payment.DecodeChannel(e.value)
			if err != nil || c.ID != e.key || payment.VerifyUpdateSig(c) != nil {
				continue
			}
		}
		newest[e.key] = e.value
	}
	return newest
}

// removeSynced removes path and fsyncs its directory.
func removeSynced(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// createPaylog starts an empty log for db (none is there: Open replayed
// and removed it).
func createPaylog(db *DB) (*paylog, error) {
	l := &paylog{db: db, path: db.path + PaylogSuffix, cur: &paylogBatch{done: make(chan struct{})},
		latest: map[string][]byte{}, pending: map[string]pendingValue{}}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create payment log: %w", err)
	}
	l.f = f
	if err := l.compact(); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(filepath.Dir(l.path)); err != nil {
		f.Close()
		return nil, fmt.Errorf("create payment log: %w", err)
	}
	return l, nil
}

// compact commits the newest logged values into bbolt and starts a new,
// empty epoch (wmu held, or before l is shared).
func (l *paylog) compact() error {
	if len(l.latest) > 0 {
		err := l.db.Update(func(tx *Tx) error {
			for k, v := range l.latest {
				if err := tx.Put(paymentChannels, k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("compact payment log: %w", err)
		}
		if fn := l.db.plHook.Load(); fn != nil {
			if err := (*fn)(); err != nil {
				return fmt.Errorf("compact payment log: %w", err)
			}
		}
		clear(l.latest)
	}
	l.epoch++
	if l.alloc < paylogSize {
		// Preallocate with written zeros (not fallocate's unwritten
		// extents), so that an append is a data-only fdatasync.
		if _, err := l.f.WriteAt(make([]byte, paylogSize-l.alloc), l.alloc); err != nil {
			return fmt.Errorf("payment log: %w", err)
		}
		l.alloc = paylogSize
	}
	if _, err := l.f.WriteAt(encodePaylogHeader(l.epoch), 0); err != nil {
		return fmt.Errorf("payment log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("payment log: %w", err)
	}
	l.pos = paylogHeaderLen
	return nil
}

// put logs key's new value and returns once it is on disk.
func (l *paylog) put(key string, value []byte) error {
	return l.submit(paylogEntry{key: key, value: value})
}

// putChecked logs key's new value while check runs, and returns nil once
// the value is on disk and check passed; it always waits for check. Until
// then (and for good when check fails) the value is not key's: not for
// LoadChannels, not for compaction, not for a replay that finds it does
// not pass payment.VerifyUpdateSig. The caller writes one key at a time
// (the payment manager holds the channel's lock).
func (l *paylog) putChecked(key string, value []byte, check func() error) error {
	checked := make(chan error, 1)
	go func() { checked <- check() }()
	err := l.submit(paylogEntry{key: key, value: value, unchecked: true})
	cerr := <-checked
	l.wmu.Lock()
	p, written := l.pending[key]
	delete(l.pending, key)
	switch {
	case cerr != nil:
		l.wmu.Unlock()
		return cerr
	case err != nil:
		l.wmu.Unlock()
		return err
	case written && p.epoch == l.epoch && l.f != nil:
		l.latest[key] = value
		l.wmu.Unlock()
		return nil
	}
	l.wmu.Unlock()
	// A compaction since the write dropped the record (it commits only
	// checked values): write it again, checked now.
	return l.put(key, value)
}

// submit queues e for the next group write and returns once it is on disk.
func (l *paylog) submit(e paylogEntry) error {
	if len(e.key) == 0 || len(e.key) > 0xffff || 3+len(e.key)+len(e.value) > paylogMaxPayload {
		return fmt.Errorf("payment log: record of %d+%d bytes out of range", len(e.key), len(e.value))
	}
	l.mu.Lock()
	mine := l.cur
	mine.entries = append(mine.entries, e)
	if l.writing {
		l.mu.Unlock()
		<-mine.done
		return mine.err
	}
	l.writing = true
	for len(l.cur.entries) > 0 {
		b := l.cur
		l.cur = &paylogBatch{done: make(chan struct{})}
		l.mu.Unlock()
		b.err = l.write(b.entries)
		close(b.done)
		l.mu.Lock()
	}
	l.writing = false
	l.mu.Unlock()
	return mine.err
}

// write appends entries in one write and fdatasyncs it, compacting first
// when they do not fit in the preallocated space.
func (l *paylog) write(entries []paylogEntry) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.f == nil {
		return errors.New("payment log: closed")
	}
	size := 0
	for _, e := range entries {
		size += paylogRecHdrLen + 3 + len(e.key) + len(e.value)
	}
	if l.pos+int64(size) > paylogSize && l.pos > paylogHeaderLen {
		if err := l.compact(); err != nil {
			return err
		}
	}
	buf := make([]byte, 0, size)
	for _, e := range entries {
		buf = appendPaylogRecord(buf, l.epoch, e)
	}
	if _, err := l.f.WriteAt(buf, l.pos); err != nil {
		return fmt.Errorf("payment log: %w", err)
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("payment log: %w", err)
	}
	l.pos += int64(len(buf))
	l.alloc = max(l.alloc, l.pos)
	for _, e := range entries {
		if e.unchecked {
			l.pending[e.key] = pendingValue{e.value, l.epoch}
		} else {
			l.latest[e.key] = e.value
		}
	}
	return nil
}

// close compacts the log into bbolt, closes it and removes it.
func (l *paylog) close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.compact()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err == nil {
		err = removeSynced(l.path)
	}
	return err
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
