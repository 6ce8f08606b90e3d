package offer

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// clock is a settable test clock.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func TestDiscovererCacheKeepsAVerifiedOfferUntilItsExpiry(t *testing.T) {
	key, id := newKey(t)
	c := &clock{now: t0}
	d := NewDiscoverer(DiscovererConfig{Now: c.Now, CacheMaxAge: time.Hour})
	o := sample(id) // expires at t0+10m, before the cache's age
	env, _ := Sign(o, key)
	if _, err := d.Verify(id, env); err != nil {
		t.Fatal(err)
	}
	c.now = t0.Add(10*time.Minute - time.Second)
	if got := d.cached(id); got == nil || got.Seq != o.Seq {
		t.Fatalf("before expiry: cached %v", got)
	}
	c.now = t0.Add(10 * time.Minute)
	if got := d.cached(id); got != nil {
		t.Fatalf("expired offer still cached: %v", got)
	}
}

func TestDiscovererCacheRefreshesAfterItsMaxAge(t *testing.T) {
	key, id := newKey(t)
	c := &clock{now: t0}
	d := NewDiscoverer(DiscovererConfig{Now: c.Now}) // DefaultCacheMaxAge
	env, _ := Sign(sample(id), key)
	if _, err := d.Verify(id, env); err != nil {
		t.Fatal(err)
	}
	c.now = t0.Add(DefaultCacheMaxAge - time.Millisecond)
	if d.cached(id) == nil {
		t.Fatal("fresh offer not cached")
	}
	c.now = t0.Add(DefaultCacheMaxAge)
	if got := d.cached(id); got != nil {
		t.Fatalf("offer reused past the cache's age: %v", got)
	}
	off := NewDiscoverer(DiscovererConfig{Now: c.Now, CacheMaxAge: -1})
	c.now = t0
	if _, err := off.Verify(id, env); err != nil {
		t.Fatal(err)
	}
	if got := off.cached(id); got != nil {
		t.Fatalf("cache turned off, still cached: %v", got)
	}
}

func TestDiscovererCacheTakesTheNewerSequenceOnly(t *testing.T) {
	key, id := newKey(t)
	c := &clock{now: t0}
	d := NewDiscoverer(DiscovererConfig{Now: c.Now})
	mk := func(seq uint64, cpu uint64) []byte {
		o := sample(id)
		o.Seq, o.Resources.CPUMillis = seq, cpu
		env, _ := Sign(o, key)
		return env
	}
	if _, err := d.Verify(id, mk(10, 4000)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Verify(id, mk(11, 2000)); err != nil {
		t.Fatal(err)
	}
	if got := d.cached(id); got == nil || got.Seq != 11 || got.Resources.CPUMillis != 2000 {
		t.Fatalf("newer sequence did not replace the cached offer: %v", got)
	}
	if _, err := d.Verify(id, mk(10, 4000)); !errors.Is(err, ErrStaleSeq) {
		t.Fatalf("replayed older sequence: %v", err)
	}
	if got := d.cached(id); got == nil || got.Seq != 11 {
		t.Fatalf("replayed older sequence entered the cache: %v", got)
	}
	d.forget(id, false) // its seller failed to serve it
	if got := d.cached(id); got != nil {
		t.Fatalf("forgotten offer still cached: %v", got)
	}
	d.forget(id, true) // it has nothing on offer
	if d.cached(id) != nil || !d.empty(id) {
		t.Fatal("a seller with nothing on offer is not remembered as such")
	}
	c.now = c.now.Add(DefaultCacheMaxAge)
	if d.empty(id) {
		t.Fatal("nothing on offer remembered past the cache's age")
	}
}

func TestDiscovererCacheNeverTakesARefusedOffer(t *testing.T) {
	key, id := newKey(t)
	_, other := newKey(t)
	c := &clock{now: t0}
	d := NewDiscoverer(DiscovererConfig{Now: c.Now})

	// Signed by another key while naming the seller.
	forged := sample(id)
	otherKey, _, _ := crypto.GenerateEd25519Key(nil)
	if _, err := d.Verify(id, mustSeal(t, forged, otherKey)); err == nil {
		t.Fatal("forged offer verified")
	}
	// A genuine offer of id, served by another peer as its own.
	env, _ := Sign(sample(id), key)
	if _, err := d.Verify(other, env); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("offer of another seller: %v", err)
	}
	// Expired.
	old := sample(id)
	old.Issued, old.Expiry = t0.Add(-time.Hour), t0.Add(-time.Minute)
	oldEnv, _ := Sign(old, key)
	if _, err := d.Verify(id, oldEnv); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired offer: %v", err)
	}
	// Bytes that are no envelope.
	if _, err := d.Verify(id, []byte("not an offer")); err == nil {
		t.Fatal("garbage verified")
	}
	if d.cached(id) != nil || d.cached(other) != nil {
		t.Fatal("a refused offer entered the cache")
	}
}

// TestFindNAsksAgainForACachedMiss: a buyer that cached a seller's offer
// without the runtime it now asks for (crun, which joined the seller's
// offer later) asks the seller again once the cached offer is
// MissRefetchAfter old, and finds the newer offer; a cached offer that
// matches is reused without a stream for CacheMaxAge, and a miss younger
// than MissRefetchAfter too.
func TestFindNAsksAgainForACachedMiss(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	buyer, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := crypto.GenerateEd25519Key(cryptorand.Reader)
	seller, err := mn.AddPeer(key, ma.StringCast("/ip4/10.0.0.9/tcp/4242"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		env     []byte
		fetches int
	)
	set := func(runtimes []string, seq uint64) {
		o := sample(seller.ID())
		o.Runtimes, o.Seq = runtimes, seq
		e, err := Sign(o, key)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		env = e
		mu.Unlock()
	}
	seller.SetStreamHandler(ProtocolID, Handler(func() []byte {
		mu.Lock()
		defer mu.Unlock()
		fetches++
		return env
	}, discard))
	fetched := func() int {
		mu.Lock()
		defer mu.Unlock()
		return fetches
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	c := &clock{now: t0}
	d := NewDiscoverer(DiscovererConfig{Host: buyer, Now: c.Now,
		Finder: &listFinder{provs: []peer.AddrInfo{{ID: seller.ID(), Addrs: seller.Addrs()}}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	find := func(f Filter) []*Offer {
		t.Helper()
		got, err := d.FindN(ctx, f, 1)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	crun := Filter{Runtime: "crun"}

	set([]string{"runc"}, 1)
	if got := find(crun); len(got) != 0 || fetched() != 1 {
		t.Fatalf("crun before the seller offers it: %d offers, %d fetches", len(got), fetched())
	}
	set([]string{"runc", "crun"}, 2)
	c.now = t0.Add(MissRefetchAfter - time.Millisecond)
	if got := find(Filter{}); len(got) != 1 || got[0].Seq != 1 || fetched() != 1 {
		t.Fatalf("a match in the cache: %d offers, %d fetches; want the cached one, no fetch", len(got), fetched())
	}
	if got := find(crun); len(got) != 0 || fetched() != 1 {
		t.Fatalf("a miss younger than MissRefetchAfter: %d offers, %d fetches; want none, no fetch", len(got), fetched())
	}
	c.now = t0.Add(MissRefetchAfter)
	got := find(crun)
	if len(got) != 1 || got[0].Seq != 2 || fetched() != 2 {
		t.Fatalf("a miss MissRefetchAfter old: %d offers, %d fetches; want the seller's newer offer, fetched once more", len(got), fetched())
	}
	if got := find(crun); len(got) != 1 || fetched() != 2 {
		t.Fatalf("the newer offer, cached: %d offers, %d fetches", len(got), fetched())
	}
}
