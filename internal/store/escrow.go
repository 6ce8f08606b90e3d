package store

import (
	"fmt"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// paymentEscrows holds escrow records by funding outpoint; created on first
// use, like the channel buckets.
const paymentEscrows = "payment_escrows"

var _ payment.EscrowStore = (*PaymentStore)(nil)

// PutEscrow implements payment.EscrowStore: the record is on disk
// (fsynced) when it returns nil. Escrow changes are rare (a handful per
// escrow), so each commits at once rather than waiting for a batch.
func (s *PaymentStore) PutEscrow(e *payment.EscrowRecord) error {
	b, err := payment.EncodeEscrow(e)
	if err != nil {
		return fmt.Errorf("encode escrow %s: %w", e.ID, err)
	}
	return s.db.Update(func(tx *Tx) error { return tx.Put(paymentEscrows, e.ID, b) })
}

// LoadEscrows implements payment.EscrowStore.
func (s *PaymentStore) LoadEscrows() ([]*payment.EscrowRecord, error) {
	var out []*payment.EscrowRecord
	err := s.db.View(func(tx *Tx) error {
		return tx.ForEach(paymentEscrows, "", func(k string, v []byte) error {
			e, err := payment.DecodeEscrow(v)
			if err != nil {
				return fmt.Errorf("escrow %s: %w", k, err)
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load escrows: %w", err)
	}
	return out, nil
}
