package node

import (
	"context"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// tipAge is how old a tip the node's pollers share may be: a little under
// chainPoll, so that the three loops that each ask every chainPoll (the
// chain source's, the payment tick's and the escrow tick's) cost one
// question per chainPoll between them, and each still sees a new block
// within two of its own polls.
const tipAge = chainPoll - 100*time.Millisecond

// sharedTip answers the chain's tip to the node's pollers from one recent
// answer. Each question to btcd's RPC is a new TCP connection and HTTP
// request (btcd closes every POST's connection): three loops asking every
// 2 s each were most of an idle node's CPU. Errors are not kept: the next
// question asks again. A question in flight is shared too, each caller
// waiting for it only as long as its own ctx lets it, and it is bounded by
// chainProbeTimeout: a chain source that hangs (btcd stopped) holds no
// poller past its own deadline, so the chain source's loop still reports
// it down.
type sharedTip struct {
	chain  payment.Chain
	maxAge time.Duration
	now    func() time.Time

	mu       sync.Mutex
	tip      int32
	at       time.Time // zero: nothing kept
	inflight *tipCall
}

// tipCall is a question of the tip in flight.
type tipCall struct {
	done chan struct{}
	tip  int32
	err  error
}

func newSharedTip(chain payment.Chain, maxAge time.Duration) *sharedTip {
	return &sharedTip{chain: chain, maxAge: maxAge, now: time.Now}
}

// Tip is the chain's tip as asked at most maxAge ago, else asked now (or
// the answer to the question in flight).
func (s *sharedTip) Tip(ctx context.Context) (int32, error) {
	s.mu.Lock()
	if !s.at.IsZero() && s.now().Sub(s.at) < s.maxAge {
		tip := s.tip
		s.mu.Unlock()
		return tip, nil
	}
	if c := s.inflight; c != nil {
		s.mu.Unlock()
		select {
		case <-c.done:
			return c.tip, c.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	c := &tipCall{done: make(chan struct{})}
	s.inflight = c
	s.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, chainProbeTimeout)
	c.tip, c.err = s.chain.Tip(qctx)
	cancel()
	s.mu.Lock()
	s.inflight = nil
	if c.err != nil {
		s.at = time.Time{}
	} else {
		s.tip, s.at = c.tip, s.now()
	}
	s.mu.Unlock()
	close(c.done)
	return c.tip, c.err
}
