package payment

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// gatedStore is a MemStore whose PutChannel, once armed, waits for release
// and then fails with fail (when set).
type gatedStore struct {
	*MemStore
	mu      sync.Mutex
	gate    chan struct{}
	started chan struct{}
	fail    error
}

func (s *gatedStore) arm(fail error) {
	s.mu.Lock()
	s.gate, s.started, s.fail = make(chan struct{}), make(chan struct{}, 1), fail
	s.mu.Unlock()
}

// release lets the armed write go on, and disarms the store.
func (s *gatedStore) release() {
	s.mu.Lock()
	gate := s.gate
	s.gate = nil
	s.mu.Unlock()
	close(gate)
}

func (s *gatedStore) PutChannel(c *Channel) error {
	s.mu.Lock()
	gate, started, fail := s.gate, s.started, s.fail
	s.mu.Unlock()
	if gate != nil {
		started <- struct{}{}
		<-gate
		if fail != nil {
			return fail
		}
	}
	return s.MemStore.PutChannel(c)
}

// TestPayAsync: the update comes back while the buyer's write runs; the
// seller may take it at once; the channel takes no other payment until the
// write is done; the buyer adopts it only once durable.
func TestPayAsync(t *testing.T) {
	st := &gatedStore{MemStore: NewMemStore()}
	p := newMemPair(t, st, NewMemStore())
	ctx := context.Background()
	st.arm(nil)
	u, durable, err := p.buyer.PayAsync(ctx, p.id, "c", 10)
	if err != nil {
		t.Fatal(err)
	}
	<-st.started
	// The seller holds it before the buyer does.
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	if c, _ := p.buyer.Channel(p.id); c.Paid != 0 {
		t.Fatalf("buyer adopted the update before its write: paid %d", c.Paid)
	}
	next := make(chan error, 1)
	go func() {
		_, err := p.buyer.Pay(ctx, p.id, "c", 5)
		next <- err
	}()
	select {
	case err := <-next:
		t.Fatalf("a second payment ran during the first one's write: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	st.release()
	if err := durable(); err != nil {
		t.Fatal(err)
	}
	if err := durable(); err != nil {
		t.Fatalf("durable again: %v", err)
	}
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	if c, _ := p.buyer.Channel(p.id); c.Paid != 15 || c.Seq != 2 {
		t.Fatalf("buyer: paid %d seq %d, want 15, 2", c.Paid, c.Seq)
	}
	if c, _ := st.MemStore.LoadChannels(); len(c) != 1 || c[0].Paid != 15 {
		t.Fatalf("buyer's store holds %+v", c)
	}
}

// TestPayAsyncWriteFails: a failed write is durable's error and leaves the
// channel as it was; the next payment signs the same sequence number.
func TestPayAsyncWriteFails(t *testing.T) {
	st := &gatedStore{MemStore: NewMemStore()}
	p := newMemPair(t, st, NewMemStore())
	ctx := context.Background()
	boom := errors.New("disk full")
	st.arm(boom)
	u, durable, err := p.buyer.PayAsync(ctx, p.id, "c", 10)
	if err != nil {
		t.Fatal(err)
	}
	<-st.started
	st.release()
	if err := durable(); !errors.Is(err, boom) {
		t.Fatalf("durable: %v, want %v", err, boom)
	}
	if c, _ := p.buyer.Channel(p.id); c.Paid != 0 || c.Seq != 0 {
		t.Fatalf("buyer adopted a failed write: paid %d seq %d", c.Paid, c.Seq)
	}
	// The same payment again is the same update (RFC 6979): a seller
	// that took the first one acknowledges it as a resend.
	if _, err := p.seller.AcceptUpdate(ctx, "b", u.Encode()); err != nil {
		t.Fatal(err)
	}
	again, err := p.buyer.Pay(ctx, p.id, "c", 10)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Encode()) != string(u.Encode()) {
		t.Fatal("the same payment signed again differs")
	}
	if _, err := p.seller.AcceptUpdate(ctx, "b", again.Encode()); err != nil {
		t.Fatalf("resend refused: %v", err)
	}
}
