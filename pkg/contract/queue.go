package contract

import (
	"context"
	"time"
)

// The proposal queue: a seller whose capacity is all held when a proposal
// comes, but whose running contracts are expected to give some back soon
// (its retry-after within SellerConfig.QueueWait), keeps the proposal for
// at most QueueWait and admits it the moment a contract ends, instead of
// refusing it at once. A refused buyer would come back only after its
// wait, a new search and a new proposal (two store commits on its side),
// leaving the freed slot idle meanwhile: with 20 tiny jobs on 8 slots
// that was 2 refusals a job. The wait is well within a buyer's time for
// an answer (negotiateTimeout), so buyers of any version take it as a
// slow answer. A proposal still refused after the wait gets the usual
// capacity refusal and retry-after.

// maxQueued bounds the proposals waiting at once (each holds a stream and
// a goroutine); the rest are refused at once.
const maxQueued = 32

// DefaultQueueWait is contract.queue_wait's default, and maxQueueWait
// its most: well within the buyer's negotiateTimeout.
const (
	DefaultQueueWait = 5 * time.Second
	maxQueueWait     = 10 * time.Second
)

// wakeLocked tells the proposals waiting that capacity may be free. The
// caller holds h.mu.
func (h *holdStats) wakeLocked() {
	if h.freed != nil {
		close(h.freed)
		h.freed = nil
	}
}

// admitted counts a contract admitted, holding capacity until released
// says it gave it back.
func (h *holdStats) admitted() {
	h.mu.Lock()
	h.holding++
	h.mu.Unlock()
}

// released is a contract's reservation gone (its job ended, it expired or
// failed): the proposals waiting may take the capacity.
func (h *holdStats) released() {
	h.mu.Lock()
	h.holding = max(h.holding-1, 0) // not counted if admitted before a restart
	h.wakeLocked()
	h.mu.Unlock()
}

// enqueue decides whether a proposal refused for capacity may wait up to
// limit for a contract to end: only when contracts have ended before (so
// that how long they hold is known), its turn is expected within limit
// (one release every mean hold divided among the contracts holding
// capacity, and the proposals waiting already go first), and fewer than
// maxQueued wait already. It returns the channel closed at the next
// release and the function that leaves the queue.
func (h *holdStats) enqueue(limit time.Duration) (freed <-chan struct{}, leave func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if limit <= 0 || h.mean == 0 || h.queued >= maxQueued {
		return nil, nil, false
	}
	if h.mean/time.Duration(max(h.holding, h.running, 1))*time.Duration(h.queued+1) > limit {
		return nil, nil, false
	}
	h.queued++
	if h.freed == nil {
		h.freed = make(chan struct{})
	}
	return h.freed, func() {
		h.mu.Lock()
		h.queued--
		h.mu.Unlock()
	}, true
}

// awaitCapacity waits, for a proposal refused for capacity, until a
// contract gives capacity back (true: admit it again) or until deadline,
// ctx's end, or a queue that has no room for it (false: refuse it).
func (s *Seller) awaitCapacity(ctx context.Context, deadline time.Time) bool {
	left := deadline.Sub(s.clock.Now())
	freed, leave, ok := s.holds.enqueue(left)
	if !ok {
		return false
	}
	defer leave()
	select {
	case <-freed:
		return true
	case <-s.clock.After(left):
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	return false
}
