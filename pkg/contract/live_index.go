package contract

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The live index: Advance runs every few seconds, and a long-lived
// seller's store holds thousands of finished contracts it need not
// decode. So every record that is not final has an entry in
// bucketLive, under the record's key, holding its deadline (8 bytes, Unix
// nanoseconds big-endian; 0: none), written in the transaction that
// writes the record; a record that becomes final loses its entry. A store
// written before the index has no liveBuilt marker: the first Advance
// builds the index from every record, once.

// bucketLive is the live index's bucket.
const bucketLive = "contract_live"

// liveBuilt is the marker key of a built index ("\x00" sorts before every
// record key, "s/…" and "b/…").
const liveBuilt = "\x00built"

// indexLive keeps r's entry in the live index in step with r.
func indexLive(kv KV, r *Record) error {
	if r.State.Final() {
		return kv.Delete(bucketLive, r.key())
	}
	var v [8]byte
	if !r.Deadline.IsZero() {
		binary.BigEndian.PutUint64(v[:], uint64(r.Deadline.UnixNano()))
	}
	return kv.Put(bucketLive, r.key(), v[:])
}

// buildLive indexes every record, once per store.
func buildLive(kv KV) error {
	if kv.Get(bucketLive, liveBuilt) != nil {
		return nil
	}
	var recs []*Record
	err := kv.ForEach(bucketContracts, "", func(k string, v []byte) error {
		r, err := decodeRecord(k, v)
		if err != nil {
			return err
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := indexLive(kv, r); err != nil {
			return err
		}
	}
	return kv.Put(bucketLive, liveBuilt, []byte{1})
}

// dueKeys returns the keys of the records whose deadline has passed at
// now, in key order, building the index first if the store has none.
func (m *Machine) dueKeys(now time.Time) ([]string, error) {
	built := false
	if err := m.store.View(func(kv KV) error { built = kv.Get(bucketLive, liveBuilt) != nil; return nil }); err != nil {
		return nil, err
	}
	if !built {
		if err := m.store.Update(buildLive); err != nil {
			return nil, fmt.Errorf("index live contracts: %w", err)
		}
	}
	var due []string
	err := m.store.View(func(kv KV) error {
		return kv.ForEach(bucketLive, "", func(k string, v []byte) error {
			if k == liveBuilt {
				return nil
			}
			if len(v) != 8 {
				return fmt.Errorf("live index entry %q: %d bytes", k, len(v))
			}
			d := binary.BigEndian.Uint64(v)
			if d != 0 && !now.Before(time.Unix(0, int64(d))) {
				due = append(due, k)
			}
			return nil
		})
	})
	return due, err
}

// splitKey is a record key's role and ID.
func splitKey(k string) (Role, string, error) {
	switch {
	case strings.HasPrefix(k, RoleSeller.prefix()):
		return RoleSeller, k[len(RoleSeller.prefix()):], nil
	case strings.HasPrefix(k, RoleBuyer.prefix()):
		return RoleBuyer, k[len(RoleBuyer.prefix()):], nil
	}
	return 0, "", errors.New("contract key " + k + ": no role")
}
