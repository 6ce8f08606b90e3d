package reputation

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
)

// Store persists what the Book learns. The node implements it on its
// database (internal/store); MemStore serves tests and the simulation.
// Every method must be durable when it returns nil.
type Store interface {
	// AppendObservation records one of this node's own observations.
	AppendObservation(Observation) error
	// PutRecord keeps an accepted signed record (attestation or trust
	// statement) under key; a later Put with the same key replaces it.
	PutRecord(key string, envelope []byte) error
	// PutEdge stores one of this node's explicit trust edges (From == Self).
	PutEdge(Edge) error
	// DeleteEdge removes this node's explicit edge to peer; absent is fine.
	DeleteEdge(to peer.ID) error
	// Load returns everything stored, for NewBook.
	Load() (Snapshot, error)
}

// Snapshot is a Store's whole content.
type Snapshot struct {
	Observations []Observation
	Records      [][]byte
	Edges        []Edge
}

// MemStore is an in-memory Store.
type MemStore struct {
	mu      sync.Mutex
	obs     []Observation
	records map[string][]byte
	order   []string
	edges   map[peer.ID]Edge
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{records: map[string][]byte{}, edges: map[peer.ID]Edge{}}
}

// AppendObservation implements Store.
func (m *MemStore) AppendObservation(o Observation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.obs = append(m.obs, o)
	return nil
}

// PutRecord implements Store.
func (m *MemStore) PutRecord(key string, env []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.records[key]; !ok {
		m.order = append(m.order, key)
	}
	m.records[key] = env
	return nil
}

// PutEdge implements Store.
func (m *MemStore) PutEdge(e Edge) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.edges[e.To] = e
	return nil
}

// DeleteEdge implements Store.
func (m *MemStore) DeleteEdge(to peer.ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.edges, to)
	return nil
}

// Load implements Store.
func (m *MemStore) Load() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{Observations: append([]Observation(nil), m.obs...)}
	for _, k := range m.order {
		s.Records = append(s.Records, m.records[k])
	}
	for _, e := range m.edges {
		s.Edges = append(s.Edges, e)
	}
	return s, nil
}

// MarshalObservation encodes o for a Store (deterministic protobuf).
func MarshalObservation(o Observation) []byte {
	var b []byte
	b = appendBytes(b, 1, []byte(o.Peer))
	b = appendBytes(b, 2, []byte(o.ContractID))
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(o.Outcome))
	b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(o.UsageRatio))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(o.At.UnixNano()))
	if o.Reason != "" {
		b = appendBytes(b, 6, []byte(o.Reason))
	}
	return b
}

// UnmarshalObservation decodes what MarshalObservation wrote.
func UnmarshalObservation(data []byte) (Observation, error) {
	var o Observation
	err := decodeFields(data, &observationSchema, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case 1:
			o.Peer = peer.ID(bs)
		case 2:
			o.ContractID = string(bs)
		case 3:
			o.Outcome = Outcome(v)
		case 4:
			o.UsageRatio = math.Float64frombits(v)
		case 5:
			o.At = time.Unix(0, int64(v)).UTC()
		case 6:
			o.Reason = string(bs)
		}
		return nil
	})
	if err != nil {
		return Observation{}, fmt.Errorf("decode observation: %w", err)
	}
	return o, nil
}

// MarshalEdge encodes e for a Store.
func MarshalEdge(e Edge) []byte {
	var b []byte
	b = appendBytes(b, 1, []byte(e.From))
	b = appendBytes(b, 2, []byte(e.To))
	b = protowire.AppendTag(b, 3, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(e.Weight))
	b = protowire.AppendTag(b, 4, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.Updated.UnixNano()))
	return b
}

// UnmarshalEdge decodes what MarshalEdge wrote.
func UnmarshalEdge(data []byte) (Edge, error) {
	var e Edge
	err := decodeFields(data, &edgeSchema, func(num protowire.Number, v uint64, bs []byte) error {
		switch num {
		case 1:
			e.From = peer.ID(bs)
		case 2:
			e.To = peer.ID(bs)
		case 3:
			e.Weight = math.Float64frombits(v)
		case 4:
			e.Updated = time.Unix(0, int64(v)).UTC()
		}
		return nil
	})
	if err != nil {
		return Edge{}, fmt.Errorf("decode edge: %w", err)
	}
	return e, nil
}
