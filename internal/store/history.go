package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"
)

// The seller's history: what the node earned, paid in fees, sold and refused,
// in buckets of HistoryStep, kept for HistoryKeep. `blackbox earnings`,
// `status` and the dashboard read it.
//
// Two bbolt buckets (created on first use, so they need no migration):
//   - history: key the bucket's start (8 bytes, big-endian unix seconds),
//     value a HistoryBucket in the compact encoding below.
//   - history_contracts: key a contract ID, value the acknowledged payments
//     of that contract by bucket (a ContractHistory), so that what was
//     earned in a window can be split into settled, in channels and pending
//     by the channel and the contract it was paid in.
//
// Money is recorded in the same transaction that makes it idempotent: a
// payment is recorded as the contract's new cumulative amount, and only the
// increase over what is already recorded is added, so recording the same
// acknowledged update twice (a retry, a restart) counts it once.
const (
	historyBuckets   = "history"
	historyContracts = "history_contracts"
)

// HistoryStep is the width of a history bucket.
const HistoryStep = 5 * time.Minute

// HistoryKeep is how long history is kept; Prune drops what is older.
const HistoryKeep = 90 * 24 * time.Hour

// Limits of the decoder: a record that claims more is refused as corrupt.
const (
	maxHistoryNames   = 64
	maxHistoryName    = 64
	maxContractPoints = 1 << 16
)

const historyVersion = 1

// ErrCorruptHistory is returned when a stored history record does not decode.
var ErrCorruptHistory = errors.New("store: corrupt history record")

// HistoryBucket is one bucket of the history. Capacity fields are sums over
// Samples capacity samples (divide by Samples for the bucket's average).
type HistoryBucket struct {
	Start     time.Time
	EarnedSat int64
	FeesSat   int64
	Jobs      int64
	Contracts map[string]int64 // by outcome name
	Refusals  map[string]int64 // by reason name

	Samples                                  int64
	SpareMilliCPU, SoldMilliCPU, ResMilliCPU int64
	SpareMemory, SoldMemory, ResMemory       int64
}

// CapacitySample is one measurement (or the sum of several) of what was
// spare, sold (held by contracts) and reserved (kept by the operator's
// policy).
type CapacitySample struct {
	SpareMilliCPU, SoldMilliCPU, ResMilliCPU int64
	SpareMemory, SoldMemory, ResMemory       int64
}

// Add adds o to s.
func (s *CapacitySample) Add(o CapacitySample) {
	s.SpareMilliCPU += max(o.SpareMilliCPU, 0)
	s.SoldMilliCPU += max(o.SoldMilliCPU, 0)
	s.ResMilliCPU += max(o.ResMilliCPU, 0)
	s.SpareMemory += max(o.SpareMemory, 0)
	s.SoldMemory += max(o.SoldMemory, 0)
	s.ResMemory += max(o.ResMemory, 0)
}

// BucketStart is the start of the bucket holding t.
func BucketStart(t time.Time) time.Time {
	return time.Unix(t.Unix()-mod(t.Unix(), int64(HistoryStep/time.Second)), 0).UTC()
}

func mod(a, b int64) int64 { return ((a % b) + b) % b }

func bucketKey(t time.Time) string {
	return string(binary.BigEndian.AppendUint64(nil, uint64(BucketStart(t).Unix())))
}

// EncodeHistoryBucket is the stored form: a version byte, then uvarints
// (earned, fees, jobs, samples, the six capacity sums) and two name→count
// maps, each a count followed by (length, name, count) in name order.
func EncodeHistoryBucket(b *HistoryBucket) []byte {
	out := []byte{historyVersion}
	for _, v := range []int64{b.EarnedSat, b.FeesSat, b.Jobs, b.Samples,
		b.SpareMilliCPU, b.SoldMilliCPU, b.ResMilliCPU, b.SpareMemory, b.SoldMemory, b.ResMemory} {
		out = binary.AppendUvarint(out, uint64(max(v, 0)))
	}
	for _, m := range []map[string]int64{b.Contracts, b.Refusals} {
		names := slices.Sorted(maps.Keys(m))
		out = binary.AppendUvarint(out, uint64(len(names)))
		for _, k := range names {
			out = binary.AppendUvarint(out, uint64(len(k)))
			out = append(out, k...)
			out = binary.AppendUvarint(out, uint64(max(m[k], 0)))
		}
	}
	return out
}

// DecodeHistoryBucket reads what EncodeHistoryBucket wrote (Start is the
// key's, not the value's). It refuses anything malformed or beyond the
// decoder's limits instead of guessing.
func DecodeHistoryBucket(raw []byte) (*HistoryBucket, error) {
	r := reader{b: raw}
	if v := r.byte(); v != historyVersion {
		return nil, fmt.Errorf("%w: version %d", ErrCorruptHistory, v)
	}
	b := &HistoryBucket{}
	for _, p := range []*int64{&b.EarnedSat, &b.FeesSat, &b.Jobs, &b.Samples,
		&b.SpareMilliCPU, &b.SoldMilliCPU, &b.ResMilliCPU, &b.SpareMemory, &b.SoldMemory, &b.ResMemory} {
		*p = r.int()
	}
	for _, m := range []*map[string]int64{&b.Contracts, &b.Refusals} {
		n := r.uvarint()
		if n > maxHistoryNames {
			return nil, fmt.Errorf("%w: %d names", ErrCorruptHistory, n)
		}
		for range n {
			l := r.uvarint()
			if l == 0 || l > maxHistoryName {
				return nil, fmt.Errorf("%w: name of %d bytes", ErrCorruptHistory, l)
			}
			name := string(r.bytes(int(l)))
			v := r.int()
			if r.err != nil {
				break
			}
			if *m == nil {
				*m = map[string]int64{}
			}
			if _, dup := (*m)[name]; dup {
				return nil, fmt.Errorf("%w: name %q twice", ErrCorruptHistory, name)
			}
			(*m)[name] = v
		}
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptHistory, r.err)
	}
	return b, nil
}

// ContractHistory is what a contract's buyer paid and when: the cumulative
// amount acknowledged, the increase by bucket, and whether the contract has
// ended (no longer pending).
type ContractHistory struct {
	Cumulative int64
	Ended      bool
	// Last is the last time the record changed (it is pruned after
	// HistoryKeep).
	Last time.Time
	// Points are the bucket starts and the sats acknowledged in each, oldest
	// first.
	Points []ContractPoint
}

// ContractPoint is what a contract earned in one bucket.
type ContractPoint struct {
	Start time.Time
	Sat   int64
}

// EncodeContractHistory is the stored form: a version byte, flags (bit 0:
// ended), uvarints cumulative, last (unix seconds), the number of points and
// each point as (bucket index delta from the previous, sats). Bucket indexes
// count HistoryStep from the epoch.
func EncodeContractHistory(c *ContractHistory) []byte {
	out := []byte{historyVersion, 0}
	if c.Ended {
		out[1] = 1
	}
	out = binary.AppendUvarint(out, uint64(max(c.Cumulative, 0)))
	out = binary.AppendUvarint(out, uint64(max(c.Last.Unix(), 0)))
	out = binary.AppendUvarint(out, uint64(len(c.Points)))
	var prev int64
	for _, p := range c.Points {
		i := p.Start.Unix() / int64(HistoryStep/time.Second)
		out = binary.AppendUvarint(out, uint64(max(i-prev, 0)))
		out = binary.AppendUvarint(out, uint64(max(p.Sat, 0)))
		prev = max(i, prev)
	}
	return out
}

// DecodeContractHistory reads what EncodeContractHistory wrote.
func DecodeContractHistory(raw []byte) (*ContractHistory, error) {
	r := reader{b: raw}
	if v := r.byte(); v != historyVersion {
		return nil, fmt.Errorf("%w: version %d", ErrCorruptHistory, v)
	}
	flags := r.byte()
	if flags > 1 {
		return nil, fmt.Errorf("%w: flags %#x", ErrCorruptHistory, flags)
	}
	c := &ContractHistory{Ended: flags == 1, Cumulative: r.int()}
	c.Last = time.Unix(r.int(), 0).UTC()
	n := r.uvarint()
	if n > maxContractPoints {
		return nil, fmt.Errorf("%w: %d points", ErrCorruptHistory, n)
	}
	step := int64(HistoryStep / time.Second)
	var idx int64
	for range n {
		d := r.int()
		if d > (1<<62)/step-idx {
			r.fail("bucket index out of range")
		}
		idx += d
		sat := r.int()
		if r.err != nil {
			break
		}
		c.Points = append(c.Points, ContractPoint{Start: time.Unix(idx*step, 0).UTC(), Sat: sat})
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptHistory, r.err)
	}
	return c, nil
}

// reader consumes a byte slice; the first error sticks and later reads
// return zero.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(why string) {
	if r.err == nil {
		r.err = errors.New(why)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// int reads a uvarint that must fit a non-negative int64.
func (r *reader) int() int64 {
	v := r.uvarint()
	if v > 1<<62 {
		r.fail("number out of range")
		return 0
	}
	return int64(v)
}

func (r *reader) bytes(n int) []byte {
	if n > len(r.b) {
		r.fail("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// HistoryStore keeps the node's history in its database. Every Record call
// returns nil only once the change is on disk (fsynced).
type HistoryStore struct {
	db *DB
	// inflight counts RecordPayments under way: concurrent ones share a
	// commit (DB.Batch), a lone one commits at once.
	inflight atomic.Int32
	// began: the history holds a record (RecordPaymentLater).
	began atomic.Bool
}

// NewHistoryStore returns the history view of db.
func NewHistoryStore(db *DB) *HistoryStore { return &HistoryStore{db: db} }

// changeBucket applies fn to the bucket holding at, in one transaction with
// whatever else tx does.
func changeBucket(tx *Tx, at time.Time, fn func(b *HistoryBucket)) error {
	key := bucketKey(at)
	b := &HistoryBucket{}
	if raw := tx.Get(historyBuckets, key); raw != nil {
		var err error
		if b, err = DecodeHistoryBucket(raw); err != nil {
			// A damaged bucket is history, not money: start it again
			// rather than refuse every later record into it.
			b = &HistoryBucket{}
		}
	}
	fn(b)
	return tx.Put(historyBuckets, key, EncodeHistoryBucket(b))
}

func (h *HistoryStore) update(what string, fn func(tx *Tx) error) error {
	if err := h.db.Update(fn); err != nil {
		return fmt.Errorf("record %s in history: %w", what, err)
	}
	return nil
}

// RecordPayment records that the seller acknowledged payments for contract
// id adding up to cumulative sats. Only the increase over what was recorded
// before counts (at at's bucket); it returns that increase. It returns once
// the record is on disk, so the caller may acknowledge after.
func (h *HistoryStore) RecordPayment(at time.Time, id string, cumulative int64) (int64, error) {
	var delta int64
	commit := h.db.Update
	if h.inflight.Add(1) > 1 {
		commit = h.db.Batch
	}
	defer h.inflight.Add(-1)
	// Idempotent, as Batch requires: the increase is computed again from
	// what is stored on every run.
	err := commit(func(tx *Tx) error {
		delta = paymentIncrease(tx, id, cumulative)
		return putPayment(tx, at, id, cumulative)
	})
	if err != nil {
		return 0, fmt.Errorf("record payment in history: %w", err)
	}
	return delta, nil
}

// paymentIncrease is the increase RecordPayment records: cumulative over
// what is stored for id (0 when not more).
func paymentIncrease(tx *Tx, id string, cumulative int64) int64 {
	return max(cumulative-getContract(tx, id).Cumulative, 0)
}

// putPayment raises id's recorded cumulative payment to cumulative (at
// at's bucket), in tx; nothing when it is not more than recorded.
func putPayment(tx *Tx, at time.Time, id string, cumulative int64) error {
	c := getContract(tx, id)
	if cumulative <= c.Cumulative {
		return nil
	}
	delta := cumulative - c.Cumulative
	c.Cumulative = cumulative
	if at.After(c.Last) {
		c.Last = at
	}
	start := BucketStart(at)
	if n := len(c.Points); n > 0 && !c.Points[n-1].Start.Before(start) {
		c.Points[n-1].Sat += delta
	} else if n < maxContractPoints {
		c.Points = append(c.Points, ContractPoint{Start: start, Sat: delta})
	} else {
		c.Points[n-1].Sat += delta
	}
	if err := tx.Put(historyContracts, id, EncodeContractHistory(c)); err != nil {
		return err
	}
	return changeBucket(tx, at, func(b *HistoryBucket) { b.EarnedSat += delta })
}

func getContract(tx *Tx, id string) *ContractHistory {
	if raw := tx.Get(historyContracts, id); raw != nil {
		if c, err := DecodeContractHistory(raw); err == nil {
			return c
		}
	}
	return &ContractHistory{}
}

// RecordOutcome counts a contract's outcome (completed, failed, rejected,
// expired, refunded, disputed) and marks its payments as no longer pending.
func (h *HistoryStore) RecordOutcome(at time.Time, id, outcome string) error {
	return h.update("contract outcome", func(tx *Tx) error {
		c := getContract(tx, id)
		// A contract that never ran is never paid: no record for it.
		ran := c.Cumulative > 0 || outcome == "completed" || outcome == "failed"
		if !c.Ended && ran {
			c.Ended = true
			if at.After(c.Last) {
				c.Last = at
			}
			if err := tx.Put(historyContracts, id, EncodeContractHistory(c)); err != nil {
				return err
			}
		}
		return changeBucket(tx, at, func(b *HistoryBucket) { addName(&b.Contracts, outcome, 1) })
	})
}

// RecordJob counts a job that started to run.
func (h *HistoryStore) RecordJob(at time.Time) error {
	return h.update("job", func(tx *Tx) error {
		return changeBucket(tx, at, func(b *HistoryBucket) { b.Jobs++ })
	})
}

// RecordFee adds sats this node paid in fees (closes, funding, refunds).
func (h *HistoryStore) RecordFee(at time.Time, sat int64) error {
	if sat <= 0 {
		return nil
	}
	return h.update("fee", func(tx *Tx) error {
		return changeBucket(tx, at, func(b *HistoryBucket) { b.FeesSat += sat })
	})
}

// RecordRefusals adds proposals refused, by reason.
func (h *HistoryStore) RecordRefusals(at time.Time, by map[string]int64) error {
	if len(by) == 0 {
		return nil
	}
	return h.update("refusals", func(tx *Tx) error {
		return changeBucket(tx, at, func(b *HistoryBucket) {
			for k, v := range by {
				addName(&b.Refusals, k, v)
			}
		})
	})
}

// RecordCapacity adds n capacity samples whose sums are s.
func (h *HistoryStore) RecordCapacity(at time.Time, s CapacitySample, n int64) error {
	if n <= 0 {
		return nil
	}
	return h.update("capacity samples", func(tx *Tx) error {
		return changeBucket(tx, at, func(b *HistoryBucket) {
			b.Samples += n
			b.SpareMilliCPU += s.SpareMilliCPU
			b.SoldMilliCPU += s.SoldMilliCPU
			b.ResMilliCPU += s.ResMilliCPU
			b.SpareMemory += s.SpareMemory
			b.SoldMemory += s.SoldMemory
			b.ResMemory += s.ResMemory
		})
	})
}

// addName adds v to m[name]; names are cut to what the decoder accepts, and
// a map that is full folds new names into "other".
func addName(m *map[string]int64, name string, v int64) {
	if *m == nil {
		*m = map[string]int64{}
	}
	if name == "" {
		name = "unknown"
	}
	if len(name) > maxHistoryName {
		name = name[:maxHistoryName]
	}
	if _, ok := (*m)[name]; !ok && len(*m) >= maxHistoryNames-1 {
		name = "other"
	}
	(*m)[name] += v
}

// Buckets returns the buckets that start in [from, to), oldest first; a
// bucket that does not decode is skipped.
func (h *HistoryStore) Buckets(from, to time.Time) ([]HistoryBucket, error) {
	h.flushLater()
	var out []HistoryBucket
	if n := to.Sub(from) / HistoryStep; n > 0 && n <= HistoryKeep/HistoryStep+1 {
		out = make([]HistoryBucket, 0, n+1)
	}
	lo := bucketKey(from)
	hi := string(binary.BigEndian.AppendUint64(nil, uint64(max(to.Unix(), 0))))
	err := h.db.View(func(tx *Tx) error {
		return tx.Range(historyBuckets, lo, hi, func(k string, v []byte) error {
			b, err := DecodeHistoryBucket(v)
			if err != nil {
				return nil
			}
			b.Start = time.Unix(int64(binary.BigEndian.Uint64([]byte(k))), 0).UTC()
			out = append(out, *b)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

// Contracts returns the payment history of the given contracts (absent ones
// are left out).
func (h *HistoryStore) Contracts(ids []string) (map[string]*ContractHistory, error) {
	h.flushLater()
	out := map[string]*ContractHistory{}
	err := h.db.View(func(tx *Tx) error {
		for _, id := range ids {
			if raw := tx.Get(historyContracts, id); raw != nil {
				if c, err := DecodeContractHistory(raw); err == nil {
					out[id] = c
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read contract history: %w", err)
	}
	return out, nil
}

// Prune drops the buckets that start before before and the contract records
// last changed before it. It returns how many records it dropped.
func (h *HistoryStore) Prune(before time.Time) (int, error) {
	n := 0
	err := h.update("pruning", func(tx *Tx) error {
		n = 0
		var old []string
		if err := tx.Range(historyBuckets, "", bucketKey(before), func(k string, _ []byte) error {
			old = append(old, k)
			return nil
		}); err != nil {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(historyBuckets, k); err != nil {
				return err
			}
		}
		n += len(old)
		old = old[:0]
		if err := tx.ForEach(historyContracts, "", func(k string, v []byte) error {
			c, err := DecodeContractHistory(v)
			if err != nil || c.Last.Before(before) {
				old = append(old, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(historyContracts, k); err != nil {
				return err
			}
		}
		n += len(old)
		return nil
	})
	return n, err
}

// Import writes whole buckets and contract records in one transaction,
// replacing what is stored under the same keys (to move a history between
// databases, and to fill one for benchmarks).
func (h *HistoryStore) Import(buckets []HistoryBucket, contracts map[string]*ContractHistory) error {
	return h.update("import", func(tx *Tx) error {
		for i := range buckets {
			if err := tx.Put(historyBuckets, bucketKey(buckets[i].Start), EncodeHistoryBucket(&buckets[i])); err != nil {
				return err
			}
		}
		for id, c := range contracts {
			if err := tx.Put(historyContracts, id, EncodeContractHistory(c)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Oldest is the start of the oldest bucket kept (false: no history yet).
func (h *HistoryStore) Oldest() (time.Time, bool, error) {
	h.flushLater()
	var (
		at time.Time
		ok bool
	)
	err := h.db.View(func(tx *Tx) error {
		return tx.Range(historyBuckets, "", "", func(k string, _ []byte) error {
			if len(k) == 8 {
				at, ok = time.Unix(int64(binary.BigEndian.Uint64([]byte(k))), 0).UTC(), true
			}
			return errStop
		})
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read history: %w", err)
	}
	return at, ok, nil
}

var errStop = errors.New("stop")
