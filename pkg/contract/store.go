package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// KV is one transaction over named buckets of byte keys and values. The
// node's internal/store.Tx satisfies it as is. Values returned by Get are the
// caller's; values passed to ForEach's fn are valid only during the call.
type KV interface {
	Get(bucket, key string) []byte
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
}

// Store is where contracts, reservations and seen proposal IDs live.
// Update runs fn in one atomic, serialised read-write transaction: when it
// returns nil the change is durable (fsynced); when fn or the commit fails,
// nothing of it is kept. View runs fn in a read-only transaction. The
// contract code keeps all its rules here, in pkg/contract; a Store only
// stores bytes.
type Store interface {
	Update(fn func(KV) error) error
	View(fn func(KV) error) error
}

// Buckets this package uses. "contracts" and "reservations" exist from the
// node's first schema version; the others are created on first use.
const (
	bucketContracts    = "contracts"
	bucketReservations = "reservations"
	bucketSeen         = "contract_seen"
)

// Errors of admission control.
var (
	ErrCapacity = errors.New("not enough capacity")
	ErrReplayed = errors.New("proposal already seen")
	ErrNotFound = errors.New("contract not found")
)

// Reservation is capacity a contract holds on the seller until Until (the
// funding deadline at first, then the contract's end plus a grace period).
// A reservation past Until no longer counts, so a contract whose funding or
// run timed out cannot hold capacity forever even if nothing released it.
type Reservation struct {
	ID        string          `json:"id"`
	Resources offer.Resources `json:"resources"`
	Until     time.Time       `json:"until"`
}

func reservationsAt(kv KV, now time.Time) (sum offer.Resources, stale []string, err error) {
	err = kv.ForEach(bucketReservations, "", func(k string, v []byte) error {
		var r Reservation
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("reservation %s: %w", k, err)
		}
		if !now.Before(r.Until) {
			stale = append(stale, k)
			return nil
		}
		sum = addRes(sum, r.Resources)
		return nil
	})
	return sum, stale, err
}

func addRes(a, b offer.Resources) offer.Resources {
	return offer.Resources{
		CPUMillis:    a.CPUMillis + b.CPUMillis,
		MemoryBytes:  a.MemoryBytes + b.MemoryBytes,
		DiskBytes:    a.DiskBytes + b.DiskBytes,
		BandwidthBps: a.BandwidthBps + b.BandwidthBps,
	}
}

// fits reports whether held+r stays within capacity in CPU, memory and disk
// (bandwidth is shared, not reserved).
func fits(held, r, capacity offer.Resources) bool {
	t := addRes(held, r)
	return t.CPUMillis <= capacity.CPUMillis && t.MemoryBytes <= capacity.MemoryBytes && t.DiskBytes <= capacity.DiskBytes
}

// admit is admission control, inside one store transaction: refuse a
// proposal ID already seen (ErrReplayed), refuse what does not fit next to
// the reservations still current (ErrCapacity), else record the ID as seen
// until seenUntil and the reservation. Because Update transactions are
// serialised, concurrent proposals can never oversell.
func admit(kv KV, res Reservation, capacity offer.Resources, seenUntil, now time.Time) error {
	if kv.Get(bucketSeen, res.ID) != nil {
		return ErrReplayed
	}
	held, stale, err := reservationsAt(kv, now)
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := kv.Delete(bucketReservations, k); err != nil {
			return err
		}
	}
	if !fits(held, res.Resources, capacity) {
		return ErrCapacity
	}
	if err := putJSON(kv, bucketReservations, res.ID, res); err != nil {
		return err
	}
	return kv.Put(bucketSeen, res.ID, []byte(seenUntil.UTC().Format(time.RFC3339Nano)))
}

// Reserve is admission control as one store transaction (see admit): it
// records res and the proposal ID res.ID as seen until seenUntil, or
// refuses with ErrReplayed or ErrCapacity and changes nothing.
func Reserve(s Store, res Reservation, capacity offer.Resources, seenUntil, now time.Time) error {
	return s.Update(func(kv KV) error { return admit(kv, res, capacity, seenUntil, now) })
}

// pruneSeen forgets proposal IDs whose proposals have expired: they can no
// longer be replayed, since an expired proposal is refused anyway.
func pruneSeen(kv KV, now time.Time) error {
	old, err := expiredSeen(kv, now)
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := kv.Delete(bucketSeen, k); err != nil {
			return err
		}
	}
	return nil
}

// expiredSeen lists the seen proposals whose time is over.
func expiredSeen(kv KV, now time.Time) ([]string, error) {
	var old []string
	err := kv.ForEach(bucketSeen, "", func(k string, v []byte) error {
		t, err := time.Parse(time.RFC3339Nano, string(v))
		if err != nil || !now.Before(t) {
			old = append(old, k)
		}
		return nil
	})
	return old, err
}

func putJSON(kv KV, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return kv.Put(bucket, key, b)
}

// MemStore is an in-memory Store for tests and for nodes that keep nothing.
// Update transactions are serialised and all-or-nothing.
type MemStore struct {
	mu      sync.Mutex
	buckets map[string]map[string][]byte
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{buckets: map[string]map[string][]byte{}} }

type memTx struct {
	b        map[string]map[string][]byte
	writable bool
}

func (t *memTx) Get(bucket, key string) []byte {
	v, ok := t.b[bucket][key]
	if !ok {
		return nil
	}
	return append([]byte(nil), v...)
}

func (t *memTx) Put(bucket, key string, value []byte) error {
	if !t.writable {
		return errors.New("memstore: write in a read-only transaction")
	}
	if t.b[bucket] == nil {
		t.b[bucket] = map[string][]byte{}
	}
	t.b[bucket][key] = append([]byte(nil), value...)
	return nil
}

func (t *memTx) Delete(bucket, key string) error {
	if !t.writable {
		return errors.New("memstore: write in a read-only transaction")
	}
	delete(t.b[bucket], key)
	return nil
}

func (t *memTx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	keys := make([]string, 0, len(t.b[bucket]))
	for k := range t.b[bucket] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, t.b[bucket][k]); err != nil {
			return err
		}
	}
	return nil
}

// Update implements Store: fn works on a copy that replaces the data only
// when fn succeeds.
func (s *MemStore) Update(fn func(KV) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := make(map[string]map[string][]byte, len(s.buckets))
	for k, v := range s.buckets {
		cp[k] = maps.Clone(v)
	}
	if err := fn(&memTx{b: cp, writable: true}); err != nil {
		return err
	}
	s.buckets = cp
	return nil
}

// View implements Store.
func (s *MemStore) View(fn func(KV) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(&memTx{b: s.buckets})
}
