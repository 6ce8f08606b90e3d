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
// question asks again.
type sharedTip struct {
	chain  payment.Chain
	maxAge time.Duration
	now    func() time.Time

	mu  sync.Mutex
	tip int32
	at  time.Time // zero: nothing kept
}

func newSharedTip(chain payment.Chain, maxAge time.Duration) *sharedTip {
	return &sharedTip{chain: chain, maxAge: maxAge, now: time.Now}
}

// Tip is the chain's tip as asked at most maxAge ago, else asked now.
// Questions at the same time wait for one answer.
func (s *sharedTip) Tip(ctx context.Context) (int32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.at.IsZero() && s.now().Sub(s.at) < s.maxAge {
		return s.tip, nil
	}
	tip, err := s.chain.Tip(ctx)
	if err != nil {
		s.at = time.Time{}
		return 0, err
	}
	s.tip, s.at = tip, s.now()
	return tip, nil
}
