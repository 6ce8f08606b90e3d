package offer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

// BucketProtocolID is the stream protocol on which a DHT server answers a
// buyer with the signed offers of a bucket's providers it holds records of,
// or, holding none, with the peers it knows closest to the bucket's key.
// The requester writes one frame (a BucketRequest), the server one frame
// (a BucketReply) and closes.
//
// It carries in one round trip what a provider lookup and a stream to each
// provider carried: the buyer's lookup walks to one holder of the bucket's
// provider records and asks it alone, for the offers it still misses,
// where the DHT's provider walk asks ten peers at once for every provider
// and address and the buyer then asks each seller. Every offer stays the
// seller's signed envelope, verified by the buyer; a node without this
// protocol is found the old way (Discoverer falls back to the provider walk).
const BucketProtocolID protocol.ID = "/blackbox/bucket/1.0.0"

// Limits of the bucket protocol.
const (
	// MaxBucketOffers caps the offers one reply carries.
	MaxBucketOffers = 64
	// MaxBucketCloser caps the closer peers one reply names.
	MaxBucketCloser = 8
	// maxBucketKey caps a bucket key (a SHA2-256 multihash is 34 bytes).
	maxBucketKey = 128
	// maxBucketRequest caps a request frame.
	maxBucketRequest = 256
	// maxBucketReply caps a reply frame: the offers and closer peers are
	// added only while they fit.
	maxBucketReply = 256 << 10
	// maxPeerInfo caps one closer peer's encoding.
	maxPeerInfo = 2 << 10
)

// BucketRequest asks a DHT server for up to Count offers of the bucket
// whose DHT key (the multihash of Bucket.CID) is Key.
type BucketRequest struct {
	Key   []byte
	Count int
}

// BucketReply is a server's answer: signed offer envelopes (unverified
// here: the buyer opens each) and, when it holds none, closer peers.
type BucketReply struct {
	Offers [][]byte
	Closer []peer.AddrInfo
}

// field numbers; never renumbered.
const (
	fReqKey   = 1
	fReqCount = 2

	fRepOffer  = 1
	fRepCloser = 2

	fPeerID   = 1
	fPeerAddr = 2
)

var (
	bucketRequestSchema = wire.Schema{Max: maxBucketRequest, Open: true, Fields: []wire.Spec{
		fReqKey: bytesField, fReqCount: varintField,
	}}
	bucketReplySchema = wire.Schema{Max: maxBucketReply, Open: true, Fields: []wire.Spec{
		fRepOffer: {Kind: wire.Bytes, Repeated: true}, fRepCloser: {Kind: wire.Bytes, Repeated: true},
	}}
	peerInfoSchema = wire.Schema{Max: maxPeerInfo, Open: true, Fields: []wire.Spec{
		fPeerID: bytesField, fPeerAddr: {Kind: wire.Bytes, Repeated: true},
	}}
)

// Marshal encodes the request.
func (r *BucketRequest) Marshal() []byte {
	e := wire.Encoder{B: make([]byte, 0, 48)}
	e.Bytes(fReqKey, r.Key)
	e.Uint(fReqCount, uint64(max(r.Count, 0)))
	return e.B
}

// Unmarshal decodes a request: a key of 1 to maxBucketKey bytes, a count
// capped at MaxBucketOffers.
func (r *BucketRequest) Unmarshal(b []byte) error {
	*r = BucketRequest{}
	err := bucketRequestSchema.Walk(b, func(f wire.Field) error {
		switch f.Num {
		case fReqKey:
			if len(f.B) == 0 || len(f.B) > maxBucketKey {
				return fmt.Errorf("%w: bucket key of %d bytes", ErrMalformed, len(f.B))
			}
			r.Key = append([]byte(nil), f.B...)
		case fReqCount:
			r.Count = int(min(f.V, MaxBucketOffers))
		}
		return nil
	})
	if err != nil {
		return decodeErr("bucket request", err)
	}
	if r.Key == nil {
		return fmt.Errorf("decode bucket request: %w: no key", ErrMalformed)
	}
	return nil
}

// Marshal encodes the reply; offers and closer peers past the frame's cap
// are left out.
func (r *BucketReply) Marshal() []byte {
	e := wire.Encoder{B: make([]byte, 0, 512)}
	for _, env := range r.Offers {
		if len(e.B)+len(env)+8 > maxBucketReply {
			break
		}
		e.Bytes(fRepOffer, env)
	}
	for _, ai := range r.Closer {
		pe := wire.Encoder{}
		pe.Bytes(fPeerID, []byte(ai.ID))
		for i, a := range ai.Addrs {
			if i == MaxAddrs || len(pe.B)+len(a.Bytes())+8 > maxPeerInfo {
				break
			}
			pe.Bytes(fPeerAddr, a.Bytes())
		}
		if len(e.B)+len(pe.B)+8 > maxBucketReply {
			break
		}
		e.Bytes(fRepCloser, pe.B)
	}
	return e.B
}

// Unmarshal decodes a reply: at most MaxBucketOffers envelopes of at most
// MaxEnvelopeSize bytes, at most MaxBucketCloser peers with valid IDs and
// addresses. The envelopes are copied, not verified.
func (r *BucketReply) Unmarshal(b []byte) error {
	*r = BucketReply{}
	err := bucketReplySchema.Walk(b, func(f wire.Field) error {
		switch f.Num {
		case fRepOffer:
			if len(r.Offers) == MaxBucketOffers {
				return fmt.Errorf("%w: more than %d offers", ErrMalformed, MaxBucketOffers)
			}
			if len(f.B) == 0 || len(f.B) > MaxEnvelopeSize {
				return fmt.Errorf("%w: offer envelope of %d bytes", ErrMalformed, len(f.B))
			}
			r.Offers = append(r.Offers, append([]byte(nil), f.B...))
		case fRepCloser:
			if len(r.Closer) == MaxBucketCloser {
				return fmt.Errorf("%w: more than %d closer peers", ErrMalformed, MaxBucketCloser)
			}
			ai, err := unmarshalPeerInfo(f.B)
			if err != nil {
				return err
			}
			r.Closer = append(r.Closer, ai)
		}
		return nil
	})
	if err != nil {
		return decodeErr("bucket reply", err)
	}
	return nil
}

// decodeErr wraps a decoding error of what in ErrInvalid's kinds.
func decodeErr(what string, err error) error {
	if errors.Is(err, wire.ErrUnsupported) {
		return fmt.Errorf("decode %s: %w: %w", what, ErrUnsupported, err)
	}
	return fmt.Errorf("decode %s: %w", what, wire.Wrap(err, ErrMalformed, ErrTooLarge))
}

func unmarshalPeerInfo(b []byte) (peer.AddrInfo, error) {
	var ai peer.AddrInfo
	err := peerInfoSchema.Walk(b, func(f wire.Field) error {
		switch f.Num {
		case fPeerID:
			id, err := peer.IDFromBytes(f.B)
			if err != nil {
				return fmt.Errorf("%w: closer peer: %v", ErrMalformed, err)
			}
			ai.ID = id
		case fPeerAddr:
			if len(ai.Addrs) == MaxAddrs {
				return fmt.Errorf("%w: closer peer: more than %d addresses", ErrMalformed, MaxAddrs)
			}
			a, err := ma.NewMultiaddrBytes(f.B)
			if err != nil {
				return fmt.Errorf("%w: closer peer address: %v", ErrMalformed, err)
			}
			ai.Addrs = append(ai.Addrs, a)
		}
		return nil
	})
	if err == nil && ai.ID == "" {
		err = fmt.Errorf("%w: closer peer without an ID", ErrMalformed)
	}
	return ai, err
}

// BucketIndex is a DHT server's side of BucketProtocolID: when a provider
// record of a bucket is put on this node (RecordStore tells it), it fetches
// the provider's offer over ProtocolID, verifies it (signed by the
// provider, valid, in that bucket: SellerBuckets) and keeps the envelope
// until the offer expires or the record goes; it answers buyers with them.
// A seller needs nothing new for its offer to be held so: an older seller
// that provides and serves ProtocolID is held the same way.
type BucketIndex struct {
	cfg BucketIndexConfig

	mu      sync.Mutex
	buckets map[string]map[peer.ID]heldOffer // by bucket key
	total   int
	fetches int // goroutines fetching
	queue   []wanted
	waiting map[wanted]bool // in queue
	// fetched is each provider's offer as last fetched, for the
	// records of its other buckets that follow.
	fetched map[peer.ID]fetchedOffer
}

// fetchedOffer is a provider's verified offer as fetched at at: its
// envelope, expiry and the DHT keys of its buckets, and those of them
// whose provider records came since (the publication's).
type fetchedOffer struct {
	held     heldOffer
	buckets  map[string]bool
	provided map[string]bool
	at       time.Time
}

// refetchAfter is how long a provider's fetched offer answers for the
// provider records of its other buckets. A seller provides each of its
// buckets (up to a dozen) one after the other when it publishes, and every
// record put here asked for its offer again: the same envelope over the
// same stream a dozen times per publication, on each of the bucket's
// closest servers. The first record of a publication fetches (a new
// sequence, a new expiry, new addresses); the records of the other buckets
// within refetchAfter are held from it. A second record of a bucket is a
// new publication (a seller provides each bucket once per publication,
// and may publish again seconds later with a relay's address): it fetches.
const refetchAfter = 30 * time.Second

// heldOffer is a verified envelope and its offer's expiry.
type heldOffer struct {
	env    []byte
	expiry time.Time
}

// BucketIndexConfig configures a BucketIndex.
type BucketIndexConfig struct {
	Host host.Host
	// Closest returns up to count peers this node knows closest to a DHT
	// key (the DHT's routing table); nil names none.
	Closest func(key []byte, count int) []peer.ID
	// MaxOffers caps the envelopes held (0: DefaultStoreLimits' MaxOffers).
	MaxOffers int
	// MaxFetches caps the fetches running at once; the others wait
	// their turn (0: 8).
	MaxFetches int
	Now        func() time.Time
	Log        *slog.Logger
}

// NewBucketIndex returns an empty index; ServeBuckets wires one to a host
// and a RecordStore.
func NewBucketIndex(cfg BucketIndexConfig) *BucketIndex {
	if cfg.MaxOffers <= 0 {
		cfg.MaxOffers = DefaultStoreLimits().MaxOffers
	}
	if cfg.MaxFetches <= 0 {
		cfg.MaxFetches = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &BucketIndex{cfg: cfg, buckets: map[string]map[peer.ID]heldOffer{}, waiting: map[wanted]bool{}, fetched: map[peer.ID]fetchedOffer{}}
}

// ServeBuckets makes h answer BucketProtocolID from the offers of the
// providers whose records rs holds.
func ServeBuckets(cfg BucketIndexConfig, rs *RecordStore) *BucketIndex {
	x := NewBucketIndex(cfg)
	rs.setProviderHooks(x.Provided, x.Removed)
	cfg.Host.SetStreamHandler(BucketProtocolID, x.Handle)
	return x
}

// Provided is told that p provides the bucket whose DHT key is key: p's
// offer is fetched in the background, MaxFetches at a time; past
// MaxOffers waiting, the record is not followed.
func (x *BucketIndex) Provided(key []byte, p peer.ID) {
	if p == x.cfg.Host.ID() {
		return
	}
	w := wanted{key: string(key), p: p}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.heldFromFetchedLocked(w) {
		return
	}
	if x.waiting[w] || len(x.queue) >= x.cfg.MaxOffers {
		return
	}
	x.waiting[w] = true
	x.queue = append(x.queue, w)
	if x.fetches < x.cfg.MaxFetches {
		x.fetches++
		go x.fetchQueued()
	}
}

// heldFromFetchedLocked holds w's offer from its provider's offer fetched
// less than refetchAfter ago, if that one is in w's bucket and unexpired.
func (x *BucketIndex) heldFromFetchedLocked(w wanted) bool {
	f, ok := x.fetched[w.p]
	now := x.cfg.Now()
	if !ok || !f.buckets[w.key] || f.provided[w.key] || now.Sub(f.at) >= refetchAfter || !now.Before(f.held.expiry) {
		return false
	}
	f.provided[w.key] = true
	if err := x.holdLocked([]byte(w.key), w.p, f.held); err != nil {
		x.cfg.Log.Debug("bucket offer not held", "peer", w.p, "err", err)
	}
	return true
}

// wanted is a provider record whose offer is to be fetched.
type wanted struct {
	key string
	p   peer.ID
}

// fetchQueued fetches the queue's offers until it is empty.
func (x *BucketIndex) fetchQueued() {
	for {
		x.mu.Lock()
		if len(x.queue) == 0 {
			x.fetches--
			x.mu.Unlock()
			return
		}
		w := x.queue[0]
		x.queue = x.queue[1:]
		delete(x.waiting, w)
		// Fetched meanwhile for another of its buckets (queued together).
		if x.heldFromFetchedLocked(w) {
			x.mu.Unlock()
			continue
		}
		x.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
		if err := x.fetch(ctx, []byte(w.key), w.p); err != nil {
			x.cfg.Log.Debug("bucket offer not held", "peer", w.p, "err", err)
		}
		cancel()
	}
}

func (x *BucketIndex) fetch(ctx context.Context, key []byte, p peer.ID) error {
	env, err := Fetch(ctx, x.cfg.Host, p)
	if errors.Is(err, ErrNoOffer) {
		x.mu.Lock()
		delete(x.fetched, p)
		x.removedLocked(key, p)
		x.mu.Unlock()
		return err
	}
	if err != nil {
		return err
	}
	o, err := Open(env, x.cfg.Now())
	if err != nil {
		return err
	}
	if o.Seller != p {
		return fmt.Errorf("%w: %s served an offer of %s", ErrWrongKey, p, o.Seller)
	}
	f := fetchedOffer{held: heldOffer{env: env, expiry: o.Expiry}, buckets: map[string]bool{}, provided: map[string]bool{string(key): true}, at: x.cfg.Now()}
	for _, b := range SellerBuckets(o) {
		f.buckets[string(b.CID().Hash())] = true
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.rememberLocked(p, f)
	if !f.buckets[string(key)] {
		x.removedLocked(key, p)
		return fmt.Errorf("%w: offer of %s is not in the bucket it provides", ErrInvalid, p)
	}
	return x.holdLocked(key, p, f.held)
}

// rememberLocked keeps p's fetched offer for refetchAfter, forgetting
// those older when there are more than MaxOffers.
func (x *BucketIndex) rememberLocked(p peer.ID, f fetchedOffer) {
	if len(x.fetched) >= x.cfg.MaxOffers {
		for q, g := range x.fetched {
			if f.at.Sub(g.at) >= refetchAfter {
				delete(x.fetched, q)
			}
		}
	}
	if len(x.fetched) < x.cfg.MaxOffers {
		x.fetched[p] = f
	}
}

// holdLocked keeps p's envelope for the bucket, replacing the one held; a
// new one past MaxOffers first evicts an expired one, else is refused.
func (x *BucketIndex) holdLocked(key []byte, p peer.ID, h heldOffer) error {
	set := x.buckets[string(key)]
	if _, ok := set[p]; !ok {
		if x.total >= x.cfg.MaxOffers && !x.evictLocked() {
			return ErrStoreFull
		}
		if set == nil {
			set = map[peer.ID]heldOffer{}
			x.buckets[string(key)] = set
		}
		x.total++
	}
	set[p] = h
	return nil
}

// evictLocked drops every expired envelope; false if none was.
func (x *BucketIndex) evictLocked() bool {
	now := x.cfg.Now()
	before := x.total
	for k, set := range x.buckets {
		for p, h := range set {
			if !now.Before(h.expiry) {
				delete(set, p)
				x.total--
			}
		}
		if len(set) == 0 {
			delete(x.buckets, k)
		}
	}
	return x.total < before
}

// Removed drops p's envelope for the bucket (its provider record went).
func (x *BucketIndex) Removed(key []byte, p peer.ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removedLocked(key, p)
}

func (x *BucketIndex) removedLocked(key []byte, p peer.ID) {
	set := x.buckets[string(key)]
	if _, ok := set[p]; !ok {
		return
	}
	delete(set, p)
	x.total--
	if len(set) == 0 {
		delete(x.buckets, string(key))
	}
}

// Offers returns up to count unexpired envelopes held for the bucket, in
// no fixed order (each seller as likely to be named as another).
func (x *BucketIndex) Offers(key []byte, count int) [][]byte {
	now := x.cfg.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	var out [][]byte
	for _, h := range x.buckets[string(key)] { // map order: random
		if len(out) == count {
			break
		}
		if now.Before(h.expiry) {
			out = append(out, h.env)
		}
	}
	return out
}

// Held reports how many envelopes are held.
func (x *BucketIndex) Held() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.total
}

// Reply is the answer to req: the offers held, else closer peers.
func (x *BucketIndex) Reply(req BucketRequest) BucketReply {
	var r BucketReply
	if req.Count > 0 {
		r.Offers = x.Offers(req.Key, req.Count)
	}
	if len(r.Offers) == 0 && x.cfg.Closest != nil {
		ps := x.cfg.Host.Peerstore()
		for _, p := range x.cfg.Closest(req.Key, MaxBucketCloser) {
			r.Closer = append(r.Closer, peer.AddrInfo{ID: p, Addrs: ps.Addrs(p)})
		}
	}
	return r
}

// Handle serves one BucketProtocolID stream.
func (x *BucketIndex) Handle(s network.Stream) {
	if err := x.serve(s); err != nil {
		x.cfg.Log.Debug("bucket stream failed", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	s.Close()
}

func (x *BucketIndex) serve(s network.Stream) error {
	release, err := prepare(s, maxBucketReply, time.Now().Add(streamTimeout))
	if err != nil {
		return err
	}
	defer release()
	raw, err := ReadFrame(bufio.NewReaderSize(s, 256), maxBucketRequest)
	if err != nil {
		return err
	}
	var req BucketRequest
	if err := req.Unmarshal(raw); err != nil {
		return err
	}
	reply := x.Reply(req)
	_, err = s.Write(wire.AppendFrame(nil, reply.Marshal()))
	return err
}

// AskBucket asks peer p for up to count offers of the bucket whose DHT key
// is key.
func AskBucket(ctx context.Context, h host.Host, p peer.ID, key []byte, count int) (*BucketReply, error) {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, BucketProtocolID)
	if err != nil {
		return nil, fmt.Errorf("open bucket stream to %s: %w", p, err)
	}
	reply, err := askBucket(ctx, s, key, count)
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("ask %s for a bucket's offers: %w", p, err)
	}
	s.Close()
	return reply, nil
}

func askBucket(ctx context.Context, s network.Stream, key []byte, count int) (*BucketReply, error) {
	deadline, _ := ctx.Deadline()
	release, err := prepare(s, maxBucketReply, deadline)
	if err != nil {
		return nil, err
	}
	defer release()
	req := BucketRequest{Key: key, Count: count}
	if _, err := s.Write(wire.AppendFrame(nil, req.Marshal())); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	raw, err := ReadFrame(bufio.NewReaderSize(s, 4096), maxBucketReply)
	if err != nil {
		return nil, err
	}
	var reply BucketReply
	if err := reply.Unmarshal(raw); err != nil {
		return nil, err
	}
	return &reply, nil
}
