package payment

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"

	"github.com/blackbox-market/blackbox/pkg/atomicfile"
)

// The static channel backup (as lnd's SCB): a file outside the database
// with every channel not yet closed — its parameters and scripts (enough
// for the buyer to refund after expiry, its keys coming from the wallet
// seed) and its latest update with the buyer's signature (enough for the
// seller to close for the latest signed amount) — plus the key counters,
// so a restored node never reuses a key. It is rewritten atomically on
// every change before the change is acknowledged, and survives the loss of
// the database: RestoreChannelBackup rebuilds the channels from it. It holds no
// private key. (With the node's store, a payment reaches the file within
// BackupDelay; until then it is in the database's payment log, beside the
// database, which `blackbox restore` replays: see BackupStore.)

// backupMagic starts a backup file; the line also carries the version and
// the SHA-256 of the JSON body that follows it.
const backupMagic = "blackbox-channel-backup"

// backupVersion is the backup format's version.
const backupVersion = 1

// MaxChannelBackupSize caps a backup file before decoding.
const MaxChannelBackupSize = 64 << 20

// ChannelBackup is the content of a channel backup file.
type ChannelBackup struct {
	Written  time.Time         `json:"written"`
	Channels []*Channel        `json:"channels"`
	Counters map[string]uint32 `json:"counters,omitempty"` // the next value of each NextIndex counter
}

// EncodeChannelBackup serializes b: a header line with the version and checksum,
// then JSON.
func EncodeChannelBackup(b *ChannelBackup) ([]byte, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode channel backup: %w", err)
	}
	sum := sha256.Sum256(body)
	out := fmt.Appendf(nil, "%s %d %s\n", backupMagic, backupVersion, hex.EncodeToString(sum[:]))
	return append(out, body...), nil
}

// DecodeChannelBackup parses and checks a backup file: header, checksum, and
// every channel's fields (a valid funding outpoint, role and state, keys
// that build the channel script, amounts within capacity, the buyer's
// signature where something was paid to us as seller). A failure is
// ErrMalformed.
func DecodeChannelBackup(raw []byte) (*ChannelBackup, error) {
	if len(raw) > MaxChannelBackupSize {
		return nil, fmt.Errorf("channel backup: %w: %d bytes > %d", ErrMalformed, len(raw), MaxChannelBackupSize)
	}
	nl := bytes.IndexByte(raw, '\n')
	if nl < 0 {
		return nil, fmt.Errorf("channel backup: %w: no header", ErrMalformed)
	}
	var (
		magic, sum string
		version    int
	)
	if n, err := fmt.Sscanf(string(raw[:nl]), "%s %d %s", &magic, &version, &sum); n != 3 || err != nil || magic != backupMagic {
		return nil, fmt.Errorf("channel backup: %w: not a blackbox channel backup", ErrMalformed)
	}
	if version != backupVersion {
		return nil, fmt.Errorf("channel backup: %w: version %d, this binary reads %d", ErrMalformed, version, backupVersion)
	}
	body := raw[nl+1:]
	got := sha256.Sum256(body)
	if hex.EncodeToString(got[:]) != sum {
		return nil, fmt.Errorf("channel backup: %w: checksum mismatch (the file is damaged)", ErrMalformed)
	}
	var b ChannelBackup
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("channel backup: %w: %v", ErrMalformed, err)
	}
	seen := map[string]bool{}
	for i, c := range b.Channels {
		if err := checkBackedUp(c); err != nil {
			return nil, fmt.Errorf("channel backup: channel %d: %w: %v", i, ErrMalformed, err)
		}
		if seen[c.ID] {
			return nil, fmt.Errorf("channel backup: %w: channel %s twice", ErrMalformed, c.ID)
		}
		seen[c.ID] = true
	}
	return &b, nil
}

// checkBackedUp checks one channel of a backup.
func checkBackedUp(c *Channel) error {
	if c == nil {
		return errors.New("null channel")
	}
	if _, err := c.Outpoint(); err != nil {
		return err
	}
	if c.Role != RoleBuyer && c.Role != RoleSeller {
		return fmt.Errorf("role %d", c.Role)
	}
	if c.State < StatePending || c.State > StateFailed {
		return fmt.Errorf("state %d", c.State)
	}
	for _, k := range [][]byte{c.BuyerKey, c.SellerKey} {
		if _, err := btcec.ParsePubKey(k); err != nil {
			return fmt.Errorf("key: %v", err)
		}
	}
	if bytes.Equal(c.BuyerKey, c.SellerKey) {
		return errors.New("buyer and seller keys are equal")
	}
	if _, err := c.Script(); err != nil {
		return err
	}
	if c.Capacity <= 0 || c.CloseFee < 0 || c.Paid < 0 || c.Paid > c.Capacity {
		return fmt.Errorf("amounts: capacity %d, close fee %d, paid %d", c.Capacity, c.CloseFee, c.Paid)
	}
	if len(c.SellerScript) == 0 || len(c.SellerScript) > maxScriptLen || len(c.BuyerScript) == 0 || len(c.BuyerScript) > maxScriptLen {
		return errors.New("payout scripts")
	}
	if c.Role == RoleSeller && c.Paid > 0 && len(c.BuyerSig) == 0 {
		return errors.New("paid without the buyer's signature")
	}
	return nil
}

// CounterStore is a ChannelStore whose NextIndex counters can be listed
// and raised, for the backup and restore.
type CounterStore interface {
	ChannelStore
	// Counters returns the next value of every counter.
	Counters() (map[string]uint32, error)
	// RaiseIndex makes sure counter name hands out nothing below next.
	RaiseIndex(name string, next uint32) error
}

// BackupStore is a ChannelStore that keeps the channel backup file up to
// date. A channel that opens, changes state or closes, and every NextIndex,
// reach the file before the call returns. A payment (a new Seq, Paid,
// BuyerSig) does too when inner is a plain store; when inner keeps the
// newest updates in a log of its own outside its database (a
// CompactingStore: the node's store, whose payment log is replayed by the
// next open, `blackbox restore` included), payments reach the file within
// BackupDelay, and always before the log hands them over to the database
// alone (OnCompact): so the latest signed amount is always in the backup
// or the log, and a payment costs no rewrite of the file. Concurrent
// changes share one write of the file.
type BackupStore struct {
	inner CounterStore
	path  string
	// lazy: payments may wait for the timer or inner's compaction.
	lazy bool

	mu       sync.Mutex // guards chans, counters, gen, timer
	chans    map[string]*Channel
	counters map[string]uint32
	gen      uint64 // bumped by every change
	timer    *time.Timer

	wmu     sync.Mutex // one file write at a time
	written uint64     // the gen the file holds
}

// BackupDelay is how long a payment may wait before it is written to the
// backup file, when the store also keeps it in its log (CompactingStore).
const BackupDelay = time.Second

// CompactingStore is a store that holds the newest updates in a log of its
// own beside its database and calls fn before it drops them from the log
// (into the database, or at close); fn's error fails that change.
type CompactingStore interface {
	OnCompact(fn func() error)
}

var _ ChannelStore = (*BackupStore)(nil)

// NewBackupStore wraps inner and writes the backup at path at once (so a
// node upgraded from before backups has one from its first start). An
// existing backup's counters are kept when higher than the store's.
func NewBackupStore(inner CounterStore, path string) (*BackupStore, error) {
	s := &BackupStore{inner: inner, path: path, chans: map[string]*Channel{}, counters: map[string]uint32{}}
	list, err := inner.LoadChannels()
	if err != nil {
		return nil, fmt.Errorf("channel backup: %w", err)
	}
	for _, c := range list {
		s.record(c)
	}
	if s.counters, err = inner.Counters(); err != nil {
		return nil, fmt.Errorf("channel backup: %w", err)
	}
	if raw, err := os.ReadFile(path); err == nil {
		if old, err := DecodeChannelBackup(raw); err == nil {
			for k, v := range old.Counters {
				if v > s.counters[k] {
					s.counters[k] = v
				}
			}
		}
	}
	s.gen = 1
	if err := s.flush(s.gen); err != nil {
		return nil, err
	}
	if cs, ok := inner.(CompactingStore); ok {
		s.lazy = true
		cs.OnCompact(s.Flush)
	}
	return s, nil
}

// Path is the backup file.
func (s *BackupStore) Path() string { return s.path }

// record puts c in the backup's set, or drops it once nothing is left to
// do with it (s.mu held, or before s is shared). It reports whether the
// change is more than a payment: a new channel, a new state, a close.
func (s *BackupStore) record(c *Channel) bool {
	old := s.chans[c.ID]
	// A closed channel whose output waits at a hold key of ours stays
	// until a sweep confirmed (sweep.go): the backup finds that money.
	if c.State == StateClosed && !c.Unswept() || c.State == StateFailed {
		delete(s.chans, c.ID)
		return old != nil
	}
	s.chans[c.ID] = c.clone()
	return old == nil || old.State != c.State || !bytes.Equal(old.SpendTx, c.SpendTx) || old.SpendTxid != c.SpendTxid ||
		sweepTxid(old) != sweepTxid(c)
}

// PutChannel implements ChannelStore.
func (s *BackupStore) PutChannel(c *Channel) error {
	if !s.lazy {
		if err := s.inner.PutChannel(c); err != nil {
			return err
		}
		s.mu.Lock()
		s.record(c)
		s.gen++
		mine := s.gen
		s.mu.Unlock()
		return s.flush(mine)
	}
	// Recorded before inner has it: inner's compaction, which may run
	// inside inner.PutChannel, flushes it with the rest. (Should inner
	// fail, the file may hold a change never acknowledged: a signed
	// update that was not adopted, harmless.)
	s.mu.Lock()
	structural := s.record(c)
	s.gen++
	mine := s.gen
	s.mu.Unlock()
	if err := s.inner.PutChannel(c); err != nil {
		return err
	}
	if structural {
		return s.flush(mine)
	}
	s.armFlush()
	return nil
}

// armFlush makes sure the file is written within BackupDelay.
func (s *BackupStore) armFlush() {
	s.mu.Lock()
	if s.timer == nil {
		s.timer = time.AfterFunc(BackupDelay, func() {
			s.mu.Lock()
			s.timer = nil
			s.mu.Unlock()
			_ = s.Flush() // a failure is retried by the next payment's timer
		})
	}
	s.mu.Unlock()
}

// Flush writes every change so far to the file.
func (s *BackupStore) Flush() error {
	s.mu.Lock()
	mine := s.gen
	s.mu.Unlock()
	return s.flush(mine)
}

// LoadChannels implements ChannelStore.
func (s *BackupStore) LoadChannels() ([]*Channel, error) { return s.inner.LoadChannels() }

// NextIndex implements ChannelStore.
func (s *BackupStore) NextIndex(name string) (uint32, error) {
	v, err := s.inner.NextIndex(name)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.counters[name] = max(s.counters[name], v+1)
	s.gen++
	mine := s.gen
	s.mu.Unlock()
	return v, s.flush(mine)
}

// Counters implements CounterStore.
func (s *BackupStore) Counters() (map[string]uint32, error) { return s.inner.Counters() }

// RaiseIndex implements CounterStore; the file gets the raised counter too.
func (s *BackupStore) RaiseIndex(name string, next uint32) error {
	if err := s.inner.RaiseIndex(name, next); err != nil {
		return err
	}
	s.mu.Lock()
	s.counters[name] = max(s.counters[name], next)
	s.gen++
	mine := s.gen
	s.mu.Unlock()
	return s.flush(mine)
}

// flush makes sure the file holds at least generation mine.
func (s *BackupStore) flush(mine uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.written >= mine {
		return nil // written by another change's flush
	}
	s.mu.Lock()
	gen := s.gen
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	b := &ChannelBackup{Written: time.Now().UTC(), Counters: s.counters, Channels: make([]*Channel, 0, len(s.chans))}
	for _, c := range s.chans {
		b.Channels = append(b.Channels, c)
	}
	slices.SortFunc(b.Channels, func(x, y *Channel) int { return bytesCompare(x.ID, y.ID) })
	raw, err := EncodeChannelBackup(b)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.path, raw, 0o600); err != nil {
		return fmt.Errorf("write channel backup %s: %w", s.path, err)
	}
	s.written = gen
	return nil
}

func bytesCompare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ReadChannelBackup reads and checks the backup file at path.
func ReadChannelBackup(path string) (*ChannelBackup, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read channel backup: %w", err)
	}
	defer f.Close()
	raw, err := readCapped(f, MaxChannelBackupSize)
	if err != nil {
		return nil, fmt.Errorf("read channel backup %s: %w", path, err)
	}
	b, err := DecodeChannelBackup(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

func readCapped(f *os.File, limit int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrMalformed, st.Size(), limit)
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(f)
	return buf.Bytes(), err
}

// RestoreChannelBackup writes every channel of b and its counters into st (a
// fresh database). The channels come back as they were backed up; the
// Manager built on st then advances them against the chain (a seller
// closes for the latest signed amount, a buyer refunds after expiry).
func RestoreChannelBackup(b *ChannelBackup, st CounterStore) error {
	for name, next := range b.Counters {
		if err := st.RaiseIndex(name, next); err != nil {
			return fmt.Errorf("restore counter %s: %w", name, err)
		}
	}
	for _, c := range b.Channels {
		if err := st.PutChannel(c); err != nil {
			return fmt.Errorf("restore channel %s: %w", c.ID, err)
		}
	}
	return nil
}
