package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// Buckets of the payment subsystem. Put creates them on first use, so they
// need no migration.
const (
	paymentChannels = "payment_channels"
	paymentCounters = "payment_counters"
)

// PaymentStore keeps payment channels in the node's database. PutChannel
// returns nil only once the record is on disk, which is what lets the seller
// acknowledge an update: it is appended to the payment log and fdatasync'd
// (one small write; concurrent PutChannels of different channels share one
// write and one fdatasync), and reaches bbolt when the log is compacted,
// closed, or replayed by the next Open after a crash.
type PaymentStore struct {
	db *DB
}

var _ payment.ChannelStore = (*PaymentStore)(nil)

// NewPaymentStore returns the payment view of db.
func NewPaymentStore(db *DB) *PaymentStore { return &PaymentStore{db: db} }

// PutChannel implements payment.ChannelStore.
func (s *PaymentStore) PutChannel(c *payment.Channel) error {
	b, err := payment.EncodeChannel(c)
	if err != nil {
		return fmt.Errorf("encode channel %s: %w", c.ID, err)
	}
	l, err := s.db.paylog()
	if err != nil {
		return fmt.Errorf("store channel %s: %w", c.ID, err)
	}
	if err := l.put(c.ID, b); err != nil {
		return fmt.Errorf("store channel %s: %w", c.ID, err)
	}
	return nil
}

var _ payment.CompactingStore = (*PaymentStore)(nil)

// OnCompact implements payment.CompactingStore: fn runs before the payment
// log drops values it has committed to bbolt (when it fills, and at Close).
func (s *PaymentStore) OnCompact(fn func() error) { s.db.plHook.Store(&fn) }

// LoadChannels implements payment.ChannelStore: the database's channels,
// each replaced by its newer value in the payment log.
func (s *PaymentStore) LoadChannels() ([]*payment.Channel, error) {
	// The log's writer is held off while bbolt is read, so that no
	// compaction moves a value between the two.
	s.db.plMu.Lock()
	l := s.db.pl
	s.db.plMu.Unlock()
	var newer map[string][]byte
	if l != nil {
		l.wmu.Lock()
		defer l.wmu.Unlock()
		newer = l.latest
	}
	var out []*payment.Channel
	add := func(k string, v []byte) error {
		c, err := payment.DecodeChannel(v)
		if err != nil {
			return fmt.Errorf("channel %s: %w", k, err)
		}
		out = append(out, c)
		return nil
	}
	err := s.db.View(func(tx *Tx) error {
		return tx.ForEach(paymentChannels, "", func(k string, v []byte) error {
			if _, ok := newer[k]; ok {
				return nil
			}
			return add(k, v)
		})
	})
	if err == nil {
		for _, k := range slices.Sorted(maps.Keys(newer)) {
			if err = add(k, newer[k]); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load channels: %w", err)
	}
	return out, nil
}

// NextIndex implements payment.ChannelStore.
func (s *PaymentStore) NextIndex(name string) (uint32, error) {
	var v uint32
	err := s.db.Update(func(tx *Tx) error {
		if raw := tx.Get(paymentCounters, name); len(raw) == 4 {
			v = binary.BigEndian.Uint32(raw)
		}
		return tx.Put(paymentCounters, name, binary.BigEndian.AppendUint32(nil, v+1))
	})
	if err != nil {
		return 0, fmt.Errorf("next %s index: %w", name, err)
	}
	return v, nil
}

var _ payment.CounterStore = (*PaymentStore)(nil)

// Counters implements payment.CounterStore.
func (s *PaymentStore) Counters() (map[string]uint32, error) {
	out := map[string]uint32{}
	err := s.db.View(func(tx *Tx) error {
		return tx.ForEach(paymentCounters, "", func(k string, v []byte) error {
			if len(v) == 4 {
				out[k] = binary.BigEndian.Uint32(v)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load payment counters: %w", err)
	}
	return out, nil
}

// RaiseIndex implements payment.CounterStore.
func (s *PaymentStore) RaiseIndex(name string, next uint32) error {
	err := s.db.Update(func(tx *Tx) error {
		if raw := tx.Get(paymentCounters, name); len(raw) == 4 && binary.BigEndian.Uint32(raw) >= next {
			return nil
		}
		return tx.Put(paymentCounters, name, binary.BigEndian.AppendUint32(nil, next))
	})
	if err != nil {
		return fmt.Errorf("raise %s index: %w", name, err)
	}
	return nil
}

var _ payment.CheckedStore = (*PaymentStore)(nil)

// PutChannelChecked implements payment.CheckedStore: c is appended to the
// payment log, marked unchecked, while check runs; it becomes the channel's
// value once both are done (see paylog.putChecked).
func (s *PaymentStore) PutChannelChecked(c *payment.Channel, check func() error) error {
	b, err := payment.EncodeChannel(c)
	if err != nil {
		return fmt.Errorf("encode channel %s: %w", c.ID, err)
	}
	l, err := s.db.paylog()
	if err != nil {
		return fmt.Errorf("store channel %s: %w", c.ID, err)
	}
	if err := l.putChecked(c.ID, b, check); err != nil {
		return fmt.Errorf("store channel %s: %w", c.ID, err)
	}
	return nil
}
