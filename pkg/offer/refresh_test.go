package offer

import (
	"slices"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// TestRefreshResignsOnNewAddresses: a relay address gained or lost
// re-signs the offer with a higher sequence; the same addresses change
// nothing.
func TestRefreshResignsOnNewAddresses(t *testing.T) {
	key, id := newKey(t)
	var mu sync.Mutex
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/192.168.1.5/tcp/7460")}
	pub, err := NewPublisher(PublisherConfig{Key: key, TTL: time.Hour, Addrs: func() []ma.Multiaddr {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(addrs)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Refresh(); err != nil {
		t.Fatalf("refresh before any offer: %v", err)
	}
	if o, _ := pub.Current(); o != nil {
		t.Fatal("an offer before Set")
	}
	if err := pub.Set(*sample(id)); err != nil {
		t.Fatal(err)
	}
	first, _ := pub.Current()
	if err := pub.Refresh(); err != nil {
		t.Fatal(err)
	}
	if o, _ := pub.Current(); o.Seq != first.Seq {
		t.Fatal("re-signed with the same addresses")
	}
	circuit := ma.StringCast("/ip4/1.2.3.4/tcp/7460/p2p/" + id.String() + "/p2p-circuit")
	mu.Lock()
	addrs = append(addrs, circuit)
	mu.Unlock()
	if err := pub.Refresh(); err != nil {
		t.Fatal(err)
	}
	o, env := pub.Current()
	if o.Seq <= first.Seq || !slices.ContainsFunc(o.Addrs, circuit.Equal) {
		t.Fatalf("after a new address: seq %d (was %d), addrs %v", o.Seq, first.Seq, o.Addrs)
	}
	if got, err := Open(env, time.Now()); err != nil || !slices.ContainsFunc(got.Addrs, circuit.Equal) {
		t.Fatalf("the signed offer: %v, %v", got, err)
	}
}
