package payment

import "sync"

// records is a table of persisted records by ID with one lock per record,
// shared by the channel and escrow managers. A record's lock is held from
// the check of its current value through signing, verification and
// persistence to the adoption of the next one, so one record's changes are
// strictly ordered while other records' proceed (and their fsyncs can share
// a group commit). The table's own mutex guards only the map and each
// adoption; it is never held across signing, the store or the chain.
// Order: a record's lock, then the table's; never two records' locks.
type records[R, X any] struct {
	mu   sync.Mutex
	rows map[string]*row[R, X]
}

// row is one record. rec is the latest persisted value, nil while the
// first is being persisted; it is never modified in place (a change is a
// copy, persisted, then adopted) and is written with both locks held, so it
// may be read with either. x is per-record state kept under mu (caches).
type row[R, X any] struct {
	mu  sync.Mutex
	rec *R
	x   X
}

func newRecords[R, X any]() *records[R, X] {
	return &records[R, X]{rows: map[string]*row[R, X]{}}
}

// load adds a record read from the store, before the table is shared.
func (t *records[R, X]) load(id string, rec *R) { t.rows[id] = &row[R, X]{rec: rec} }

// lock returns id's row with its lock held and its current record, or nil
// when there is no such record. The caller unlocks r.mu.
func (t *records[R, X]) lock(id string) (*row[R, X], *R) {
	t.mu.Lock()
	r := t.rows[id]
	t.mu.Unlock()
	if r == nil {
		return nil, nil
	}
	r.mu.Lock()
	if r.rec == nil {
		r.mu.Unlock()
		return nil, nil
	}
	return r, r.rec
}

// create returns the row of a record about to be created, its lock held;
// the caller persists the first record (or finds one already there) and
// unlocks. A row whose first persist failed stays with a nil record,
// invisible to everything but the next create of the same ID.
func (t *records[R, X]) create(id string) *row[R, X] {
	t.mu.Lock()
	r := t.rows[id]
	if r == nil {
		r = &row[R, X]{}
		t.rows[id] = r
	}
	t.mu.Unlock()
	r.mu.Lock()
	return r
}

// get returns id's current record (read-only) or nil.
func (t *records[R, X]) get(id string) *R {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.rows[id]; r != nil {
		return r.rec
	}
	return nil
}

// adopt makes rec, just persisted, r's current record (r.mu held).
func (t *records[R, X]) adopt(r *row[R, X], rec *R) {
	t.mu.Lock()
	r.rec = rec
	t.mu.Unlock()
}

// each calls fn for every record under the table's mutex; fn must be quick
// and must not call back into the table.
func (t *records[R, X]) each(fn func(id string, rec *R)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, r := range t.rows {
		if r.rec != nil {
			fn(id, r.rec)
		}
	}
}
