package offer

import (
	"context"
	cryptorand "crypto/rand"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/record"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

type netNode struct {
	h   host.Host
	dht *dht.IpfsDHT
	pub *Publisher
}

// TestNetworkOf50FindsExactlyTheMatchingOffers builds 50 libp2p hosts with
// blackbox's DHT in one process (mocknet), sparsely connected, where 44
// honest sellers publish offers and three cheats serve a forged, an expired
// and (later) a replayed old offer. The buyer must find exactly the honest
// offers that match each filter.
func TestNetworkOf50FindsExactlyTheMatchingOffers(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process network of 50 nodes: not in -short")
	}
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes, closeNet := newMockNetwork(t, ctx, n, false)
	defer closeNet()

	buyer := nodes[2]
	regions := []string{"eu", "us", "ap"}
	honest := map[peer.ID]*Offer{}
	var mu sync.Mutex
	for i := 3; i < n-3; i++ {
		nd := nodes[i]
		key := nd.h.Peerstore().PrivKey(nd.h.ID())
		pub, err := NewPublisher(PublisherConfig{Key: key, Router: nd.dht, Addrs: nd.h.Addrs, TTL: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		nd.pub = pub
		nd.h.SetStreamHandler(ProtocolID, Handler(pub.Envelope, discard))
		if err := pub.Set(Offer{
			Resources: Resources{CPUMillis: uint64(i%8+1) * 1000, MemoryBytes: uint64(i%5+1) * 2 << 30, DiskBytes: 50 << 30},
			Prices:    Prices{CoreHour: uint64(100+7*i) * 1000, MemGiBHour: 10_000},
			Region:    regions[i%3], Runtimes: []string{"runc"}, BillingInterval: 10 * time.Second,
		}); err != nil {
			t.Fatal(err)
		}
		o, _ := pub.Current()
		honest[nd.h.ID()] = o
	}

	// The cheats. Each announces itself in every bucket so the buyer asks it.
	forger, expired, replayer := nodes[n-3], nodes[n-2], nodes[n-1]
	victim := nodes[3]
	_, victimEnv := victim.pub.Current()
	forgedOffer := *honest[victim.h.ID()]
	forgedOffer.Seller = forger.h.ID()
	otherKey, _, _ := crypto.GenerateEd25519Key(nil)
	forgedEnv := mustSeal(t, &forgedOffer, otherKey) // claims the forger, signed by another key
	forgerServes := victimEnv                        // first: the victim's offer served as its own
	forger.h.SetStreamHandler(ProtocolID, Handler(func() []byte { mu.Lock(); defer mu.Unlock(); return forgerServes }, discard))

	expiredOffer := *honest[victim.h.ID()]
	expiredOffer.Seller = expired.h.ID()
	expiredOffer.Issued = time.Now().Add(-time.Hour).Truncate(time.Second)
	expiredOffer.Expiry = time.Now().Add(-time.Minute).Truncate(time.Second)
	expiredEnv := mustSeal(t, &expiredOffer, expired.h.Peerstore().PrivKey(expired.h.ID()))
	expired.h.SetStreamHandler(ProtocolID, Handler(func() []byte { return expiredEnv }, discard))

	repKey := replayer.h.Peerstore().PrivKey(replayer.h.ID())
	repOffer := *honest[victim.h.ID()]
	repOffer.Seller = replayer.h.ID()
	repOffer.Issued = time.Now().Truncate(time.Second)
	repOffer.Expiry = repOffer.Issued.Add(10 * time.Minute)
	repOld, repNew := repOffer, repOffer
	repOld.Seq, repNew.Seq = 100, 200
	repOldEnv, repNewEnv := mustSeal(t, &repOld, repKey), mustSeal(t, &repNew, repKey)
	replayServes := repNewEnv
	replayer.h.SetStreamHandler(ProtocolID, Handler(func() []byte { mu.Lock(); defer mu.Unlock(); return replayServes }, discard))

	// Publish everything to the DHT, concurrently.
	var wg sync.WaitGroup
	for _, nd := range nodes {
		if nd.pub == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nd.pub.PublishNow(ctx); err != nil {
				t.Errorf("publish %s: %v", nd.h.ID(), err)
			}
		}()
	}
	for _, cheat := range []*netNode{forger, expired, replayer} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range SellerBuckets(&repOffer) {
				if err := cheat.dht.Provide(ctx, b.CID(), true); err != nil {
					t.Errorf("cheat provide: %v", err)
				}
			}
		}()
	}
	wg.Wait()

	// The DHT itself refuses the bad records.
	if err := forger.dht.PutValue(ctx, DHTKey(forger.h.ID()), forgedEnv); err == nil {
		t.Error("DHT accepted a forged offer")
	}
	if err := expired.dht.PutValue(ctx, DHTKey(expired.h.ID()), expiredEnv); err == nil {
		t.Error("DHT accepted an expired offer")
	}
	if err := replayer.dht.PutValue(ctx, DHTKey(replayer.h.ID()), repNewEnv); err != nil {
		t.Fatalf("replayer's new offer: %v", err)
	}
	_ = replayer.dht.PutValue(ctx, DHTKey(replayer.h.ID()), repOldEnv) // an older sequence must not win
	got, err := buyer.dht.GetValue(ctx, DHTKey(replayer.h.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := Open(got, time.Now()); err != nil || o.Seq != 200 {
		t.Fatalf("DHT returned replayed offer: %v %v", o, err)
	}

	// The buyer's clock: the second round runs past the cache's age, so
	// every seller is asked again.
	var skew time.Duration
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }
	d := NewDiscoverer(DiscovererConfig{Host: buyer.h, Finder: buyer.dht, Now: now})
	filters := []Filter{
		{},
		{Min: Resources{CPUMillis: 4000}},
		{Min: Resources{CPUMillis: 2000, MemoryBytes: 6 << 30}, Region: "us"},
		{Min: Resources{MemoryBytes: 8 << 30}},
		{Min: Resources{CPUMillis: 1000}, MaxPrice: 300},
		{Min: Resources{CPUMillis: 64000}},
	}
	check := func(round string, withReplayer bool) {
		for _, f := range filters {
			found, err := d.Find(ctx, f)
			if err != nil {
				t.Fatalf("%s: find %+v: %v", round, f, err)
			}
			var want []peer.ID
			for id, o := range honest {
				if f.Match(o) {
					want = append(want, id)
				}
			}
			if withReplayer && f.Match(&repNew) {
				want = append(want, replayer.h.ID())
			}
			var gotIDs []peer.ID
			for _, o := range found {
				gotIDs = append(gotIDs, o.Seller)
			}
			slices.Sort(want)
			slices.Sort(gotIDs)
			if !slices.Equal(want, gotIDs) {
				t.Errorf("%s: filter %+v: found %d offers, want %d\n got %v\nwant %v", round, f, len(gotIDs), len(want), gotIDs, want)
			}
			for i := 1; i < len(found); i++ {
				if f.Price(found[i-1]) > f.Price(found[i]) {
					t.Errorf("%s: results not sorted by price", round)
				}
			}
		}
	}
	if all, _ := d.Find(ctx, Filter{}); len(all) < 40 {
		t.Fatalf("expected the 44 honest offers and the replayer's, found %d", len(all))
	}
	check("first", true) // from the cache filled by the lookup above
	if some, err := d.FindN(ctx, Filter{Min: Resources{CPUMillis: 2000}}, 5); err != nil || len(some) != 5 {
		t.Errorf("FindN 5: %d offers, %v", len(some), err)
	}
	// Without a cache, a lookup of 7 walks to a holder of the bucket's
	// provider records (its DHT server fetched and verified their offers
	// when they were put) and asks no seller.
	counting := &countingHost{Host: buyer.h}
	if some, err := NewDiscoverer(DiscovererConfig{Host: counting, Finder: buyer.dht}).FindN(ctx, Filter{}, 7); err != nil || len(some) != 7 {
		t.Errorf("FindN 7 without cache: %d offers, %v", len(some), err)
	}
	if counting.asks.Load() == 0 || counting.fetches.Load() != 0 {
		t.Errorf("FindN 7 without cache asked %d bucket holders and opened %d offer streams, want a holder only",
			counting.asks.Load(), counting.fetches.Load())
	}
	// The buyer's --limit: Find stops at the filter's Limit.
	if some, err := NewDiscoverer(DiscovererConfig{Host: buyer.h, Finder: buyer.dht}).Find(ctx, Filter{Min: Resources{CPUMillis: 2000}, Limit: 3}); err != nil || len(some) != 3 {
		t.Errorf("Find with Limit 3: %d offers, %v", len(some), err)
	}
	// Now the forger serves a hand-forged offer and the replayer an old one.
	mu.Lock()
	forgerServes = forgedEnv
	replayServes = repOldEnv
	skew = DefaultCacheMaxAge + time.Second
	mu.Unlock()
	check("after replay", false)
}

// newMockNetwork starts n libp2p hosts in one process (mocknet, every pair
// linked), each running blackbox's DHT in server mode with extra options.
// Connected, the nodes form a sparse mesh (two bootstrap nodes and two random
// others each) and refresh their routing tables, as real nodes do; seeded,
// each routing table is filled directly with the peers a refresh would find
// (every other node, as many per bucket as it keeps) and connections open
// only as lookups need them: at 1,000 nodes the refreshes' connections took
// more than 16 minutes and 11 GB here. close stops it all.
func newMockNetwork(tb testing.TB, ctx context.Context, n int, seeded bool, extra ...dht.Option) (nodes []*netNode, close func()) {
	tb.Helper()
	mn := mocknet.New()
	nodes = make([]*netNode, n)
	for i := range nodes {
		// Ed25519 identities, as real nodes have (mocknet's own are ECDSA,
		// whose signatures cost several times as much to verify).
		key, _, err := crypto.GenerateEd25519Key(cryptorand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		h, err := mn.AddPeer(key, ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4242", i>>16&255, i>>8&255, i&255)))
		if err != nil {
			tb.Fatal(err)
		}
		nodes[i] = &netNode{h: h}
	}
	for i := range nodes { // each pair once: LinkAll links both ways
		for j := i + 1; j < n; j++ {
			if _, err := mn.LinkPeers(nodes[i].h.ID(), nodes[j].h.ID()); err != nil {
				tb.Fatal(err)
			}
		}
	}
	boot := []peer.AddrInfo{{ID: nodes[0].h.ID(), Addrs: nodes[0].h.Addrs()}, {ID: nodes[1].h.ID(), Addrs: nodes[1].h.Addrs()}}
	if seeded {
		boot = nil
	}
	for _, nd := range nodes {
		d, err := NewDHT(nd.h, true, boot, nil, extra...)
		if err != nil {
			tb.Fatal(err)
		}
		nd.dht = d
	}
	closeAll := func() {
		for _, nd := range nodes {
			nd.dht.Close()
		}
		mn.Close()
	}
	if seeded {
		for _, nd := range nodes {
			for _, o := range nodes {
				if o == nd {
					continue
				}
				if added, _ := nd.dht.RoutingTable().TryAddPeer(o.h.ID(), true, false); added {
					nd.h.Peerstore().AddAddrs(o.h.ID(), o.h.Addrs(), peerstore.PermanentAddrTTL)
				}
			}
		}
		return nodes, closeAll
	}
	// A sparse mesh: each node knows the bootstrap nodes and two random
	// others.
	rng := rand.New(rand.NewSource(1))
	links := make(map[*netNode][]peer.AddrInfo)
	boots := make(map[*netNode]int)
	for i, nd := range nodes {
		for _, b := range boot {
			if b.ID != nd.h.ID() {
				links[nd] = append(links[nd], b)
			}
		}
		boots[nd] = len(links[nd])
		for range 2 {
			if j := rng.Intn(n); j != i {
				links[nd] = append(links[nd], peer.AddrInfo{ID: nodes[j].h.ID(), Addrs: nodes[j].h.Addrs()})
			}
		}
	}
	var failed atomic.Int64
	parallel(nodes, 64, func(nd *netNode) {
		for k, ai := range links[nd] {
			if err := nd.h.Connect(ctx, ai); err != nil && k < boots[nd] {
				failed.Add(1) // a bootstrap node
			}
		}
	})
	if failed.Load() > 0 {
		tb.Fatalf("%d nodes could not connect to a bootstrap node", failed.Load())
	}
	start := time.Now()
	parallel(nodes, 64, func(nd *netNode) { <-nd.dht.RefreshRoutingTable() })
	tb.Logf("%d routing tables refreshed in %s", n, time.Since(start).Round(time.Millisecond))
	return nodes, closeAll
}

// parallel calls fn for every node, at most width at once.
func parallel(nodes []*netNode, width int, fn func(*netNode)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for _, nd := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(nd)
		}()
	}
	wg.Wait()
}

var discard = discardLogger()

func mustSeal(t testing.TB, o *Offer, k crypto.PrivKey) []byte {
	t.Helper()
	env, err := record.Seal(o, k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
