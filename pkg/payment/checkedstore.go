package payment

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
)

// CheckedStore is a ChannelStore that can write a change while the change
// is still being checked, so that the seller's signature check of an
// update (the script engine, one ECDSA verification) and the write that
// makes the update durable overlap instead of following each other.
//
// PutChannelChecked writes c and runs check at the same time, and returns
// nil only once c is durable and check returned nil. When check fails it
// returns check's error and c is never loaded, neither by this process nor
// after a crash: the store keeps such a write marked as unchecked, and a
// reopen that finds it checks it again with VerifyUpdateSig, dropping it
// (the previous value stands) when that fails.
type CheckedStore interface {
	ChannelStore
	PutChannelChecked(c *Channel, check func() error) error
}

// VerifyUpdateSig checks a seller's channel record on its own, without the
// node's keys: for a record that holds a payment (Paid > 0), the buyer's
// signature (BuyerSig) must be valid for the close paying Paid, run by the
// script engine on the whole witness as the Manager checks an update (our
// own slot vouched for under the record's seller key). A record with
// nothing paid, and a buyer's record, pass. A CheckedStore uses it to
// decide, after a crash, whether a change written before its check had
// completed may be loaded.
func VerifyUpdateSig(c *Channel) error {
	if c == nil {
		return errors.New("verify update: null channel")
	}
	if c.Role != RoleSeller || c.Paid == 0 {
		return nil
	}
	if len(c.BuyerSig) == 0 {
		return fmt.Errorf("%w: paid %d without the buyer's signature", ErrBadSignature, c.Paid)
	}
	if _, err := btcec.ParsePubKey(c.SellerKey); err != nil {
		return fmt.Errorf("%w: seller key: %v", ErrBadSignature, err)
	}
	if bytes.Equal(c.BuyerKey, c.SellerKey) {
		return fmt.Errorf("%w: %w: buyer and seller keys are equal", ErrBadSignature, ErrWrongKey)
	}
	ws, err := c.Script()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	pk, err := P2WSH(ws)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	err = checkCloseSig(c, ws, pk, c.Paid, c.BuyerSig)
	if err != nil && !errors.Is(err, ErrBadSignature) {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return err
}

// persistChecked is persist for a change that check vouches for: with a
// CheckedStore, check runs while the change is written; otherwise first
// check, then write. checkErr reports a failed check apart from a failed
// write (cs.mu held).
func (m *Manager) persistChecked(cs *chanState, next *Channel, check func() error) (checkErr, err error) {
	next.Updated = m.now().UTC()
	ck := func() error {
		checkErr = check()
		return checkErr
	}
	if st, ok := m.store.(CheckedStore); ok {
		err = st.PutChannelChecked(next, ck)
	} else if err = ck(); err == nil {
		err = m.store.PutChannel(next)
	}
	if checkErr != nil {
		return checkErr, nil
	}
	if err != nil {
		return nil, fmt.Errorf("persist channel %s: %w", next.ID, err)
	}
	m.chans.adopt(cs, next)
	m.notify()
	return nil, nil
}

var _ CheckedStore = (*BackupStore)(nil)

// PutChannelChecked implements CheckedStore. Over a store that is both a
// CheckedStore and a CompactingStore (the node's), c enters the backup's
// set once check has passed (so the file never holds an update that failed
// its check) and before the store counts c as written (so the store's
// compaction, which flushes the backup first, never hands c to the
// database alone). Over any other store: check, then PutChannel.
func (s *BackupStore) PutChannelChecked(c *Channel, check func() error) error {
	inner, ok := s.inner.(CheckedStore)
	if !ok || !s.lazy {
		if err := check(); err != nil {
			return err
		}
		return s.PutChannel(c)
	}
	var structural bool
	var mine uint64
	err := inner.PutChannelChecked(c, func() error {
		if err := check(); err != nil {
			return err
		}
		s.mu.Lock()
		structural = s.record(c)
		s.gen++
		mine = s.gen
		s.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if structural {
		return s.flush(mine)
	}
	s.armFlush()
	return nil
}
