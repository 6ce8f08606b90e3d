package contract

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ForwardProtocol carries one TCP connection from the buyer's node to a
// service's port. The buyer opens the stream and sends fwOpen with the 32
// bytes of a running service contract's ID; the seller answers fwOK, or a
// frameError with a JobError, and closes. Only the contract's buyer (the
// stream's authenticated remote peer) may open it. After fwOK the stream
// carries the connection's bytes, unframed, both ways; each side's
// CloseWrite is the connection's half-close. The bytes count as the
// contract's egress: billed with each interval (tally.go) and in the
// bill at its end.
const ForwardProtocol protocol.ID = "/blackbox/forward/1.0.0"

const (
	fwOpen byte = 1
	fwOK   byte = 2
)

// forwardSetup bounds the open handshake, on both sides; forwardMemory is
// what a forward stream reserves (two copy buffers); forwardWait is how
// long a connection waits for a replica when none can take it.
const (
	forwardWait   = 30 * time.Second
	forwardSetup  = 10 * time.Second
	forwardMemory = 2 * forwardBuf
	forwardBuf    = 32 << 10
)

// parseForwardOpen decodes an fwOpen payload into the contract ID.
func parseForwardOpen(b []byte) (string, error) {
	if len(b) != 32 {
		return "", fmt.Errorf("%w: forward open of %d bytes, want 32", ErrMalformed, len(b))
	}
	return hex.EncodeToString(b), nil
}

// handleForward is the seller's side of ForwardProtocol.
func (s *Seller) handleForward(st network.Stream) {
	remote := st.Conn().RemotePeer()
	if err := setupStream(st, forwardMemory, time.Now().Add(forwardSetup)); err != nil {
		st.Reset()
		return
	}
	defer st.Scope().ReleaseMemory(forwardMemory)
	c := newConn(st)
	refuse := func(reason JobReason, err error) {
		s.log.Info("forward refused", "peer", remote, "reason", reason, "err", err)
		_ = c.send(frameError, marshalJobError(&JobError{Reason: reason, Message: err.Error()}))
		_ = st.CloseWrite()
		_ = st.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(st, 1<<16))
		st.Reset()
	}
	b, err := c.expect(fwOpen, 64)
	if err != nil {
		refuse(RefuseProtocol, fmt.Errorf("read forward open: %w", err))
		return
	}
	id, err := parseForwardOpen(b)
	if err != nil {
		refuse(RefuseProtocol, err)
		return
	}
	sv := s.services.get(id)
	// A contract that is not this peer's looks like no contract at all.
	if sv == nil || sv.buyer != remote {
		refuse(RefuseContract, fmt.Errorf("no running service contract %s of yours", truncate(id, 16)))
		return
	}
	pid := int(sv.pid.Load())
	if pid == 0 {
		refuse(RefuseInternal, errors.New("the service is restarting"))
		return
	}
	d, _ := s.cfg.Runner.(ContainerDialer) // runService checked it
	ctx, cancel := context.WithTimeout(s.ctx, forwardSetup)
	back, err := d.DialContainer(ctx, pid, sv.port)
	cancel()
	if err != nil {
		refuse(RefuseInternal, fmt.Errorf("connect to the service's port %d: %w", sv.port, err))
		return
	}
	if !sv.add(back) {
		back.Close()
		refuse(RefuseContract, fmt.Errorf("service contract %s is ending", truncate(id, 16)))
		return
	}
	defer sv.done(back)
	if err := c.send(fwOK, nil); err != nil {
		back.Close()
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	// c.r may hold bytes the buyer sent after fwOpen.
	splice(back, readStream{c.r, st}, &sv.out, &sv.in)
}

// readStream is a stream read through a buffered reader that may hold its
// first bytes.
type readStream struct {
	r io.Reader
	network.Stream
}

func (r readStream) Read(p []byte) (int, error) { return r.r.Read(p) }

// halfCloser is a connection or stream that can close its write side.
type halfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// splice copies local<->remote until both directions end, counting the
// bytes written to remote in toRemote and those read from it in
// fromRemote. An error in either direction resets both.
func splice(local net.Conn, remote halfCloser, toRemote, fromRemote *atomic.Int64) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	fail := func(err error) {
		once.Do(func() {
			first = err
			local.Close()
			if r, ok := remote.(interface{ Reset() error }); ok {
				r.Reset()
			} else {
				remote.Close()
			}
		})
	}
	copyOne := func(dst io.Writer, src io.Reader, n *atomic.Int64, closeWrite func() error) {
		defer wg.Done()
		buf := make([]byte, forwardBuf)
		for {
			k, rerr := src.Read(buf)
			if k > 0 {
				w, werr := dst.Write(buf[:k])
				n.Add(int64(w))
				if werr != nil {
					fail(werr)
					return
				}
			}
			if rerr == io.EOF {
				if err := closeWrite(); err != nil {
					fail(err)
				}
				return
			}
			if rerr != nil {
				fail(rerr)
				return
			}
		}
	}
	lc, _ := local.(interface{ CloseWrite() error })
	closeLocal := func() error {
		if lc != nil {
			return lc.CloseWrite()
		}
		return local.Close()
	}
	wg.Add(2)
	go copyOne(remote, local, toRemote, remote.CloseWrite)
	go copyOne(local, remote, fromRemote, closeLocal)
	wg.Wait()
	if first == nil {
		local.Close()
		remote.Close()
	}
	return first
}

// ErrNoReplica is what a forwarded connection gets when no replica of the
// service could take it.
var ErrNoReplica = errors.New("no replica of the service could take the connection")

// OpenForward opens a forward stream to seller for service contract id
// (hex) and returns it ready to carry a connection's bytes, both ways (it
// reads through the buffer that held the answer). A seller's refusal is a
// *JobError.
func OpenForward(ctx context.Context, h host.Host, seller peer.ID, id string) (network.Stream, error) {
	raw, err := parseContractID(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, forwardSetup)
	defer cancel()
	st, err := h.NewStream(ctx, seller, ForwardProtocol)
	if err != nil {
		return nil, err
	}
	if err := st.Scope().SetService(ServiceName); err != nil {
		st.Reset()
		return nil, err
	}
	_ = st.SetDeadline(time.Now().Add(forwardSetup))
	// ctx bounds the handshake too (a hung seller answers nothing).
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	c := newConn(st)
	if err := c.send(fwOpen, raw); err != nil {
		st.Reset()
		return nil, err
	}
	if _, err := c.expect(fwOK, maxCtlFrame); err != nil {
		st.Reset()
		return nil, err
	}
	_ = st.SetDeadline(time.Time{})
	return readStream{c.r, st}, nil
}

// forwardConn carries one accepted connection to a replica of the service:
// the healthy ones in turn, each tried at most once.
func (b *Buyer) forwardConn(ctx context.Context, sv *svcBuyer, local net.Conn) {
	tried := map[string]bool{}
	deadline := b.clock.Now().Add(forwardWait)
	for {
		r, ok := sv.pick(tried)
		if !ok {
			// No replica now (the only one is being replaced, or all
			// refused): the connection waits a while for one.
			// Every replica may be tried again after the pause (one that
			// was starting may serve now).
			if b.clock.Now().Before(deadline) && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-b.clock.After(500 * time.Millisecond):
				}
				clear(tried)
				continue
			}
			b.log.Info("forwarded connection dropped", "service", sv.id, "err", ErrNoReplica, "tried", len(tried))
			local.Close()
			return
		}
		tried[r.contract] = true
		// pick counted it open: a renewed contract is not cancelled
		// under a connection being opened to it (drain).
		n := sv.counter(r.contract)
		// The open is abandoned as soon as the contract stops serving
		// (its seller missed a heartbeat): a hung seller would hold the
		// connection for forwardSetup otherwise.
		octx, cancel := context.WithCancel(ctx)
		go sv.watchServing(octx, r.contract, cancel)
		st, err := OpenForward(octx, b.cfg.Host, r.seller, r.contract)
		cancel()
		if err != nil {
			n.ended.Add(1)
			b.log.Info("replica refused a forward", "service", sv.id, "contract", r.contract, "peer", r.seller, "err", err)
			sv.failed(r.contract)
			continue
		}
		if !n.conns.add(local, st) {
			// The contract ended while the stream opened: the next.
			st.Reset()
			n.ended.Add(1)
			continue
		}
		err = splice(local, st.(halfCloser), &n.out, &n.in)
		n.conns.remove(local)
		if err != nil {
			n.broken.Add(1)
		}
		n.ended.Add(1)
		return
	}
}

// watchServing calls cancel when contract is no longer a running contract
// of the service, or when ctx ends.
func (sv *svcBuyer) watchServing(ctx context.Context, contract string, cancel context.CancelFunc) {
	gone := sv.counter(contract).conns.done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-gone:
		case <-sv.b.clock.After(slotPoll):
		}
		if !sv.serving(contract) {
			cancel()
			return
		}
	}
}

// serving reports whether contract runs one of the service's replicas
// (its run has not ended).
func (sv *svcBuyer) serving(contract string) bool {
	if sv.counter(contract).conns.ended() {
		return false
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.b.mu.Lock()
	defer sv.b.mu.Unlock()
	for _, list := range sv.slots {
		for _, c := range list {
			if c.sj.ContractID == contract && c.sj.State == JobRunning && c.sj.Phase == PhaseRun {
				return true
			}
		}
	}
	return false
}

// fwdCount is what one contract's forwards moved, as the buyer counts it.
type fwdCount struct {
	out, in atomic.Int64 // written to, read from the seller
	streams atomic.Int64
	ended   atomic.Int64
	broken  atomic.Int64 // streams that ended with an error
	// conns are the connections carried now (forwardend.go).
	conns fwdConns
}

// open is how many of the streams have not ended.
func (n *fwdCount) open() int64 { return n.streams.Load() - n.ended.Load() }

// forwardSlack is how far a seller's count of a contract's forwarded bytes
// may be from the buyer's: the bytes in flight in a stream that broke (a
// client that went away, the contract's end closing the streams). yamux's
// receive window is at most 16 MiB.
const forwardSlack = 16 << 20

// replica is one running contract of a service, as the forward sees it.
type replica struct {
	contract string
	seller   peer.ID
	healthy  bool
}

// Forward listens on listen (host:port; port 0 picks one) and carries
// every connection to service id's replicas; it returns the address it
// listens on. The listener closes when the service ends.
func (b *Buyer) Forward(id, listen string) (string, error) {
	sv := b.service(id)
	if sv == nil {
		if _, err := b.Job(id); err != nil {
			return "", err
		}
		return "", fmt.Errorf("%w: job %s is not a running service", ErrInvalid, id)
	}
	return sv.forward(b, listen)
}

func (sv *svcBuyer) forward(b *Buyer, listen string) (string, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", fmt.Errorf("forward %s: %w", sv.id, err)
	}
	addr := ln.Addr().String()
	sv.mu.Lock()
	if sv.ended {
		sv.mu.Unlock()
		ln.Close()
		return "", fmt.Errorf("forward %s: the service ended", sv.id)
	}
	sv.listeners = append(sv.listeners, ln)
	sv.mu.Unlock()
	b.log.Info("service forward listening", "service", sv.id, "addr", addr)
	sv.changed()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.forwardConn(sv.ctx, sv, c)
		}
	}()
	return addr, nil
}
