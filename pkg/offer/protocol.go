package offer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// ProtocolID is the stream protocol on which a seller answers with its
// current signed offer. The requester sends nothing; the seller writes one
// uvarint-length-prefixed envelope (length 0: nothing on offer) and closes.
const ProtocolID protocol.ID = "/blackbox/offer/1.0.0"

// ServiceName names the offer service in the resource manager.
const ServiceName = "blackbox.offer"

// streamTimeout bounds one offer exchange on either side.
const streamTimeout = 10 * time.Second

// ErrNoOffer is returned by Fetch when the seller has nothing on offer now.
var ErrNoOffer = errors.New("seller has nothing on offer")

// Handler returns the stream handler serving the envelope current returns
// (nil: nothing on offer).
func Handler(current func() []byte, log *slog.Logger) network.StreamHandler {
	return func(s network.Stream) {
		remote := s.Conn().RemotePeer()
		if err := serve(s, current()); err != nil {
			log.Debug("offer stream failed", "peer", remote, "err", err)
			s.Reset()
			return
		}
		s.Close()
	}
}

func serve(s network.Stream, env []byte) error {
	size := len(env) + binary.MaxVarintLen64
	release, err := prepare(s, size, time.Now().Add(streamTimeout))
	if err != nil {
		return err
	}
	defer release()
	buf := wire.AppendFrame(make([]byte, 0, size), env)
	_, err = s.Write(buf)
	return err
}

// prepare attaches s to the offer service, reserves size bytes for it from
// its resource scope and sets its deadline; release gives the memory back.
func prepare(s network.Stream, size int, deadline time.Time) (release func(), err error) {
	if err := s.Scope().SetService(ServiceName); err != nil {
		return nil, fmt.Errorf("attach to service: %w", err)
	}
	if err := s.Scope().ReserveMemory(size, network.ReservationPriorityAlways); err != nil {
		return nil, fmt.Errorf("reserve memory: %w", err)
	}
	if err := s.SetDeadline(deadline); err != nil {
		s.Scope().ReleaseMemory(size)
		return nil, err
	}
	return func() { s.Scope().ReleaseMemory(size) }, nil
}

// Fetch asks peer p for its current signed offer and returns the envelope
// bytes, unverified (the caller opens them with Open).
func Fetch(ctx context.Context, h host.Host, p peer.ID) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	// An offer is a few KiB: a relayed, limited connection carries it (a
	// seller behind NAT is often first reached so).
	ctx = network.WithAllowLimitedConn(ctx, "blackbox offer")
	s, err := h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return nil, fmt.Errorf("open offer stream to %s: %w", p, err)
	}
	env, err := readEnvelope(ctx, s)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("read offer from %s: %w", p, err)
	}
	s.Close()
	if len(env) == 0 {
		return nil, ErrNoOffer
	}
	return env, nil
}

func readEnvelope(ctx context.Context, s network.Stream) ([]byte, error) {
	deadline, _ := ctx.Deadline()
	release, err := prepare(s, MaxEnvelopeSize+binary.MaxVarintLen64, deadline)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	return ReadFrame(bufio.NewReaderSize(s, 512), MaxEnvelopeSize)
}

// ReadFrame reads one uvarint-length-prefixed frame of at most max bytes
// (wire.ReadFrame; a longer one is ErrTooLarge). The length is checked
// before anything is allocated.
func ReadFrame(r *bufio.Reader, max int) ([]byte, error) {
	b, err := wire.ReadFrame(r, max)
	return b, wire.Wrap(err, ErrMalformed, ErrTooLarge)
}
