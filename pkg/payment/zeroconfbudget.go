package payment

import (
	"fmt"
	"sync"
	"time"
)

// A budget of compact filters per buyer for hinted zero-conf checks.
//
// A height hint (openhints.go) makes a light seller fetch one block and
// then every filter from the hint up to its tip, per input: a buyer naming
// old blocks for up to zeroConfMaxLightInputs inputs, open request after
// open request, would have the seller download filters without end (a
// month of mainnet blocks is some 90 MB). So each buyer has a budget of
// filters per day: a check is charged, before anything is fetched, the
// filters its hints ask for (tip - hint + 1 per hinted input), and a check
// that would overrun the budget is not made: the funding waits for its
// confirmations, with the reason in zero_conf_why. A check is charged
// whether it succeeds or not (a failed one cost as much). Nothing is
// persisted: a restart forgets the spending, which costs at most one more
// day's budget.

const (
	// zeroConfFilterBudget is how many filters one buyer's hinted checks
	// may have the light client fetch per zeroConfBudgetWindow: two weeks
	// of blocks (about 40 MB of filters on mainnet), so a hint to a coin
	// of up to two weeks is always checked and older ones a few times a
	// day.
	zeroConfFilterBudget = 2016
	zeroConfBudgetWindow = 24 * time.Hour
	// zeroConfBudgetPeers bounds the peers remembered: past it, the ones
	// whose window ended are dropped.
	zeroConfBudgetPeers = 4096
)

// filterBudget is each buyer's filter spending in its current window.
type filterBudget struct {
	mu    sync.Mutex
	peers map[string]*filterSpend
}

type filterSpend struct {
	since time.Time
	spent int64
}

// charge takes n filters from peer's budget at now, or refuses (and takes
// nothing) when they would overrun it.
func (b *filterBudget) charge(peer string, n int64, now time.Time) error {
	if n <= 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peers == nil {
		b.peers = map[string]*filterSpend{}
	}
	s := b.peers[peer]
	if s == nil || now.Sub(s.since) >= zeroConfBudgetWindow {
		if len(b.peers) >= zeroConfBudgetPeers {
			for p, o := range b.peers {
				if now.Sub(o.since) >= zeroConfBudgetWindow {
					delete(b.peers, p)
				}
			}
		}
		s = &filterSpend{since: now}
		b.peers[peer] = s
	}
	if s.spent+n > zeroConfFilterBudget {
		return fmt.Errorf("%w: the buyer's height hints would have the light client fetch %d compact filters; a buyer's hints may cost %d a day, and this one's have cost %d since %s (next budget at %s)",
			ErrNotZeroConf, n, zeroConfFilterBudget, s.spent, s.since.UTC().Format(time.RFC3339), s.since.Add(zeroConfBudgetWindow).UTC().Format(time.RFC3339))
	}
	s.spent += n
	return nil
}

// hintCost is how many filters the hints of tx's inputs ask a light
// client to fetch at tip (the hinted block's own is fetched whole).
func hintCost(inputs int, hints []int32, tip int32) int64 {
	var n int64
	for i := 0; i < inputs && i < len(hints); i++ {
		if h := hints[i]; h > 0 && h <= tip {
			n += int64(tip-h) + 1
		}
	}
	return n
}
