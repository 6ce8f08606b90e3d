package offer

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
)

// Router is what the publisher needs from the DHT.
type Router interface {
	// PutValue stores a signed offer under its key on the closest peers.
	PutValue(ctx context.Context, key string, value []byte, opts ...routing.Option) error
	// Provide announces this node as a provider of a bucket's CID.
	Provide(ctx context.Context, c cid.Cid, announce bool) error
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Key is the node's identity key; offers are signed with it.
	Key crypto.PrivKey
	// Router is the DHT; nil publishes on the stream protocol only.
	Router Router
	// Addrs returns the node's current listen addresses for the offer.
	Addrs func() []ma.Multiaddr
	// TTL is each offer's lifetime; it is re-signed and republished at half
	// of it. Must be at most MaxTTL.
	TTL time.Duration
	// RetryInterval is the first wait before publishing again after a
	// failure; it doubles on each further failure, up to TTL/4.
	RetryInterval time.Duration
	// OnPublish, if set, is called after each successful DHT publication.
	OnPublish func(o *Offer)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Publisher keeps this node's current signed offer, serves it, and publishes
// it to the DHT when it changes and before it expires.
type Publisher struct {
	cfg  PublisherConfig
	self peer.ID

	mu      sync.Mutex
	tmpl    Offer
	cur     *Offer
	env     []byte
	changed chan struct{}
}

// NewPublisher returns a publisher with nothing on offer yet.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Key == nil {
		return nil, errors.New("offer publisher: no identity key")
	}
	if cfg.TTL <= 0 || cfg.TTL > MaxTTL {
		cfg.TTL = 10 * time.Minute
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Addrs == nil {
		cfg.Addrs = func() []ma.Multiaddr { return nil }
	}
	id, err := peer.IDFromPrivateKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	return &Publisher{cfg: cfg, self: id, changed: make(chan struct{}, 1)}, nil
}

// Set replaces what is on offer. The template's resources, prices, terms,
// runtimes, region and payment key are used; the publisher fills in seller,
// addresses, sequence and times. Setting the same terms again changes nothing.
func (p *Publisher) Set(tmpl Offer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && sameTerms(&p.tmpl, &tmpl) {
		return nil
	}
	p.tmpl = tmpl
	return p.resignLocked()
}

// resignLocked signs the offer anew and wakes the publishing loop.
func (p *Publisher) resignLocked() error {
	if err := p.signLocked(); err != nil {
		return err
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
	return nil
}

// Refresh re-signs the offer when the node's addresses changed since it
// was signed (a relay slot gained or lost, a port mapped), so that buyers
// find the addresses they can reach it at, and publishes it.
func (p *Publisher) Refresh() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return nil
	}
	addrs := p.cfg.Addrs()
	if len(addrs) > MaxAddrs {
		addrs = addrs[:MaxAddrs]
	}
	if slices.EqualFunc(addrs, p.cur.Addrs, ma.Multiaddr.Equal) {
		return nil
	}
	return p.resignLocked()
}

func sameTerms(a, b *Offer) bool {
	x, y := *a, *b
	x.Seq, y.Seq = 0, 0
	x.Addrs, y.Addrs = nil, nil
	ea, _ := x.MarshalRecord()
	eb, _ := y.MarshalRecord()
	return string(ea) == string(eb)
}

// signLocked signs the template with a new sequence number and fresh expiry.
// Sequence numbers are the issue time in microseconds (and always above the
// last one), so they keep growing across restarts without being stored.
func (p *Publisher) signLocked() error {
	now := p.cfg.Now().UTC().Truncate(time.Second)
	o := p.tmpl
	o.Version = Version
	o.Seller = p.self
	o.Addrs = p.cfg.Addrs()
	if len(o.Addrs) > MaxAddrs {
		o.Addrs = o.Addrs[:MaxAddrs]
	}
	o.Issued = now
	o.Expiry = now.Add(p.cfg.TTL)
	o.Seq = uint64(p.cfg.Now().UnixMicro())
	if p.cur != nil && o.Seq <= p.cur.Seq {
		o.Seq = p.cur.Seq + 1
	}
	env, err := Sign(&o, p.cfg.Key)
	if err != nil {
		return err
	}
	p.cur, p.env = &o, env
	return nil
}

// Current returns the current offer and its envelope (nil, nil before Set).
func (p *Publisher) Current() (*Offer, []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && !p.cfg.Now().Before(p.cur.Expiry) {
		if err := p.signLocked(); err != nil {
			p.cfg.Log.Warn("re-sign expired offer", "err", err)
		}
	}
	return p.cur, p.env
}

// Envelope is Current's envelope, for the stream handler.
func (p *Publisher) Envelope() []byte {
	o, env := p.Current()
	if o == nil || o.Resources.CPUMillis == 0 {
		return nil
	}
	return env
}

// Run publishes on every change and re-signs and republishes at half the TTL,
// retrying failures, until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	retry := p.cfg.RetryInterval
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-p.changed:
		case <-timer.C:
			p.mu.Lock()
			if p.cur != nil && p.cfg.Now().Add(p.cfg.TTL/2).After(p.cur.Expiry) {
				if err := p.signLocked(); err != nil {
					p.cfg.Log.Warn("re-sign offer", "err", err)
				}
			}
			p.mu.Unlock()
		}
		next := p.cfg.TTL / 2
		if err := p.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.cfg.Log.Debug("publish offer failed, will retry", "err", err, "in", retry)
			next = retry
			retry = min(2*retry, p.cfg.TTL/4)
		} else {
			retry = p.cfg.RetryInterval
		}
		timer.Reset(next)
	}
}

// PublishNow publishes the current offer once, synchronously.
func (p *Publisher) PublishNow(ctx context.Context) error { return p.publish(ctx) }

func (p *Publisher) publish(ctx context.Context) error {
	o, env := p.Current()
	if o == nil || p.cfg.Router == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := p.cfg.Router.PutValue(ctx, DHTKey(p.self), env); err != nil {
		return err
	}
	for _, b := range SellerBuckets(o) {
		if err := p.cfg.Router.Provide(ctx, b.CID(), true); err != nil {
			return err
		}
	}
	p.cfg.Log.Debug("offer published", "seq", o.Seq, "cpu_millis", o.Resources.CPUMillis, "expiry", o.Expiry)
	if p.cfg.OnPublish != nil {
		p.cfg.OnPublish(o)
	}
	return nil
}
