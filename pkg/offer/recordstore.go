package offer

import (
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
)

// StoreLimits bound what a DHT server node keeps for other peers: offer
// records (one per seller) and provider records (one per seller and
// bucket). Without them every node stored every valid offer of every
// identity anyone cared to create.
type StoreLimits struct {
	// MaxOffers is the most offer records kept; past it the least useful
	// one is evicted: expired first, then the least recently refreshed.
	MaxOffers int
	// MaxProviders is the most provider records kept, evicted the same way.
	MaxProviders int
	// PeerBurst and PeerRate bound how fast one identity may put: a token
	// bucket of PeerBurst puts, refilled at PeerRate puts per second. For
	// offer records the identity is the seller the record is for (only it
	// can sign one); for provider records it is the providing peer.
	PeerBurst int
	PeerRate  float64
	// ProvideValidity is how long a provider record lasts unless refreshed.
	ProvideValidity time.Duration
	// Keep, if set, marks peers whose records are never evicted (for
	// example this node's contract partners); it is asked when a record is
	// put or refreshed. The node's own records are kept too.
	Keep func(peer.ID) bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultStoreLimits keeps up to 4096 offers (at most 32 MiB of envelopes)
// and 65536 provider records, and lets one identity put 64 records at once
// and one a second after that: a seller publishes one offer and at most a
// dozen buckets when its offer changes.
func DefaultStoreLimits() StoreLimits {
	return StoreLimits{MaxOffers: 4096, MaxProviders: 65536, PeerBurst: 64, PeerRate: 1, ProvideValidity: 48 * time.Hour}
}

// ErrRateLimited is why a put from an identity that puts too fast fails.
var ErrRateLimited = errors.New("offer store: too many records from this peer, try again later")

// ErrStoreFull is why a put fails when every stored record is one to keep.
var ErrStoreFull = errors.New("offer store: full")

// RecordStore is the DHT's datastore (dht.Datastore) on a blackbox node: an
// in-memory store that counts the offer and provider records it holds for
// others, bounds them, and rate-limits each identity's puts. Everything else
// (the node's own records, keys of other kinds) passes through.
type RecordStore struct {
	ds.Batching
	self   peer.ID
	limits StoreLimits

	mu      sync.Mutex
	entries map[ds.Key]*entry
	count   [2]int // per kind
	buckets map[peer.ID]*rate.Limiter
	puts    int // since the last sweep of buckets

	// provided and unprovided, if set, are told of each provider record
	// of another peer put (new or refreshed) and deleted, with the
	// record's DHT key (a bucket's multihash): a BucketIndex follows them.
	provided, unprovided func(key []byte, p peer.ID)
}

// setProviderHooks sets the functions told of provider records put and
// deleted (see ServeBuckets).
func (s *RecordStore) setProviderHooks(provided, unprovided func(key []byte, p peer.ID)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.provided, s.unprovided = provided, unprovided
}

// providedKey is the DHT key (a multihash) of a provider record's
// datastore key, "/providers/<base32 key>/<base32 peer>".
func providedKey(key ds.Key) ([]byte, bool) {
	parts := key.List()
	if len(parts) != 3 {
		return nil, false
	}
	k, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(parts[1])
	return k, err == nil
}

type recordKind int

const (
	kindOffer recordKind = iota
	kindProvider
)

type entry struct {
	kind    recordKind
	peer    peer.ID
	added   time.Time
	expires time.Time
	keep    bool // never evicted: the node's own, or Keep said so when it was put
}

// NewRecordStore returns an empty store for the node self.
func NewRecordStore(self peer.ID, limits StoreLimits) *RecordStore {
	if limits.Now == nil {
		limits.Now = time.Now
	}
	return &RecordStore{
		Batching: dssync.MutexWrap(ds.NewMapDatastore()),
		self:     self,
		limits:   limits,
		entries:  map[ds.Key]*entry{},
		buckets:  map[peer.ID]*rate.Limiter{},
	}
}

// Counts reports how many offer and provider records are stored.
func (s *RecordStore) Counts() (offers, providers int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[kindOffer], s.count[kindProvider]
}

// classify says which bounded kind of record key is, and whose it is.
// Offer records are "/blackbox/<base32 of /blackbox/offer/PEER>" (the value
// store's layout), provider records "/providers/<base32 CID>/<base32 PEER>".
func classify(key ds.Key) (recordKind, peer.ID, bool) {
	parts := key.List()
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding)
	switch {
	case len(parts) == 2 && parts[0] == DHTNamespace:
		raw, err := b32.DecodeString(parts[1])
		if err != nil {
			return 0, "", false
		}
		p, err := sellerFromKey(string(raw))
		if err != nil {
			return 0, "", false
		}
		return kindOffer, p, true
	case len(parts) == 3 && parts[0] == "providers":
		raw, err := b32.DecodeString(parts[2])
		if err != nil {
			return 0, "", false
		}
		p, err := peer.IDFromBytes(raw)
		if err != nil {
			return 0, "", false
		}
		return kindProvider, p, true
	}
	return 0, "", false
}

// Put stores a record, counting it; a new record of another identity is
// refused while that identity puts too fast, and evicts the least useful
// one when its kind is at its cap.
func (s *RecordStore) Put(ctx context.Context, key ds.Key, value []byte) error {
	kind, p, ok := classify(key)
	if !ok {
		return s.Batching.Put(ctx, key, value)
	}
	now := s.limits.Now()
	others := p != s.self
	e := &entry{kind: kind, peer: p, added: now, expires: s.expiry(kind, value, now),
		keep: !others || s.limits.Keep != nil && s.limits.Keep(p)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if others && !s.allow(p, now) {
		return fmt.Errorf("%w (%s)", ErrRateLimited, p)
	}
	_, exists := s.entries[key]
	if !exists && others {
		max := s.limits.MaxOffers
		if kind == kindProvider {
			max = s.limits.MaxProviders
		}
		for max > 0 && s.count[kind] >= max {
			if !s.evictLocked(ctx, kind, now) {
				return fmt.Errorf("%w: %d records, all kept", ErrStoreFull, s.count[kind])
			}
		}
	}
	if err := s.Batching.Put(ctx, key, value); err != nil {
		return err
	}
	if !exists {
		s.count[kind]++
	}
	s.entries[key] = e
	if kind == kindProvider && others && s.provided != nil {
		if k, ok := providedKey(key); ok {
			s.provided(k, p) // returns at once: the fetch runs on its own
		}
	}
	return nil
}

// expiry is when a record stops being useful: an offer's own expiry, a
// provider record's validity after it was put.
func (s *RecordStore) expiry(kind recordKind, value []byte, now time.Time) time.Time {
	if kind == kindProvider {
		return now.Add(s.limits.ProvideValidity)
	}
	var rec recpb.Record
	if err := proto.Unmarshal(value, &rec); err == nil {
		// The value store validated the record before this put.
		if o, err := Open(rec.GetValue(), now); err == nil {
			return o.Expiry
		}
	}
	return now // unreadable: first to go
}

// allow takes a token from p's bucket.
func (s *RecordStore) allow(p peer.ID, now time.Time) bool {
	if s.limits.PeerBurst <= 0 {
		return true
	}
	s.puts++
	if s.puts >= 4096 {
		s.sweepBuckets(now)
	}
	b := s.buckets[p]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(s.limits.PeerRate), s.limits.PeerBurst)
		s.buckets[p] = b
	}
	return b.AllowN(now, 1)
}

// sweepBuckets forgets the buckets that have refilled: the map holds only
// identities that put recently, however many an attacker creates.
func (s *RecordStore) sweepBuckets(now time.Time) {
	s.puts = 0
	for p, b := range s.buckets {
		if b.TokensAt(now) >= float64(s.limits.PeerBurst) {
			delete(s.buckets, p)
		}
	}
}

// evictLocked deletes the least useful record of kind that is not kept: an
// expired one if any, else the least recently refreshed.
func (s *RecordStore) evictLocked(ctx context.Context, kind recordKind, now time.Time) bool {
	var victim ds.Key
	var worst *entry
	for k, e := range s.entries {
		if e.kind != kind || e.keep {
			continue
		}
		if worst == nil || lessUseful(e, worst, now) {
			victim, worst = k, e
		}
	}
	if worst == nil {
		return false
	}
	_ = s.Batching.Delete(ctx, victim)
	delete(s.entries, victim)
	s.count[kind]--
	if kind == kindProvider && s.unprovided != nil {
		if k, ok := providedKey(victim); ok {
			s.unprovided(k, worst.peer)
		}
	}
	return true
}

func lessUseful(a, b *entry, now time.Time) bool {
	ae, be := !a.expires.After(now), !b.expires.After(now)
	if ae != be {
		return ae
	}
	return a.added.Before(b.added)
}

// Delete removes a record (the DHT's garbage collection uses it too).
func (s *RecordStore) Delete(ctx context.Context, key ds.Key) error {
	if err := s.Batching.Delete(ctx, key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[key]; ok {
		delete(s.entries, key)
		s.count[e.kind]--
		if e.kind == kindProvider && s.unprovided != nil {
			if k, ok := providedKey(key); ok {
				s.unprovided(k, e.peer)
			}
		}
	}
	return nil
}

// Batch routes a batch's puts and deletes through the bounds.
func (s *RecordStore) Batch(ctx context.Context) (ds.Batch, error) {
	return ds.NewBasicBatch(s), nil
}

var _ ds.Batching = (*RecordStore)(nil)
