package offer

import (
	"context"
	cryptorand "crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// listFinder is a DHT that names a fixed list of providers, in order, up
// to the count asked, and records the counts asked.
type listFinder struct {
	provs []peer.AddrInfo

	mu     sync.Mutex
	counts []int
}

func (f *listFinder) FindProvidersAsync(ctx context.Context, _ cid.Cid, count int) <-chan peer.AddrInfo {
	f.mu.Lock()
	f.counts = append(f.counts, count)
	f.mu.Unlock()
	ch := make(chan peer.AddrInfo)
	go func() {
		defer close(ch)
		for i, p := range f.provs {
			if count > 0 && i >= count {
				return
			}
			select {
			case ch <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func (f *listFinder) GetValue(context.Context, string, ...routing.Option) ([]byte, error) {
	return nil, routing.ErrNotFound
}

func (f *listFinder) asked() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.counts)
}

// TestFindNAsksTheDHTForMoreOnlyWhenTheFirstNFallShort: FindN's first DHT
// query asks for n providers only; when some of those serve a forged, an
// expired or no offer (or one that does not match), it asks for more and
// still returns n verified offers, never a refused one. When the first n
// all serve good offers, that one narrow query is all it asks.
func TestFindNAsksTheDHTForMoreOnlyWhenTheFirstNFallShort(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	now := time.Now().Truncate(time.Second)
	add := func() (host.Host, crypto.PrivKey) {
		key, _, err := crypto.GenerateEd25519Key(cryptorand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(key, ma.StringCast(fmt.Sprintf("/ip4/10.0.0.%d/tcp/4242", len(mn.Hosts())+1)))
		if err != nil {
			t.Fatal(err)
		}
		return h, key
	}
	offerOf := func(id peer.ID, cpu uint64) *Offer {
		o := sample(id)
		o.Resources.CPUMillis = cpu
		o.Issued, o.Expiry = now, now.Add(10*time.Minute)
		return o
	}
	buyer, _ := add()
	var honest, bad []peer.AddrInfo
	serve := func(h host.Host, env []byte) {
		h.SetStreamHandler(ProtocolID, Handler(func() []byte { return env }, discard))
	}
	for range 6 {
		h, key := add()
		env, err := Sign(offerOf(h.ID(), 4000), key)
		if err != nil {
			t.Fatal(err)
		}
		serve(h, env)
		honest = append(honest, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	// The bad ones: forged (signed by another key), expired, nothing on
	// offer, too small for the filter.
	otherKey, _, _ := crypto.GenerateEd25519Key(cryptorand.Reader)
	forger, _ := add()
	serve(forger, mustSeal(t, offerOf(forger.ID(), 4000), otherKey))
	expired, expKey := add()
	old := offerOf(expired.ID(), 4000)
	old.Issued, old.Expiry = now.Add(-time.Hour), now.Add(-time.Minute)
	serve(expired, mustSeal(t, old, expKey))
	empty, _ := add()
	serve(empty, nil)
	small, smallKey := add()
	smallEnv, _ := Sign(offerOf(small.ID(), 1000), smallKey)
	serve(small, smallEnv)
	for _, h := range []host.Host{forger, expired, empty, small} {
		bad = append(bad, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := Filter{Min: Resources{CPUMillis: 2000}}
	honestIDs := map[peer.ID]bool{}
	for _, p := range honest {
		honestIDs[p.ID] = true
	}

	// The first 4 named: 2 honest, then the forger and the expired one.
	fd := &listFinder{provs: append(append(slices.Clone(honest[:2]), bad...), honest[2:]...)}
	got, err := NewDiscoverer(DiscovererConfig{Host: buyer, Finder: fd}).FindN(ctx, f, 4)
	if err != nil || len(got) != 4 {
		t.Fatalf("FindN 4 with bad providers first: %d offers, %v", len(got), err)
	}
	for _, o := range got {
		if !honestIDs[o.Seller] {
			t.Errorf("FindN returned the offer of %s, which it must refuse or filter out", o.Seller)
		}
	}
	if asked := fd.asked(); len(asked) != 2 || asked[0] != 4 || asked[1] <= 4 {
		t.Errorf("DHT asked for %v providers, want 4 then more", asked)
	}

	// All of the first n good: one query for n.
	fd = &listFinder{provs: append(slices.Clone(honest), bad...)}
	got, err = NewDiscoverer(DiscovererConfig{Host: buyer, Finder: fd}).FindN(ctx, f, 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("FindN 5: %d offers, %v", len(got), err)
	}
	if asked := fd.asked(); !slices.Equal(asked, []int{5}) {
		t.Errorf("DHT asked for %v providers, want [5]", asked)
	}

	// More than the network holds: every honest offer, none of the bad.
	fd = &listFinder{provs: append(slices.Clone(bad), honest...)}
	got, err = NewDiscoverer(DiscovererConfig{Host: buyer, Finder: fd}).FindN(ctx, f, 20)
	if err != nil || len(got) != len(honest) {
		t.Fatalf("FindN 20 of %d honest: %d offers, %v", len(honest), len(got), err)
	}
	for _, o := range got {
		if !honestIDs[o.Seller] {
			t.Errorf("FindN returned the offer of %s", o.Seller)
		}
	}
}
