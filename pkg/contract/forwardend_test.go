package contract

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
)

// TestServiceForwardEndsWithContract: when a replica's contract fails on
// the buyer while its seller still holds it (here: the seller's tally
// over-claims, and the seller waits a minute for payment), the connection
// the forward carries to it is reset at once, not when the seller gives
// up, and no new connection is given to it.
func TestServiceForwardEndsWithContract(t *testing.T) {
	var lie atomic.Bool
	over := func(bl *Bill) {
		if lie.Load() {
			bl.EgressBytes += 64 << 20
		}
	}
	tallyTamper.Store(&over)
	t.Cleanup(func() { tallyTamper.Store(nil) })
	m := newMarket(t)
	run := newSvcRunner([]byte("ok"))
	pay := &fakePay{}
	s, _ := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000,
		func(c *SellerConfig) { c.Runner = run; c.PayGrace = time.Minute })
	m.offers[0].Prices.EgressGiB = svcEgressPrice
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	req := m.serviceRequest(1000, 1)
	id, addr, cid := healthyService(t, b, req, 1)
	sv := b.service(id)
	// A connection in flight: half a request, which the server waits on.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the connection carried", func() bool {
		n := sv.counter(cid)
		n.conns.mu.Lock()
		defer n.conns.mu.Unlock()
		return len(n.conns.live) == 1
	})
	lie.Store(true)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection to the failed replica: read %v, want it reset", err)
	}
	lie.Store(false)
	// The buyer failed the contract; the seller still holds it (it waits
	// a minute for the payment): the reset was the buyer's.
	var br *Record
	eventually(t, "the buyer's contract failed", func() bool {
		br, _ = b.Machine().Get(RoleBuyer, cid)
		return br != nil && br.State == StateFailed
	})
	sr, _ := s.Machine().Get(RoleSeller, cid)
	if br.State != StateFailed || sr.State != StateRunning {
		t.Fatalf("buyer's contract %s (%s), seller's %s; want failed and still running", br.State, br.Why, sr.State)
	}
	t.Logf("connection ended: %v (buyer: %s)", err, br.Why)
	// No new connection goes to it, even while the slot's shadow job may
	// still name it.
	for range 3 {
		if r, ok := sv.pick(map[string]bool{}); ok && r.contract == cid {
			t.Fatalf("a new connection picked the failed contract %s", cid[:8])
		}
	}
	if sv.serving(cid) {
		t.Fatal("the failed contract still counts as serving")
	}
	b.Cancel(id)
	waitJob(t, b, id)
}
