package payment

import (
	"fmt"
	"maps"
	"sync"
)

// MemStore is an in-memory ChannelStore for tests and simulations. It keeps
// encoded records, so what a test reads back went through the same encoding
// as the real store.
type MemStore struct {
	mu       sync.Mutex
	recs     map[string][]byte
	counters map[string]uint32
	// Fail, if set, makes PutChannel fail (tests of "state unchanged").
	Fail error
}

var _ ChannelStore = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{recs: map[string][]byte{}, counters: map[string]uint32{}}
}

// PutChannel implements ChannelStore.
func (s *MemStore) PutChannel(c *Channel) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	b, err := EncodeChannel(c)
	if err != nil {
		return fmt.Errorf("encode channel %s: %w", c.ID, err)
	}
	s.recs[c.ID] = b
	return nil
}

// LoadChannels implements ChannelStore.
func (s *MemStore) LoadChannels() ([]*Channel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Channel
	for _, b := range s.recs {
		c, err := DecodeChannel(b)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// NextIndex implements ChannelStore.
func (s *MemStore) NextIndex(name string) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.counters[name]
	s.counters[name] = v + 1
	return v, nil
}

var _ CounterStore = (*MemStore)(nil)

// Counters implements CounterStore.
func (s *MemStore) Counters() (map[string]uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counters), nil
}

// RaiseIndex implements CounterStore.
func (s *MemStore) RaiseIndex(name string, next uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters[name] = max(s.counters[name], next)
	return nil
}
