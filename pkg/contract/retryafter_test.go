package contract

import (
	"testing"
	"time"
)

// TestRetryAfter: the hint is the mean hold of ended contracts divided
// among those holding capacity now, within its bounds; the buyer waits the
// hint plus at most half of it again, never more than its backoff, and
// its backoff without a hint.
func TestRetryAfter(t *testing.T) {
	var h holdStats
	if got := h.retryAfter(); got != noHistoryRetryAfter {
		t.Fatalf("no history: %s", got)
	}
	t0 := time.Unix(0, 0)
	var ends []func(time.Time)
	for range 4 {
		ends = append(ends, h.begin(t0))
	}
	ends[0](t0.Add(800 * time.Millisecond)) // the first sets the mean: 800 ms
	if got := h.retryAfter(); got != 800*time.Millisecond/3 {
		t.Fatalf("800 ms mean, 3 running: %s", got)
	}
	ends[1](t0.Add(800 * time.Millisecond))
	ends[2](t0.Add(800 * time.Millisecond))
	ends[3](t0.Add(800 * time.Millisecond))
	if got := h.retryAfter(); got != 800*time.Millisecond {
		t.Fatalf("800 ms mean, none running: %s", got)
	}
	for range 20 {
		h.begin(t0)
	}
	if got := h.retryAfter(); got != minRetryAfter {
		t.Fatalf("20 running: %s, want the floor", got)
	}
	h = holdStats{mean: time.Hour}
	if got := h.retryAfter(); got != maxRetryAfter {
		t.Fatalf("hour-long holds: %s, want the ceiling", got)
	}

	most := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct{ hint, backoff, want time.Duration }{
		{0, 2 * time.Second, 2 * time.Second},
		{200 * time.Millisecond, 2 * time.Second, 300 * time.Millisecond},
		{1800 * time.Millisecond, 2 * time.Second, 2 * time.Second},
		{5 * time.Second, 2 * time.Second, 2 * time.Second},
	} {
		if got := nextWait(tc.hint, tc.backoff, most); got != tc.want {
			t.Errorf("nextWait(%s, %s) = %s, want %s", tc.hint, tc.backoff, got, tc.want)
		}
	}
}
