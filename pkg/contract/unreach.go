package contract

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The sellers a buyer could not reach outlive its restarts: they are kept
// in the buyer's store, one entry per seller, the key the seller's peer ID
// bytes, the value until when it is ranked last, as 8 bytes of big-endian
// Unix nanoseconds. The bucket is bounded: expired entries are dropped when
// it is loaded and whenever it is written, and at most maxUnreachKept are
// kept, the soonest to expire evicted first. An entry that does not decode
// is skipped (and dropped) with a log line, never fatal: forgetting that a
// seller was unreachable costs one more try of it, nothing else.

// bucketUnreach holds the sellers found unreachable (created on first use).
const bucketUnreach = "contract_unreachable"

// maxUnreachKept bounds the sellers remembered as unreachable.
const maxUnreachKept = 1024

// encodeUnreach is the stored value for an entry ranked last until until.
func encodeUnreach(until time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano()))
}

// decodeUnreach reads one stored entry: the seller from its key, until
// when from its value.
func decodeUnreach(key string, v []byte) (peer.ID, time.Time, error) {
	p, err := peer.IDFromBytes([]byte(key))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("unreachable seller entry %x: key: %w", key, err)
	}
	if len(v) != 8 {
		return "", time.Time{}, fmt.Errorf("unreachable seller entry %s: value is %d bytes, want 8", p, len(v))
	}
	n := int64(binary.BigEndian.Uint64(v))
	if n <= 0 {
		return "", time.Time{}, fmt.Errorf("unreachable seller entry %s: expiry %d is not a time", p, n)
	}
	return p, time.Unix(0, n), nil
}

// pruneUnreach drops the entries that expired by now or do not decode, then
// the soonest to expire beyond maxUnreachKept, and returns those kept.
func pruneUnreach(kv KV, now time.Time, log func(error)) (map[peer.ID]time.Time, error) {
	type entry struct {
		key   string
		until time.Time
	}
	var drop []string
	var keep []entry
	err := kv.ForEach(bucketUnreach, "", func(k string, v []byte) error {
		_, until, err := decodeUnreach(k, v)
		switch {
		case err != nil:
			log(err)
			drop = append(drop, k)
		case !now.Before(until):
			drop = append(drop, k)
		default:
			keep = append(keep, entry{k, until})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(keep) > maxUnreachKept {
		sort.SliceStable(keep, func(i, j int) bool { return keep[i].until.Before(keep[j].until) })
		for _, e := range keep[:len(keep)-maxUnreachKept] {
			drop = append(drop, e.key)
		}
		keep = keep[len(keep)-maxUnreachKept:]
	}
	for _, k := range drop {
		if err := kv.Delete(bucketUnreach, k); err != nil {
			return nil, err
		}
	}
	out := make(map[peer.ID]time.Time, len(keep))
	for _, e := range keep {
		out[peer.ID(e.key)] = e.until
	}
	return out, nil
}

// loadUnreachable restores the sellers a previous run found unreachable and
// that are still ranked last (called by Start).
func (b *Buyer) loadUnreachable() error {
	var kept map[peer.ID]time.Time
	err := b.cfg.Store.Update(func(kv KV) error {
		var err error
		kept, err = pruneUnreach(kv, b.clock.Now(), b.skipUnreach)
		return err
	})
	if err != nil {
		return fmt.Errorf("load unreachable sellers: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, until := range kept {
		if until.After(b.unreach[p]) {
			b.unreach[p] = until
		}
	}
	return nil
}

// saveUnreachable stores that p is ranked last until until, pruning the
// bucket. A store that fails costs the memory of it across a restart only:
// logged, not returned.
func (b *Buyer) saveUnreachable(p peer.ID, until time.Time) {
	if p == "" {
		return
	}
	err := b.cfg.Store.Update(func(kv KV) error {
		if err := kv.Put(bucketUnreach, string(p), encodeUnreach(until)); err != nil {
			return err
		}
		_, err := pruneUnreach(kv, b.clock.Now(), b.skipUnreach)
		return err
	})
	if err != nil {
		b.log.Warn("could not store the unreachable seller; it is remembered until a restart only", "peer", p, "err", err)
	}
}

// skipUnreach logs an entry of the bucket that does not decode.
func (b *Buyer) skipUnreach(err error) {
	b.log.Warn("skipping a stored unreachable seller that does not decode; dropped", "err", err)
}
