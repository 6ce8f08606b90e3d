package contract

import (
	"sync"
	"time"
)

// Retry-after: a seller that refuses a proposal for capacity says when a
// slot is likely free (Decision.RetryAfter), from how long its contracts
// held their capacity lately and how many hold it now; the buyer retries
// its search then instead of after its fixed RetryBackoff. Tiny jobs free
// a slot in a fraction of a second, long ones in minutes.

// Bounds of a retry-after hint.
const (
	minRetryAfter = 100 * time.Millisecond
	maxRetryAfter = 30 * time.Second
	// noHistoryRetryAfter is the hint before any contract ended.
	noHistoryRetryAfter = time.Second
)

// holdStats is how long the seller's contracts held their capacity: an
// exponentially weighted mean of the ended ones, and the number holding
// it now.
type holdStats struct {
	mu      sync.Mutex
	mean    time.Duration
	running int
	// freed is closed when a contract gives its capacity back (queue.go);
	// nil until someone waits on it.
	freed chan struct{}
	// queued is how many proposals wait for capacity now; holding how
	// many contracts this process admitted still hold a reservation
	// (accepted, funded or running).
	queued, holding int
}

// begin counts a contract holding capacity from now; end(now) stops it.
func (h *holdStats) begin(start time.Time) (end func(time.Time)) {
	h.mu.Lock()
	h.running++
	h.mu.Unlock()
	return func(now time.Time) {
		d := max(now.Sub(start), 0)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.running--
		if h.mean == 0 {
			h.mean = d
		} else {
			h.mean += (d - h.mean) / 8
		}
	}
}

// retryAfter is when one of the contracts holding capacity is expected to
// end: the mean hold divided among those running, within bounds.
func (h *holdStats) retryAfter() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mean == 0 {
		return noHistoryRetryAfter
	}
	return min(max(h.mean/time.Duration(max(h.running, 1)), minRetryAfter), maxRetryAfter)
}

// nextWait is the buyer's wait before its next search: the shortest hint
// of the round's capacity refusals (with up to half again of jitter, so
// that buyers refused together do not all come back at once), else
// backoff.
func nextWait(hint, backoff time.Duration, jitter func(int64) int64) time.Duration {
	if hint <= 0 || hint >= backoff {
		return backoff
	}
	return min(hint+time.Duration(jitter(int64(hint/2)+1)), backoff)
}
