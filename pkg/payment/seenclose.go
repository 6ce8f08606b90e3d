package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/wire"
)

// ClosingError refuses a contract on a channel whose close (or refund) the
// seller has broadcast. It carries that transaction: a buyer on a light
// client sees another party's transaction only once a block holds it, so
// it still counts the channel open, and the refusal tells it why and how
// to check (SeenClose).
type ClosingError struct {
	Channel string
	State   State
	Tx      []byte
}

func (e *ClosingError) Error() string {
	return fmt.Sprintf("channel %s is %s: its closing transaction is broadcast", e.Channel, e.State)
}

func (e *ClosingError) Unwrap() error { return ErrNotOpen }

// ClosingTx is the broadcast transaction that spends the channel.
func (e *ClosingError) ClosingTx() []byte { return e.Tx }

// closingError is ErrNotOpen for c, as a *ClosingError when we hold the
// transaction that spends it.
func closingError(c *Channel) error {
	if (c.State == StateClosing || c.State == StateClosed) && len(c.SpendTx) > 0 {
		return &ClosingError{Channel: c.ID, State: c.State, Tx: bytes.Clone(c.SpendTx)}
	}
	if c.FailReason != "" {
		return fmt.Errorf("%w (state %s: %s)", ErrNotOpen, c.State, c.FailReason)
	}
	return fmt.Errorf("%w (state %s)", ErrNotOpen, c.State)
}

// Unusable is nil for a channel that is pending or open, and for any
// other the reason it takes no contract (a *ClosingError when we hold its
// spend).
func Unusable(c *Channel) error {
	if c.State == StateOpen || c.State == StatePending {
		return nil
	}
	return closingError(c)
}

// maxSeenCloseSize bounds a closing transaction a peer hands us.
const maxSeenCloseSize = 16 << 10

// SeenClose records a transaction that peer says spends one of our buyer
// channels with it (a ClosingError's): the transaction must spend the
// channel's funding output with a valid witness (the script engine checks
// it, and a close needs our own signature), and then the channel counts
// as closing, as if the chain had shown the spend; the transaction is
// broadcast too, so that our chain source knows it before it is mined.
// It returns the channel's ID. Anything else is refused and changes
// nothing.
func (m *Manager) SeenClose(ctx context.Context, peer string, raw []byte) (string, error) {
	if len(raw) == 0 || len(raw) > maxSeenCloseSize {
		return "", fmt.Errorf("seen close: %w: %d bytes", ErrMalformed, len(raw))
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
		return "", fmt.Errorf("seen close: %w: %v", ErrMalformed, err)
	}
	for _, c := range m.Channels() {
		if c.Role != RoleBuyer || c.Peer != peer || (c.State != StateOpen && c.State != StatePending) {
			continue
		}
		op, err := c.Outpoint()
		if err != nil {
			continue
		}
		for i, in := range tx.TxIn {
			if in.PreviousOutPoint != op {
				continue
			}
			pk := fundingScript(c)
			if err := VerifyInput(&tx, i, pk, c.Capacity); err != nil {
				return "", fmt.Errorf("seen close of %s: %w", c.ID, err)
			}
			if err := m.noteSpend(c, tx.TxHash().String()); err != nil {
				return "", err
			}
			if err := m.chain.Broadcast(ctx, &tx); err != nil {
				m.log.Debug("seen close: broadcast", "channel", c.ID, "err", err)
			}
			return c.ID, nil
		}
	}
	return "", fmt.Errorf("seen close: %w: it spends none of our open channels with %s", errNotOurs, peer)
}

var errNotOurs = errors.New("not our channel's spend")

// SeenClose is the Manager's SeenClose, for the buyer's payer.
func (p *Payer) SeenClose(ctx context.Context, peer string, raw []byte) (string, error) {
	return p.m.SeenClose(ctx, peer, raw)
}
