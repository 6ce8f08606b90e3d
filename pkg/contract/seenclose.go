package contract

import (
	"context"
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"
)

// closingTx is the transaction a refusal's cause says spends the buyer's
// channel (the payments' ClosingError), or nil.
func closingTx(err error) []byte {
	var c interface{ ClosingTx() []byte }
	if errors.As(err, &c) {
		return c.ClosingTx()
	}
	return nil
}

// CloseLearner is a Payer that can record a seller's close of a channel
// from the transaction the seller sent with its refusal (a light client
// sees it only once mined): it checks that the transaction spends one of
// its open channels with the seller, validly, and then counts that
// channel as closing.
type CloseLearner interface {
	SeenClose(ctx context.Context, seller peer.ID, tx []byte) (string, error)
}

// learnedClose reports whether err is a seller's refusal of the channel
// this node took for open because the seller has closed it, with the
// closing transaction, and the payments took it as proof: the channel is
// not offered again, and the seller may be asked again at once, on
// another channel.
func (b *Buyer) learnedClose(ctx context.Context, seller peer.ID, err error) bool {
	var je *JobError
	if !errors.As(err, &je) || je.Reason != RefuseChannel || len(je.Closing) == 0 {
		return false
	}
	cl, ok := b.cfg.Payer.(CloseLearner)
	if !ok {
		return false
	}
	id, serr := cl.SeenClose(ctx, seller, je.Closing)
	if serr != nil {
		b.log.Info("seller's closing transaction refused", "peer", seller, "err", serr)
		return false
	}
	b.log.Info("seller had closed the channel: asking it again on another", "peer", seller, "channel", id)
	return true
}
