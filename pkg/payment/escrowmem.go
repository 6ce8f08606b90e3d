package payment

import (
	"fmt"
	"sync"
)

// MemEscrowStore is an in-memory EscrowStore for tests and simulations. It
// keeps encoded records, so what a test reads back went through the same
// encoding as the real store; a restart is a new EscrowManager on it.
type MemEscrowStore struct {
	mu       sync.Mutex
	recs     map[string][]byte
	counters map[string]uint32
	// Fail, if set, makes PutEscrow fail (tests of "state unchanged").
	Fail error
}

var _ EscrowStore = (*MemEscrowStore)(nil)

// NewMemEscrowStore returns an empty store.
func NewMemEscrowStore() *MemEscrowStore {
	return &MemEscrowStore{recs: map[string][]byte{}, counters: map[string]uint32{}}
}

// PutEscrow implements EscrowStore.
func (s *MemEscrowStore) PutEscrow(e *EscrowRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	b, err := EncodeEscrow(e)
	if err != nil {
		return fmt.Errorf("encode escrow %s: %w", e.ID, err)
	}
	s.recs[e.ID] = b
	return nil
}

// LoadEscrows implements EscrowStore.
func (s *MemEscrowStore) LoadEscrows() ([]*EscrowRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*EscrowRecord
	for _, b := range s.recs {
		e, err := DecodeEscrow(b)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// NextIndex implements EscrowStore.
func (s *MemEscrowStore) NextIndex(name string) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.counters[name]
	s.counters[name] = v + 1
	return v, nil
}
