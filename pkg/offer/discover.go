package offer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
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
	// OnReject, if set, is called for every offer refused (for metrics).
	OnReject func(p peer.ID, err error)
	Now      func() time.Time
	Log      *slog.Logger
}

// Discoverer finds offers on the network and verifies every one of them.
// It remembers the highest sequence seen from each seller, so an older offer
// replayed later is refused.
type Discoverer struct {
	cfg DiscovererConfig

	mu   sync.Mutex
	seen map[peer.ID]uint64
}

// NewDiscoverer returns a discoverer.
func NewDiscoverer(cfg DiscovererConfig) *Discoverer {
	if cfg.MaxProviders <= 0 {
		cfg.MaxProviders = 500
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	if cfg.PerPeerTimeout <= 0 {
		cfg.PerPeerTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Discoverer{cfg: cfg, seen: make(map[peer.ID]uint64)}
}

// Find returns the verified offers matching f, cheapest first. Sellers come
// from the DHT providers of the filter's bucket and from connected peers; the
// node's own offer is not included.
func (d *Discoverer) Find(ctx context.Context, f Filter) ([]*Offer, error) {
	cands := d.candidates(ctx, f)
	var (
		mu  sync.Mutex
		out []*Offer
		wg  sync.WaitGroup
		sem = make(chan struct{}, d.cfg.Parallel)
	)
	for _, ai := range cands {
		wg.Add(1)
		sem <- struct{}{}
		go func(ai peer.AddrInfo) {
			defer wg.Done()
			defer func() { <-sem }()
			o, err := d.fetch(ctx, ai)
			if err != nil {
				if !errors.Is(err, ErrNoOffer) {
					d.cfg.Log.Debug("offer rejected", "peer", ai.ID, "err", err)
					if d.cfg.OnReject != nil {
						d.cfg.OnReject(ai.ID, err)
					}
				}
				return
			}
			if f.Match(o) {
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		}(ai)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil && len(out) == 0 {
		return nil, err
	}
	f.Sort(out)
	return out, nil
}

func (d *Discoverer) candidates(ctx context.Context, f Filter) []peer.AddrInfo {
	h := d.cfg.Host
	self := h.ID()
	seen := map[peer.ID]bool{self: true}
	var out []peer.AddrInfo
	add := func(ai peer.AddrInfo) {
		if seen[ai.ID] || ai.ID == "" {
			return
		}
		seen[ai.ID] = true
		out = append(out, ai)
	}
	for _, p := range h.Network().Peers() {
		add(peer.AddrInfo{ID: p})
	}
	if d.cfg.Finder != nil {
		lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		b := QueryBucket(f)
		n := 0
		for ai := range d.cfg.Finder.FindProvidersAsync(lctx, b.CID(), d.cfg.MaxProviders) {
			add(ai)
			n++
		}
		d.cfg.Log.Debug("dht providers", "bucket", string(b), "found", n)
	}
	return out
}

// fetch gets one seller's offer over the stream protocol, falling back to
// the DHT record, and verifies it.
func (d *Discoverer) fetch(ctx context.Context, ai peer.AddrInfo) (*Offer, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.PerPeerTimeout)
	defer cancel()
	h := d.cfg.Host
	if len(ai.Addrs) > 0 {
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
	o, err := d.Verify(ai.ID, env)
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Verify opens an envelope that peer p served as its own offer: valid, signed
// by p, and not older than the newest offer already seen from p.
func (d *Discoverer) Verify(p peer.ID, env []byte) (*Offer, error) {
	o, err := Open(env, d.cfg.Now())
	if err != nil {
		return nil, err
	}
	if o.Seller != p {
		return nil, fmt.Errorf("%w: %s served an offer of %s", ErrWrongKey, p, o.Seller)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if o.Seq < d.seen[p] {
		return nil, fmt.Errorf("%w: seq %d < %d", ErrStaleSeq, o.Seq, d.seen[p])
	}
	d.seen[p] = o.Seq
	return o, nil
}
