package payment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// Reestablishing a channel after the buyer lost its latest update (as
// Lightning's channel_reestablish does, on a refusal instead of at each
// reconnect).
//
// A buyer sends an update while its own write of it runs (PayAsync): killed
// before the write is done, it restarts one update behind a seller that
// holds it. Its next payment on the channel reuses the sequence number;
// when that is another contract's payment, the seller refuses it (stale, or
// contract amounts that do not add up) and, having persisted it, the buyer
// would build every later update on a state the seller never took. So a
// seller's refusal of that kind carries the update it holds (*HeldError);
// the buyer checks it against its own record and its own key, adopts it
// (Reestablish) and pays again on top of it.
//
// What the buyer trusts of the held update is only what it can check: its
// own signature of the close paying Amount (so it signed that amount, on
// this channel), and that the update is the one next update on its own
// record (sequence number, amount and contract total agree), or replaces
// its own latest update, which the seller never took (the record says what
// that update added: LastContract, LastDelta). Its contract name and
// total are not signed; a seller can at most name, for an amount the buyer
// did sign, another contract on the channel that would have paid exactly
// that much.

// ErrInSync is a held update that is the buyer's own latest: nothing to
// adopt (the seller refused for another reason).
var ErrInSync = errors.New("the seller holds our latest update")

// HeldError is a seller's refusal of an update that does not follow the
// one it holds, with that update (encoded): the buyer may have lost it
// (Reestablish).
type HeldError struct {
	err  error
	held []byte
}

func (e *HeldError) Error() string { return e.err.Error() }
func (e *HeldError) Unwrap() error { return e.err }

// HeldUpdate is the encoded update the seller holds.
func (e *HeldError) HeldUpdate() []byte { return e.held }

// refuseStale is err, carrying the update the seller holds on c when it
// knows which contract it paid (records from before LastContract do not).
func (m *Manager) refuseStale(c *Channel, err error) error {
	if c.Seq == 0 || c.LastContract == "" || len(c.BuyerSig) == 0 {
		return err
	}
	op, oerr := c.Outpoint()
	if oerr != nil {
		return err
	}
	u := &Update{ChannelID: op, Seq: c.Seq, Amount: c.Paid, ContractID: c.LastContract,
		ContractAmount: c.Contracts[c.LastContract], PayScript: c.SellerScript, Sig: c.BuyerSig}
	return &HeldError{err: err, held: u.Encode()}
}

// resendOf reports whether u, which repeats the seller's latest sequence
// number, amount and signature, names its contract's total as the seller
// holds it: a resend. Two contracts paying the same amount on top of the
// same state sign the same close, so the signature alone does not tell the
// buyer's lost update for one from its new one for the other. A total
// above ours by no more than what updates we never received paid
// (Unattributed) is a resend too: those updates were for it.
func (c *Channel) resendOf(u *Update) bool {
	held := c.Contracts[u.ContractID]
	return u.ContractAmount == held || (u.ContractAmount > held && u.ContractAmount-held <= c.Unattributed)
}

// Reestablish is the buyer adopting the update a seller's refusal says it
// holds on a channel with peer (msg: an encoded Update, HeldError's): the
// update that follows our record, signed by us, which we lost in a crash or
// a failed write. When our record's latest update has the same sequence
// number (we paid again on top of the lost one and persisted it; the
// seller refused it), ours is undone first: the seller never took it.
// Anything else is refused and changes nothing: another channel or peer, a
// signature that is not ours for that amount, a sequence number below ours
// or more than one above, amounts that are not one update on top of our
// record. It returns the channel adopted.
func (m *Manager) Reestablish(ctx context.Context, peer string, msg []byte) (*Channel, error) {
	u, err := DecodeUpdate(msg)
	if err != nil {
		return nil, fmt.Errorf("held update: %w", err)
	}
	id := u.ChannelID.String()
	cs, c := m.chans.lock(id)
	if cs == nil {
		return nil, fmt.Errorf("held update for %s: %w", id, ErrUnknownChannel)
	}
	defer cs.mu.Unlock()
	if c.Peer != peer {
		return nil, fmt.Errorf("held update for %s from %s: %w", id, peer, ErrUnknownChannel)
	}
	if c.Role != RoleBuyer {
		return nil, fmt.Errorf("held update for %s: %w", id, ErrWrongRole)
	}
	if err := Unusable(c); err != nil {
		return nil, fmt.Errorf("held update for %s: %w", id, err)
	}
	base, err := c.reestablishBase(u)
	if err != nil {
		return nil, fmt.Errorf("held update for %s: %w", id, err)
	}
	delta := u.Amount - base.Paid
	if delta <= 0 {
		return nil, fmt.Errorf("held update for %s: %w: %d, have %d", id, ErrLowerAmount, u.Amount, base.Paid)
	}
	if got := u.ContractAmount - base.Contracts[u.ContractID]; got != delta {
		return nil, fmt.Errorf("held update for %s: %w: contract %q goes %d→%d but channel %d→%d",
			id, ErrContractAmount, u.ContractID, base.Contracts[u.ContractID], u.ContractAmount, base.Paid, u.Amount)
	}
	// Our own signature, of the close paying that amount, on this channel
	// (the engine verifies it under the channel's buyer key: ours).
	if err := c.VerifyUpdate(u); err != nil {
		return nil, fmt.Errorf("held update for %s: %w", id, err)
	}
	next := base
	next.Seq, next.Paid, next.BuyerSig = u.Seq, u.Amount, bytes.Clone(u.Sig)
	if next.Contracts == nil {
		next.Contracts = map[string]int64{}
	}
	next.Contracts[u.ContractID] = u.ContractAmount
	next.LastContract, next.LastDelta = u.ContractID, delta
	if err := m.persist(cs, next); err != nil {
		return nil, fmt.Errorf("held update for %s: %w", id, err)
	}
	m.log.Info("adopted the update the seller holds, lost on our side",
		"channel", id, "peer", peer, "seq", u.Seq, "had_seq", c.Seq, "contract", u.ContractID, "paid_sat", u.Amount, "had_paid_sat", c.Paid)
	return next.clone(), nil
}

// reestablishBase is the record a held update u must follow: c itself when
// u is its next update, c without its latest update when u replaces it
// (same sequence number, another update).
func (c *Channel) reestablishBase(u *Update) (*Channel, error) {
	switch {
	case c.Seq < ^uint64(0) && u.Seq == c.Seq+1:
		return c.clone(), nil
	case u.Seq == c.Seq && u.Seq > 0:
		if u.Amount == c.Paid && bytes.Equal(u.Sig, c.BuyerSig) && u.ContractAmount == c.Contracts[u.ContractID] {
			return nil, ErrInSync
		}
		if c.LastContract == "" || c.LastDelta <= 0 || c.LastDelta > c.Paid || c.LastDelta > c.Contracts[c.LastContract] {
			return nil, fmt.Errorf("%w: seq %d, ours the same, and our record does not say what our latest added", ErrStale, u.Seq)
		}
		b := c.clone()
		b.Seq--
		b.Paid -= c.LastDelta
		b.Contracts[c.LastContract] -= c.LastDelta
		b.LastContract, b.LastDelta = "", 0
		return b, nil
	}
	return nil, fmt.Errorf("%w: held seq %d, ours %d", ErrStale, u.Seq, c.Seq)
}

// Reestablish adopts the update a seller's refusal says it holds on a
// channel with peer (Manager.Reestablish); it returns the channel's ID.
func (p *Payer) Reestablish(ctx context.Context, peer string, held []byte) (string, error) {
	c, err := p.m.Reestablish(ctx, peer, held)
	if err != nil {
		return "", err
	}
	return c.ID, nil
}
