package contract

import (
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
)

// A replica's contract whose run ended on the buyer (it failed: its seller
// died, hung or missed a heartbeat; or it was cancelled after a renewal)
// takes no new connection from that moment, and the connections it still
// carries are reset at once, both the local one (an RST, so the client
// sees the failure rather than a response cut short) and the stream: the
// forward no longer waits for the slot's next attempt to replace the
// contract, nor on a hung seller's stream.

// fwdConns are the connections a contract's forwards carry now.
type fwdConns struct {
	mu   sync.Mutex
	live map[net.Conn]network.Stream
	dead bool
	gone chan struct{} // closed when dead
}

// add registers a connection spliced to st; false when the contract
// already ended (the caller resets both).
func (f *fwdConns) add(local net.Conn, st network.Stream) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return false
	}
	if f.live == nil {
		f.live = map[net.Conn]network.Stream{}
	}
	f.live[local] = st
	return true
}

func (f *fwdConns) remove(local net.Conn) {
	f.mu.Lock()
	delete(f.live, local)
	f.mu.Unlock()
}

// ended reports whether the contract's run ended.
func (f *fwdConns) ended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dead
}

// done is closed when the contract's run ends.
func (f *fwdConns) done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone == nil {
		f.gone = make(chan struct{})
	}
	return f.gone
}

// end marks the contract ended and resets what it carries; it returns how
// many connections it reset.
func (f *fwdConns) end() int {
	f.mu.Lock()
	if f.dead {
		f.mu.Unlock()
		return 0
	}
	f.dead = true
	if f.gone == nil {
		f.gone = make(chan struct{})
	}
	close(f.gone)
	live := f.live
	f.live = nil
	f.mu.Unlock()
	for local, st := range live {
		resetConn(local, st)
	}
	return len(live)
}

// resetConn resets a forwarded connection: an RST to the local client,
// and the stream to the seller.
func resetConn(local net.Conn, st network.Stream) {
	if tc, ok := local.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	if st != nil {
		_ = st.Reset()
	}
	_ = local.Close()
}

// contractEnded is told that job j's contract id stopped running (its
// run returned): when j is a service's contract, the forward stops using
// it. A run left for the next start (the node stops) is not an end.
func (b *Buyer) contractEnded(j *JobStatus, id string, out outcome) {
	if out == outDetached {
		return
	}
	sv := b.serviceOfJob(j.ID)
	if sv == nil {
		return
	}
	if n := sv.counter(id).conns.end(); n > 0 {
		b.log.Info("connections to an ended replica reset", "service", sv.id, "contract", id, "connections", n)
	}
	sv.changed()
}
