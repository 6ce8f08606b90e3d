package offer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
)

// Finder is what discovery needs from the DHT.
type Finder interface {
	// FindProvidersAsync streams up to count providers of a bucket's CID.
	FindProvidersAsync(ctx context.Context, c cid.Cid, count int) <-chan peer.AddrInfo
	// GetValue fetches the best record stored under key.
	GetValue(ctx context.Context, key string, opts ...routing.Option) ([]byte, error)
}

// DiscovererConfig configures a Discoverer.
type DiscovererConfig struct {
	Host host.Host
	// Finder is the DHT; nil asks only connected peers.
	Finder Finder
	// MaxProviders caps the providers asked per lookup.
	MaxProviders int
	// Parallel is how many sellers are asked at once.
	Parallel int
	// PerPeerTimeout bounds fetching one seller's offer.
	PerPeerTimeout time.Duration
	// CacheMaxAge is how long a verified offer is reused without asking its
	// seller again, never past the offer's own expiry: 0 means
	// DefaultCacheMaxAge, negative turns the cache off.
	CacheMaxAge time.Duration
	// Closest returns up to count peers of the DHT's routing table closest
	// to a DHT key: where FindN starts its walk to a holder of the bucket's
	// provider records (BucketProtocolID). Nil: the Finder's routing table
	// if it has one (a *dht.IpfsDHT), else no such walk.
	Closest func(key []byte, count int) []peer.ID
	// OnReject, if set, is called for every offer refused (for metrics).
	OnReject func(p peer.ID, err error)
	Now      func() time.Time
	Log      *slog.Logger
}

// DefaultCacheMaxAge bounds how stale a cached offer's capacity and prices
// may be: a seller re-signs its offer when its spare capacity changes, and a
// buyer holding an older one learns of it at the proposal (a refusal for
// capacity) and tries the next seller.
const DefaultCacheMaxAge = time.Minute

// Discoverer finds offers on the network and verifies every one of them.
// It remembers the highest sequence seen from each seller, so an older offer
// replayed later is refused.
//
// FindN (a lookup that stops at n offers, the buyer's --limit) first walks
// to a holder of the provider records of the filter's bucket and asks it
// alone for n offers (BucketProtocolID, fromHolders): one round trip to one
// peer, usually the closest or the second closest the routing table knows,
// where the DHT's provider walk asks ten peers at once for every provider
// and its addresses and the buyer then opens a stream to each seller. The
// holder names the sellers' own signed envelopes, which the buyer opens on
// every core. What the holders cannot give (none on the way speaks the
// protocol: older nodes; a holder with fewer; offers refused or not
// matching) is looked for the old way:
//
// Sellers come from the DHT providers of the filter's bucket, each
// provider's offer fetched as soon as the provider is found, Parallel at a
// time, while the query goes on; FindN stops the query and the fetches once
// it holds n matching offers.
// FindN first asks the DHT for n providers only, as a plain
// FindProvidersAsync of n does: that query ends at the first answer naming
// n (asked for more, the DHT walks on and queries every closest peer again,
// which here cost as much CPU as the fetches). It fetches no more than the
// offers it still misses and fetchSpare more at once (a fetch past the n-th
// offer is work thrown away, and a signature checked after the lookup ended
// is skipped). Only if those n providers cannot give n matching offers, or
// their fetches take longer than wideAfter, does it ask the DHT for up to
// MaxProviders.
// Only a lookup that has not reached n once the query ends asks the
// connected peers the DHT did not name (a small network's DHT may not name
// every seller yet), skipping those that had nothing on offer within
// CacheMaxAge. A verified offer is kept in a cache and reused without a stream
// (or, named by a holder in the same bytes, without a second signature
// check) until the earlier of its expiry and CacheMaxAge after it was
// fetched, so a node that looks up repeatedly (a buyer's daemon) pays only
// for the walk and for sellers it has not heard from lately; one that does
// not match the lookup's filter is fetched again after MissRefetchAfter. Only offers
// that passed Verify (signature by the seller's key, valid now, sequence not
// older than one seen) enter the cache; an entry is dropped when it expires
// or when its seller's next fetch fails or is refused, and a newer sequence
// replaces it. An offer a holder names is checked the same way: a holder
// can withhold offers, or name a seller's older offer while it is still
// valid (as a stale DHT value record can; refused once the buyer saw a
// newer one), never forge or prolong one.
type Discoverer struct {
	cfg DiscovererConfig

	mu    sync.Mutex
	seen  map[peer.ID]uint64
	cache map[peer.ID]cachedOffer
	byEnv map[string]peer.ID // the cache's envelopes
}

// cachedOffer is a verified offer (nil: the peer had nothing on offer),
// when it was verified, and the time until which it is reused.
type cachedOffer struct {
	o     *Offer
	env   []byte // the envelope o was opened from
	at    time.Time
	until time.Time
}

// MissRefetchAfter is how old a cached offer that does not match a
// lookup's filter may be before the lookup asks its seller again: the
// seller may have re-signed it since with what the buyer asks for now (a
// runtime that joined its offer, capacity freed). A match is reused for
// CacheMaxAge (a stale one is found out at the proposal); a miss would
// hide the seller until then.
const MissRefetchAfter = 5 * time.Second

// NewDiscoverer returns a discoverer.
func NewDiscoverer(cfg DiscovererConfig) *Discoverer {
	if cfg.MaxProviders <= 0 {
		cfg.MaxProviders = 500
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 32 // a buyer's page of 20 and the spares in one round trip
	}
	if cfg.PerPeerTimeout <= 0 {
		cfg.PerPeerTimeout = 5 * time.Second
	}
	if cfg.CacheMaxAge == 0 {
		cfg.CacheMaxAge = DefaultCacheMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if rt, ok := cfg.Finder.(interface{ RoutingTable() *kb.RoutingTable }); ok && cfg.Closest == nil {
		cfg.Closest = func(key []byte, count int) []peer.ID {
			return rt.RoutingTable().NearestPeers(kb.ConvertKey(string(key)), count)
		}
	}
	return &Discoverer{cfg: cfg, seen: make(map[peer.ID]uint64), cache: make(map[peer.ID]cachedOffer), byEnv: make(map[string]peer.ID)}
}

// Find returns the verified offers matching f, cheapest first. Sellers come
// from the DHT providers of the filter's bucket and from connected peers;
// the node's own offer is not included.
func (d *Discoverer) Find(ctx context.Context, f Filter) ([]*Offer, error) {
	return d.FindN(ctx, f, f.Limit)
}

// FindN is Find stopping as soon as it holds n matching offers (n <= 0: all
// it can find). The n are the first found, not the n cheapest of the network;
// they are returned cheapest first.
func (d *Discoverer) FindN(ctx context.Context, f Filter, n int) ([]*Offer, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	self := d.cfg.Host.ID()
	var (
		out     []*Offer
		pending int
		// A fetch still running when FindN returns gives up its result
		// (ctx is cancelled then).
		results = make(chan *Offer, d.cfg.Parallel)
		seen    = map[peer.ID]bool{self: true}
		// The sellers: the DHT providers of the filter's bucket as they
		// are found (read here, not through another goroutine: each hop
		// costs a scheduling round on a busy machine), then, if n is not
		// reached, the connected peers (a small network's DHT may not name
		// every seller yet) but those that had nothing on offer lately.
		providers <-chan peer.AddrInfo
		connected []peer.ID
		fromDHT   int
		// The first query asks the DHT for n providers only: it ends, as
		// a plain FindProvidersAsync of n does, at the first answer that
		// names n (the DHT's walk and its follow-up to the closest peers
		// cost as much as the fetches otherwise). wide is the query for
		// up to MaxProviders, run only if those n gave fewer than n
		// matching offers.
		count = d.cfg.MaxProviders
		wide  = false
		named int // providers the current query named
	)
	if n > 0 && n < count {
		count, wide = n, true
	}
	bucket := QueryBucket(f)
	if n > 0 && d.cfg.Closest != nil {
		// One holder of the bucket's provider records names n offers (and
		// spares, in case some are refused) in one round trip; only those
		// it could not give are looked for the old way below.
		for _, o := range d.fromHolders(ctx, bucket.CID().Hash(), f, n+fetchSpare, n) {
			if !seen[o.Seller] && len(out) < n {
				seen[o.Seller] = true
				out = append(out, o)
			}
		}
		if len(out) >= n {
			f.Sort(out)
			return out, nil
		}
	}
	var lcancel context.CancelFunc = func() {}
	defer func() { lcancel() }()
	start := func(count int) {
		lcancel()
		var lctx context.Context
		lctx, lcancel = context.WithTimeout(ctx, 20*time.Second)
		providers = d.cfg.Finder.FindProvidersAsync(lctx, bucket.CID(), count)
		named = 0
	}
	if d.cfg.Finder != nil {
		start(count)
	} else {
		connected = d.cfg.Host.Network().Peers()
		wide = false
	}
	keep := func(o *Offer) {
		if o != nil && f.Match(o) {
			out = append(out, o)
		}
	}
	// limit is how many fetches may run at once: Parallel, and, when the
	// lookup stops at n, no more than the offers still missing and a
	// spare or two (a fetch started past the n-th offer is work thrown
	// away).
	limit := func() int {
		if n <= 0 {
			return d.cfg.Parallel
		}
		return min(d.cfg.Parallel, n-len(out)+fetchSpare)
	}
	// ask takes a seller's offer from the cache or starts fetching it once
	// a slot is free; false when the lookup is over.
	ask := func(p peer.ID, addrs []ma.Multiaddr, provider bool) bool {
		if seen[p] || p == "" || (!provider && d.empty(p)) {
			return true
		}
		seen[p] = true
		if o := d.cachedFor(p, f); o != nil {
			keep(o)
			return true
		}
		for pending >= limit() {
			if n > 0 && len(out) >= n {
				return false
			}
			select {
			case o := <-results: // a slot frees only once its result is read
				pending--
				keep(o)
			case <-ctx.Done():
				return false
			}
		}
		if n > 0 && len(out) >= n {
			return false
		}
		pending++
		go func() {
			o := d.fetchReport(ctx, peer.AddrInfo{ID: p, Addrs: addrs})
			select {
			case results <- o:
			case <-ctx.Done():
			}
		}()
		return true
	}
	// hedge fires wideAfter after the narrow query ended short of n
	// offers with fetches still running (a named seller may be gone, its
	// fetch waiting for a dial to time out).
	var hedge <-chan time.Time
loop:
	for n <= 0 || len(out) < n {
		if providers == nil {
			if wide && (len(out)+pending < n || pending == 0) {
				// The n providers named cannot give n offers any more:
				// ask the DHT for all it knows.
				wide, hedge = false, nil
				start(d.cfg.MaxProviders)
				continue
			}
			if !wide && len(connected) > 0 {
				p := connected[0]
				connected = connected[1:]
				if !ask(p, nil, false) {
					break
				}
				continue
			}
			if pending == 0 {
				break
			}
		}
		select {
		case ai, ok := <-providers: // never ready once nil
			if !ok {
				providers = nil
				if wide && named < count {
					wide = false // the DHT knows no more than it named
				}
				if wide {
					hedge = time.After(wideAfter)
				} else {
					d.cfg.Log.Debug("dht providers", "bucket", string(bucket), "found", fromDHT)
					connected = d.cfg.Host.Network().Peers()
				}
				continue
			}
			named++
			if ai.ID != self {
				fromDHT++
			}
			if !ask(ai.ID, ai.Addrs, true) {
				break loop
			}
		case o := <-results:
			pending--
			keep(o)
		case <-hedge:
			hedge = nil
			if wide && providers == nil {
				wide = false
				start(d.cfg.MaxProviders)
			}
		case <-ctx.Done():
			break loop
		}
	}
	if err := parent.Err(); err != nil && len(out) == 0 {
		return nil, err
	}
	f.Sort(out)
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// fetchSpare is how many fetches FindN runs past the offers it still
// misses, in case some fail or do not match.
const fetchSpare = 2

// wideAfter is how long FindN waits on the fetches of the n providers its
// first query named before it asks the DHT for more.
const wideAfter = time.Second

// fetchReport fetches one seller's offer; a refusal is logged and reported,
// and any failure returns nil.
func (d *Discoverer) fetchReport(ctx context.Context, ai peer.AddrInfo) *Offer {
	o, err := d.fetch(ctx, ai)
	if err == nil {
		return o
	}
	if ctx.Err() != nil { // the lookup ended first: nothing learnt of the seller
		return nil
	}
	d.forget(ai.ID, errors.Is(err, ErrNoOffer))
	if !errors.Is(err, ErrNoOffer) {
		d.cfg.Log.Debug("offer rejected", "peer", ai.ID, "err", err)
		if d.cfg.OnReject != nil {
			d.cfg.OnReject(ai.ID, err)
		}
	}
	return nil
}

// fetch gets one seller's offer over the stream protocol, falling back to
// the DHT record, and verifies it.
func (d *Discoverer) fetch(ctx context.Context, ai peer.AddrInfo) (*Offer, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.PerPeerTimeout)
	defer cancel()
	h := d.cfg.Host
	if len(ai.Addrs) > 0 && h.Network().Connectedness(ai.ID) != network.Connected {
		h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	}
	env, err := Fetch(ctx, h, ai.ID)
	if errors.Is(err, ErrNoOffer) {
		return nil, err
	}
	if err != nil && d.cfg.Finder != nil {
		var derr error
		env, derr = d.cfg.Finder.GetValue(ctx, DHTKey(ai.ID))
		if derr != nil {
			return nil, fmt.Errorf("%v; dht: %w", err, derr)
		}
	} else if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the lookup is over: the signature check would be work thrown away
	}
	o, err := d.Verify(ai.ID, env)
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Verify opens an envelope that peer p served as its own offer: valid, signed
// by p, and not older than the newest offer already seen from p. An offer
// that passes is cached as p's (see Discoverer).
func (d *Discoverer) Verify(p peer.ID, env []byte) (*Offer, error) {
	o, err := Open(env, d.cfg.Now())
	if err != nil {
		return nil, err
	}
	if o.Seller != p {
		return nil, fmt.Errorf("%w: %s served an offer of %s", ErrWrongKey, p, o.Seller)
	}
	return o, d.accept(o, env)
}

// accept takes an opened offer as its seller's unless it is older than one
// seen from it, and caches it.
func (d *Discoverer) accept(o *Offer, env []byte) error {
	p := o.Seller
	d.mu.Lock()
	defer d.mu.Unlock()
	if o.Seq < d.seen[p] {
		return fmt.Errorf("%w: seq %d < %d", ErrStaleSeq, o.Seq, d.seen[p])
	}
	d.seen[p] = o.Seq
	if d.cfg.CacheMaxAge > 0 {
		until := d.cfg.Now().Add(d.cfg.CacheMaxAge)
		if o.Expiry.Before(until) {
			until = o.Expiry
		}
		d.dropLocked(p)
		d.cache[p] = cachedOffer{o: o, env: env, at: d.cfg.Now(), until: until}
		d.byEnv[string(env)] = p
	}
	return nil
}

// dropLocked removes p's cache entry.
func (d *Discoverer) dropLocked(p peer.ID) {
	if c, ok := d.cache[p]; ok {
		delete(d.byEnv, string(c.env))
		delete(d.cache, p)
	}
}

// cachedEnv returns the cached offer opened from exactly env, if any and
// still to be reused: the same bytes need no second signature check.
func (d *Discoverer) cachedEnv(env []byte) *Offer {
	d.mu.Lock()
	p, ok := d.byEnv[string(env)]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	return d.cached(p)
}

// cached returns p's cached verified offer if it is still to be reused.
func (d *Discoverer) cached(p peer.ID) *Offer {
	o, _ := d.cachedAt(p)
	return o
}

// cachedFor is cached for a lookup with filter f: nil (fetch it again)
// for an offer that does not match f and was verified MissRefetchAfter
// ago or more.
func (d *Discoverer) cachedFor(p peer.ID, f Filter) *Offer {
	o, at := d.cachedAt(p)
	if o != nil && !f.Match(o) && !d.cfg.Now().Before(at.Add(MissRefetchAfter)) {
		return nil
	}
	return o
}

// cachedAt is cached, with when the offer was verified.
func (d *Discoverer) cachedAt(p peer.ID) (*Offer, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.cache[p]
	if !ok || c.o == nil {
		return nil, time.Time{}
	}
	if !d.cfg.Now().Before(c.until) {
		d.dropLocked(p)
		return nil, time.Time{}
	}
	return c.o, c.at
}

// forget drops p's cached offer (its seller no longer serves it); empty: p
// said it has nothing on offer, so it is asked again as a connected peer only
// after CacheMaxAge (as a DHT provider, at once).
func (d *Discoverer) forget(p peer.ID, empty bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropLocked(p)
	if empty && d.cfg.CacheMaxAge > 0 {
		d.cache[p] = cachedOffer{until: d.cfg.Now().Add(d.cfg.CacheMaxAge)}
	}
}

// empty reports whether p said lately that it has nothing on offer.
func (d *Discoverer) empty(p peer.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.cache[p]
	return ok && c.o == nil && d.cfg.Now().Before(c.until)
}
