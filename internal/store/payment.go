package store

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// Buckets of the payment subsystem. Put creates them on first use, so they
// need no migration.
const (
	paymentChannels = "payment_channels"
	paymentCounters = "payment_counters"
)

// PaymentStore keeps payment channels in the node's database. PutChannel
// returns nil only once the record is on disk (fsynced), which is what lets
// the seller acknowledge an update; concurrent PutChannels of different
// channels share one commit and one fsync (DB.Batch).
type PaymentStore struct {
	db *DB
	// inflight counts PutChannels under way: a lone one commits at once
	// (Update) instead of waiting out the batch delay for company.
	inflight atomic.Int32
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
	// Idempotent (the same bytes under the same key), as Batch requires.
	put := func(tx *Tx) error { return tx.Put(paymentChannels, c.ID, b) }
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if n == 1 {
		// Nobody to share a commit with: Batch would only add bbolt's
		// MaxBatchDelay (10ms) to this update's latency.
		return s.db.Update(put)
	}
	return s.db.Batch(put)
}

// LoadChannels implements payment.ChannelStore.
func (s *PaymentStore) LoadChannels() ([]*payment.Channel, error) {
	var out []*payment.Channel
	err := s.db.View(func(tx *Tx) error {
		return tx.ForEach(paymentChannels, "", func(k string, v []byte) error {
			c, err := payment.DecodeChannel(v)
			if err != nil {
				return fmt.Errorf("channel %s: %w", k, err)
			}
			out = append(out, c)
			return nil
		})
	})
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
