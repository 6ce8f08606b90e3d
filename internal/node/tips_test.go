package node

import (
	"context"
	"errors"
	"testing"
	"time"
)

// countingChain is a fakeChain that counts the questions of its tip.
type countingChain struct {
	fakeChain
	asked int
}

func (c *countingChain) Tip(ctx context.Context) (int32, error) {
	c.asked++
	return c.fakeChain.Tip(ctx)
}

// TestSharedTipOneQuestionPerPoll: the node's three pollers of the tip
// (chain source, payment tick, escrow tick), each asking every chainPoll
// at its own phase, ask the chain once per chainPoll between them, see a
// new block within two of their polls, and a failure is not kept.
func TestSharedTipOneQuestionPerPoll(t *testing.T) {
	c := &countingChain{fakeChain: fakeChain{tip: 100}}
	s := newSharedTip(c, tipAge)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	phases := []time.Duration{0, 700 * time.Millisecond, 1300 * time.Millisecond}
	const polls = 30
	start := now
	var seen [3]int32
	mined := start.Add(polls / 2 * chainPoll)
	var saw [3]time.Time
	for i := range polls {
		for j, ph := range phases {
			now = start.Add(time.Duration(i)*chainPoll + ph)
			if !now.Before(mined) {
				c.tip = 101
			}
			tip, err := s.Tip(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tip == 101 && seen[j] != 101 {
				saw[j] = now
			}
			seen[j] = tip
		}
	}
	if c.asked > polls+1 {
		t.Fatalf("the chain was asked %d times for %d polls of each of 3 loops, want about %d", c.asked, polls, polls)
	}
	for j := range phases {
		if saw[j].IsZero() || saw[j].Sub(mined) > 2*chainPoll {
			t.Fatalf("loop %d saw the block mined at %v at %v", j, mined.Sub(start), saw[j].Sub(start))
		}
	}

	c.err = errors.New("down")
	now = now.Add(chainPoll)
	if _, err := s.Tip(ctx); err == nil {
		t.Fatal("a failing chain answered")
	}
	c.err, c.tip = nil, 102
	asked := c.asked
	if tip, err := s.Tip(ctx); err != nil || tip != 102 || c.asked != asked+1 {
		t.Fatalf("after a failure: tip %d, %v, asked %d more; want 102 asked again", tip, err, c.asked-asked)
	}
}

// hangingChain's Tip answers only when its ctx ends.
type hangingChain struct{ fakeChain }

func (*hangingChain) Tip(ctx context.Context) (int32, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestSharedTipHangingChain: a question that hangs (btcd stopped, asked
// by a loop whose ctx has no deadline) holds another poller no longer than
// that poller's own deadline, so the chain source's loop still sees the
// chain down.
func TestSharedTipHangingChain(t *testing.T) {
	s := newSharedTip(&hangingChain{}, tipAge)
	go s.Tip(context.Background()) // the payment tick: no deadline of its own
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	if _, err := s.Tip(ctx); err == nil {
		t.Fatal("a hanging chain answered")
	}
	if d := time.Since(began); d > time.Second {
		t.Fatalf("the poller with a 50 ms deadline waited %v", d)
	}
}
