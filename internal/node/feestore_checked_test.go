package node

import (
	"errors"
	"testing"

	"github.com/blackbox-market/blackbox/pkg/payment"
)

// checkedMem is a MemStore that counts its checked writes.
type checkedMem struct {
	*payment.MemStore
	checked int
}

func (m *checkedMem) PutChannelChecked(c *payment.Channel, check func() error) error {
	if err := check(); err != nil {
		return err
	}
	m.checked++
	return m.MemStore.PutChannel(c)
}

// TestFeeStoreChecked: the node's fee watcher passes a checked write
// through to a store that takes them (so the node's seller overlaps an
// update's check with its write), and writes nothing when the check fails.
func TestFeeStoreChecked(t *testing.T) {
	inner := &checkedMem{MemStore: payment.NewMemStore()}
	f := &feeStore{ChannelStore: inner, state: map[string]payment.State{}, paid: map[string]int64{}}
	c := &payment.Channel{ID: "a:0", State: payment.StateOpen}
	bad := errors.New("bad signature")
	if err := f.PutChannelChecked(c, func() error { return bad }); !errors.Is(err, bad) {
		t.Fatalf("failed check: %v", err)
	}
	if list, _ := inner.LoadChannels(); len(list) != 0 {
		t.Fatalf("written despite a failed check: %d", len(list))
	}
	if err := f.PutChannelChecked(c, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if list, _ := inner.LoadChannels(); len(list) != 1 || inner.checked != 1 {
		t.Fatalf("checked write: %d channels, %d checked writes", len(list), inner.checked)
	}
}
