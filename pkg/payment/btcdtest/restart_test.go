package btcdtest

import "testing"

// TestPauseResume: a paused and resumed btcd has the chain it had, twice.
func TestPauseResume(t *testing.T) {
	h := Start(t, 1)
	for range 2 {
		before := h.Tip(t)
		h.Pause()
		if err := h.Resume(); err != nil {
			t.Fatalf("%v\n%s", err, h.Logs())
		}
		if after := h.Tip(t); after != before {
			t.Fatalf("tip %d after the restart, %d before\n%s", after, before, h.Logs())
		}
		h.MustGenerate(t, 1)
	}
}
