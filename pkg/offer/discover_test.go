package offer

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
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
