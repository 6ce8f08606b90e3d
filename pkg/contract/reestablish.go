package contract

import (
	"context"
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"
)

// heldUpdate is the channel update a payment refusal's cause says the
// seller holds (the payments' HeldError), or nil.
func heldUpdate(err error) []byte {
	var h interface{ HeldUpdate() []byte }
	if errors.As(err, &h) {
		return h.HeldUpdate()
	}
	return nil
}

// HeldLearner is a Payer that can adopt the channel update a seller's
// payment refusal says it holds: the update this node sent while its own
// write of it ran and lost in a crash (AsyncPayer), so that its next
// payment on the channel, another contract's, reused its sequence number.
// It adopts the update only when it is this node's own signature of the
// update after its record (or of one replacing its latest, which the
// seller never took), and returns the channel's ID.
type HeldLearner interface {
	Reestablish(ctx context.Context, seller peer.ID, held []byte) (string, error)
}

// learnedHeld reports whether err is a seller's refusal of a payment that
// did not follow the update the seller holds, with that update, and the
// payments adopted it: this node had lost it, the refusal was its own
// doing, and the seller may be asked again at once (the next payment
// follows the update it holds).
func (b *Buyer) learnedHeld(ctx context.Context, seller peer.ID, err error) bool {
	var je *JobError
	if !errors.As(err, &je) || je.Reason != RefusePayment || len(je.Held) == 0 {
		return false
	}
	hl, ok := b.cfg.Payer.(HeldLearner)
	if !ok {
		return false
	}
	id, herr := hl.Reestablish(ctx, seller, je.Held)
	if herr != nil {
		b.log.Info("seller's held update not adopted", "peer", seller, "err", herr)
		return false
	}
	b.log.Info("adopted the channel update the seller holds, lost here: asking it again", "peer", seller, "channel", id)
	return true
}

// errHeldAdopted marks a run's error (heldAdoptedError) when the run ended
// on a refusal whose held update this node adopted (learnedHeld).
var errHeldAdopted = errors.New("the seller's held update was adopted")

// heldAdoptedError is a run's error, marked with errHeldAdopted.
type heldAdoptedError struct{ err error }

func (e *heldAdoptedError) Error() string   { return e.err.Error() }
func (e *heldAdoptedError) Unwrap() []error { return []error{e.err, errHeldAdopted} }
