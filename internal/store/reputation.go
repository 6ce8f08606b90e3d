package store

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/blackbox-market/blackbox/pkg/reputation"
)

// Buckets of the reputation subsystem. Put creates them on first use, so
// they need no migration.
const (
	reputationObservations = "reputation_observations"
	reputationRecords      = "reputation_records"
	reputationEdges        = "reputation_edges"
)

// ReputationStore keeps the reputation Book's observations, accepted signed
// records and this node's explicit trust edges in the node's database.
type ReputationStore struct{ db *DB }

var _ reputation.Store = (*ReputationStore)(nil)

// NewReputationStore returns the reputation view of db.
func NewReputationStore(db *DB) *ReputationStore { return &ReputationStore{db: db} }

// AppendObservation implements reputation.Store. Keys sort by time, so Load
// replays observations in order.
func (s *ReputationStore) AppendObservation(o reputation.Observation) error {
	key := fmt.Sprintf("%020d/%s/%s/%d", o.At.UnixNano(), o.Peer, o.ContractID, o.Outcome)
	return s.db.Update(func(tx *Tx) error {
		return tx.Put(reputationObservations, key, reputation.MarshalObservation(o))
	})
}

// PutRecord implements reputation.Store.
func (s *ReputationStore) PutRecord(key string, envelope []byte) error {
	return s.db.Update(func(tx *Tx) error { return tx.Put(reputationRecords, key, envelope) })
}

// PutEdge implements reputation.Store.
func (s *ReputationStore) PutEdge(e reputation.Edge) error {
	return s.db.Update(func(tx *Tx) error { return tx.Put(reputationEdges, string(e.To), reputation.MarshalEdge(e)) })
}

// DeleteEdge implements reputation.Store.
func (s *ReputationStore) DeleteEdge(to peer.ID) error {
	return s.db.Update(func(tx *Tx) error { return tx.Delete(reputationEdges, string(to)) })
}

// Load implements reputation.Store.
func (s *ReputationStore) Load() (reputation.Snapshot, error) {
	var snap reputation.Snapshot
	err := s.db.View(func(tx *Tx) error {
		if err := tx.ForEach(reputationObservations, "", func(k string, v []byte) error {
			o, err := reputation.UnmarshalObservation(v)
			if err != nil {
				return fmt.Errorf("observation %s: %w", k, err)
			}
			snap.Observations = append(snap.Observations, o)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.ForEach(reputationRecords, "", func(_ string, v []byte) error {
			snap.Records = append(snap.Records, append([]byte(nil), v...))
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEach(reputationEdges, "", func(k string, v []byte) error {
			e, err := reputation.UnmarshalEdge(v)
			if err != nil {
				return fmt.Errorf("trust edge %s: %w", k, err)
			}
			snap.Edges = append(snap.Edges, e)
			return nil
		})
	})
	if err != nil {
		return reputation.Snapshot{}, fmt.Errorf("load reputation: %w", err)
	}
	return snap, nil
}
