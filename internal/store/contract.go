package store

import "github.com/blackbox-market/blackbox/pkg/contract"

// ContractStore is the contract subsystem's view of the database: its
// Update is one fsynced bbolt transaction, serialised with every other
// writer, which is what makes admission control atomic across concurrent
// proposals.
type ContractStore struct{ db *DB }

var (
	_ contract.Store = (*ContractStore)(nil)
	_ contract.KV    = (*Tx)(nil)
)

// NewContractStore returns the contract view of db.
func NewContractStore(db *DB) *ContractStore { return &ContractStore{db: db} }

// Update implements contract.Store.
func (s *ContractStore) Update(fn func(contract.KV) error) error {
	return s.db.Update(func(tx *Tx) error { return fn(tx) })
}

// View implements contract.Store.
func (s *ContractStore) View(fn func(contract.KV) error) error {
	return s.db.View(func(tx *Tx) error { return fn(tx) })
}
