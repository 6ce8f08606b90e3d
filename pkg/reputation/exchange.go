package reputation

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// ProtocolID is the attestation exchange protocol.
//
// The dialer sends signed records (attestations and trust statements), each
// as a uvarint length and the envelope bytes, ending with a zero length; the
// listener answers with one uvarint, the number it accepted, and closes.
// The listener caps the record size (max_attestation_bytes) and the count
// per stream (max_attestations_per_stream), sets a deadline, reserves the
// frame memory from the stream's scope, rate-limits each peer (a token
// bucket of rate_per_minute, burst rate_burst) and resets the stream on any
// error. Exceeding the rate or the size cap is abuse: the stream is reset
// and the sender's standing drops. 1.1.0 carries the "verified" outcome
// (spot checks): a 1.0.0 node would take it for a malformed record and
// penalise the sender, so the two do not exchange.
const ProtocolID protocol.ID = "/blackbox/reputation/1.1.0"

// ServiceName is the resource-manager service of the exchange.
const ServiceName = "blackbox.reputation"

// Exchange serves and uses ProtocolID.
type Exchange struct {
	h    host.Host
	book *Book
	cfg  Config
	log  *slog.Logger

	mu      sync.Mutex
	buckets map[peer.ID]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewExchange registers the protocol handler on h; records go into book.
func NewExchange(h host.Host, book *Book, log *slog.Logger) *Exchange {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &Exchange{h: h, book: book, cfg: book.cfg, log: log, buckets: map[peer.ID]*bucket{}}
	h.SetStreamHandler(ProtocolID, x.handle)
	return x
}

// Close removes the handler.
func (x *Exchange) Close() { x.h.RemoveStreamHandler(ProtocolID) }

// take spends one token of p's bucket; false when p is over its rate.
func (x *Exchange) take(p peer.ID) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	now := x.book.now()
	b := x.buckets[p]
	if b == nil {
		b = &bucket{tokens: float64(x.cfg.RateBurst), at: now}
		x.buckets[p] = b
	}
	if now.After(b.at) {
		b.tokens += now.Sub(b.at).Minutes() * x.cfg.RatePerMinute
		if b.tokens > float64(x.cfg.RateBurst) {
			b.tokens = float64(x.cfg.RateBurst)
		}
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (x *Exchange) handle(s network.Stream) {
	from := s.Conn().RemotePeer()
	log := x.log.With("peer", from, "protocol", ProtocolID)
	fail := func(msg string, err error) {
		log.Debug("reputation exchange: "+msg, "err", err)
		_ = s.Reset()
	}
	if err := s.Scope().SetService(ServiceName); err != nil {
		fail("attach to service", err)
		return
	}
	max := x.cfg.MaxAttestationBytes
	if err := s.Scope().ReserveMemory(max, network.ReservationPriorityAlways); err != nil {
		fail("reserve memory", err)
		return
	}
	defer s.Scope().ReleaseMemory(max)
	deadline := time.Now().Add(x.cfg.StreamTimeout)
	_ = s.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	r := bufio.NewReaderSize(s, 512)
	buf := make([]byte, max)
	accepted := 0
	for n := 0; n < x.cfg.MaxAttestationsPerStream; n++ {
		size, err := wire.ReadFrameSize(r, max)
		if errors.Is(err, wire.ErrTooLarge) {
			x.book.count(ReasonOversized, from)
			x.book.Penalize(from, "oversized attestation")
			fail("oversized record", err)
			return
		}
		if err != nil {
			fail("read length", err)
			return
		}
		if size == 0 {
			break
		}
		if !x.take(from) {
			x.book.count(ReasonRateLimited, from)
			x.book.Penalize(from, "attestation flood")
			fail("rate limited", nil)
			return
		}
		rec := buf[:size]
		if _, err := io.ReadFull(r, rec); err != nil {
			fail("read record", err)
			return
		}
		if err := x.book.AddRecord(ctx, from, append([]byte(nil), rec...)); err == nil {
			accepted++
		} else if !errors.Is(err, ErrRejected) {
			log.Warn("reputation exchange: keep record", "err", err)
		}
	}
	if _, err := s.Write(binary.AppendUvarint(nil, uint64(accepted))); err != nil {
		fail("write reply", err)
		return
	}
	_ = s.Close()
}

// Push sends records to p, in streams of at most max_attestations_per_stream
// records, and returns how many p accepted.
func (x *Exchange) Push(ctx context.Context, p peer.ID, records [][]byte) (int, error) {
	total := 0
	for len(records) > 0 {
		n := min(len(records), x.cfg.MaxAttestationsPerStream)
		got, err := x.push(ctx, p, records[:n])
		total += got
		if err != nil {
			return total, err
		}
		records = records[n:]
	}
	return total, nil
}

func (x *Exchange) push(ctx context.Context, p peer.ID, records [][]byte) (int, error) {
	s, err := x.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return 0, fmt.Errorf("push attestations to %s: %w", p, err)
	}
	_ = s.SetDeadline(time.Now().Add(x.cfg.StreamTimeout))
	w := bufio.NewWriter(s)
	for _, rec := range records {
		w.Write(wire.AppendFrame(nil, rec))
	}
	w.WriteByte(0)
	if err := w.Flush(); err != nil {
		_ = s.Reset()
		return 0, fmt.Errorf("push attestations to %s: %w", p, err)
	}
	_ = s.CloseWrite()
	n, err := binary.ReadUvarint(bufio.NewReader(s))
	if err != nil {
		_ = s.Reset()
		return 0, fmt.Errorf("push attestations to %s: read reply: %w", p, err)
	}
	_ = s.Close()
	return int(n), nil
}
