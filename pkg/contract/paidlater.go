package contract

import (
	"encoding/json"
	"maps"
	"slices"
)

// LaterStore is a Store that can also commit a change a moment after the
// call (the node's: internal/store's Later commits), for what the payment
// path records beside a payment channel. A channel update is made durable
// by the payment layer before it is sent (buyer) or acknowledged (seller);
// what the contract records of it (Record.Paid and Intervals, the buyer's
// JobStatus.Paid) can be rebuilt from the channels' per-contract totals
// (RaisePaid, at start), so it need not cost a commit of its own on the
// way.
type LaterStore interface {
	Store
	// UpdateLater queues fn for a commit within a moment; a newer fn
	// under the same key replaces a pending one, so fn must set values
	// from its own arguments (raise to a maximum, or write only what is
	// newer), never add to what is stored.
	UpdateLater(key string, fn func(KV) error)
	// FlushLater commits every pending change.
	FlushLater() error
}

// NotePaid records that contract (role, id) paid, or was paid, paid sats
// covering intervals intervals: the record's Paid and Intervals are raised
// to them (never lowered) in whatever state it is. Over a LaterStore the
// change reaches the disk a moment later (RaisePaid restores it after a
// crash); over another Store at once.
func (m *Machine) NotePaid(role Role, id string, paid int64, intervals uint64) error {
	raise := func(kv KV) error {
		r, err := getRecord(kv, role, id)
		if err != nil {
			return err
		}
		if r.Paid >= paid && r.Intervals >= intervals {
			return nil
		}
		r.Paid, r.Intervals, r.Updated = max(r.Paid, paid), max(r.Intervals, intervals), m.now()
		return putJSON(kv, bucketContracts, r.key(), r)
	}
	if ls, ok := m.store.(LaterStore); ok {
		ls.UpdateLater("paid/"+role.prefix()+id, raise)
		return nil
	}
	return m.store.Update(raise)
}

// saveLater is save as a later change (LaterStore), written only over a
// stored job no newer than j (a save made since wins); over another Store
// it is save.
func (b *Buyer) saveLater(j *JobStatus) error {
	ls, ok := b.cfg.Store.(LaterStore)
	if !ok || j.shadow {
		return b.save(j)
	}
	ls.UpdateLater("job/"+j.ID, func(kv KV) error {
		if raw := kv.Get(bucketJobs, j.ID); raw != nil {
			var old JobStatus
			if json.Unmarshal(raw, &old) == nil && old.Updated.After(j.Updated) {
				return nil
			}
		}
		return putJSON(kv, bucketJobs, j.ID, j)
	})
	return nil
}

// updateLater is update whose save is a later change (saveLater): for a
// change that the node's start rebuilds (a payment already durable in its
// channel).
func (b *Buyer) updateLater(j *JobStatus, fn func(*JobStatus)) { b.change(j, fn, true) }

// RaisePaid raises the Paid of role's contract records to totals (by
// contract ID: what the payment channels hold for each, durable before any
// update was sent or acknowledged), in one transaction, and returns the IDs
// of the records it raised. The node runs it at start, before the contract
// engines resume anything, so that a crash that lost a NotePaid leaves
// nothing behind the channels. IDs with no record are skipped.
func RaisePaid(st Store, role Role, totals map[string]int64) ([]string, error) {
	var raised []string
	err := st.Update(func(kv KV) error {
		raised = raised[:0]
		for _, id := range slices.Sorted(maps.Keys(totals)) {
			r, err := getRecord(kv, role, id)
			if err != nil || r.Paid >= totals[id] {
				continue
			}
			r.Paid = totals[id]
			if err := putJSON(kv, bucketContracts, r.key(), r); err != nil {
				return err
			}
			raised = append(raised, id)
		}
		return nil
	})
	return raised, err
}
