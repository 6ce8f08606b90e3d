package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
)

// Later commits: changes that may reach the disk a moment after the call,
// because what they record can be rebuilt from something already durable.
// The payment path uses them for what it records beside the channel: the
// seller's earnings history (rebuilt at start from the channels' per-contract
// totals, node history.reconcile) and a contract's Paid/Intervals (raised at
// start to the channels' totals, node rebuildPaid). So an acknowledged
// payment costs the payment log's one fdatasync, not that plus a bbolt
// commit (two fdatasyncs) per side.
//
// Each change has a key; a newer change under the same key replaces the
// pending one, so fn must set what it sets from its own arguments (an
// absolute value or a raise to a maximum), never add to what is stored.
// Pending changes are committed together in one transaction within
// LaterDelay, by FlushLater, and by Close. A kill -9 loses at most the
// changes of the last LaterDelay.

// LaterDelay bounds how long a Later change waits for its commit.
const LaterDelay = 250 * time.Millisecond

// laterQueue is the pending Later changes of a DB.
type laterQueue struct {
	mu    sync.Mutex
	fns   map[string]func(*Tx) error
	order []string // keys in the order of their first pending change
	timer *time.Timer
	delay time.Duration // 0: LaterDelay
	// flush is held by one commit at a time, so that a FlushLater
	// returns only once every change queued before it is committed.
	flush sync.Mutex
}

// Later queues fn under key for a commit within LaterDelay (see the
// package's Later commits): fn replaces a pending change under the same key.
// fn's error drops fn's change alone (the others commit).
func (db *DB) Later(key string, fn func(tx *Tx) error) {
	q := &db.later
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fns == nil {
		q.fns = map[string]func(*Tx) error{}
	}
	if _, ok := q.fns[key]; !ok {
		q.order = append(q.order, key)
	}
	q.fns[key] = fn
	if q.timer == nil {
		d := q.delay
		if d <= 0 {
			d = LaterDelay
		}
		q.timer = time.AfterFunc(d, func() { _ = db.FlushLater() })
	}
}

// SetLaterDelay sets how long Later changes may wait for their commit
// (LaterDelay by default). Crash tests set it long, so that a kill always
// finds the changes of the last payments pending.
func (db *DB) SetLaterDelay(d time.Duration) {
	db.later.mu.Lock()
	db.later.delay = d
	db.later.mu.Unlock()
}

// FlushLater commits every pending Later change (one transaction) and
// returns once they are on disk.
func (db *DB) FlushLater() error {
	q := &db.later
	q.flush.Lock()
	defer q.flush.Unlock()
	q.mu.Lock()
	fns, order := q.fns, q.order
	q.fns, q.order = nil, nil
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	q.mu.Unlock()
	if len(order) == 0 {
		return nil
	}
	var errs []error
	err := db.Update(func(tx *Tx) error {
		for _, k := range order {
			if err := fns[k](tx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k, err))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit %d later changes: %w", len(order), err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("later changes: %w", errors.Join(errs...))
	}
	return nil
}

// RecordPaymentLater is RecordPayment as a Later change: it returns at
// once and the record reaches the disk within LaterDelay. The seller
// records its earnings so after acknowledging a payment; a kill -9 before
// the commit loses the record, which the node's start rebuilds from the
// channels (the contract's total there is durable before the
// acknowledgement). A history with no record at all (a new node) takes its
// first payment at once, so that the rebuild, which counts only the
// contracts begun since the history's oldest record, finds one.
func (h *HistoryStore) RecordPaymentLater(at time.Time, id string, cumulative int64) error {
	if !h.began.Load() {
		if _, ok, err := h.Oldest(); err == nil && ok {
			h.began.Store(true)
		} else {
			_, err := h.RecordPayment(at, id, cumulative)
			if err == nil {
				h.began.Store(true)
			}
			return err
		}
	}
	h.db.Later("history/payment/"+id, func(tx *Tx) error { return putPayment(tx, at, id, cumulative) })
	return nil
}

// CatchUp records at now, for every contract of held (what the seller's
// open channels hold for it), what it holds beyond the history's record
// of it: what was lost when the node stopped between a payment's
// acknowledgement and the commit of its record (RecordPaymentLater). A
// contract the history has no record of counts only when isNew(id) (begun
// since the history, not from before it). It returns the sats added.
func (h *HistoryStore) CatchUp(now time.Time, held map[string]int64, isNew func(id string) bool) (int64, error) {
	ids := make([]string, 0, len(held))
	for id := range held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	recs, err := h.Contracts(ids)
	if err != nil {
		return 0, err
	}
	var added int64
	for _, id := range ids {
		rec := recs[id]
		if rec != nil && rec.Cumulative >= held[id] || rec == nil && !isNew(id) {
			continue
		}
		d, err := h.RecordPayment(now, id, held[id])
		if err != nil {
			return added, err
		}
		added += d
	}
	return added, nil
}

// flushLater commits the pending Later changes before a read, so that a
// reader sees every payment recorded before it (a failed commit is left
// to the next one: the read goes on with what is on disk).
func (h *HistoryStore) flushLater() { _ = h.db.FlushLater() }

var _ contract.LaterStore = (*ContractStore)(nil)

// UpdateLater implements contract.LaterStore: fn as a Later change.
func (s *ContractStore) UpdateLater(key string, fn func(contract.KV) error) {
	s.db.Later("contract/"+key, func(tx *Tx) error { return fn(tx) })
}

// FlushLater implements contract.LaterStore.
func (s *ContractStore) FlushLater() error { return s.db.FlushLater() }
