package offer

import (
	"bufio"
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/blackbox-market/blackbox/pkg/wire"
)

func TestBucketCodec(t *testing.T) {
	_, id := newKey(t)
	key := QueryBucket(Filter{Min: Resources{CPUMillis: 4000}}).CID().Hash()
	req := BucketRequest{Key: key, Count: 22}
	var gotReq BucketRequest
	if err := gotReq.Unmarshal(req.Marshal()); err != nil || !bytes.Equal(gotReq.Key, key) || gotReq.Count != 22 {
		t.Fatalf("request round trip: %+v, %v", gotReq, err)
	}
	big := BucketRequest{Key: key, Count: 1000}
	if err := gotReq.Unmarshal(big.Marshal()); err != nil || gotReq.Count != MaxBucketOffers {
		t.Errorf("a count above the cap: %d, %v; want %d", gotReq.Count, err, MaxBucketOffers)
	}
	for name, b := range map[string][]byte{
		"empty":         nil,
		"no key":        (&BucketRequest{Count: 3}).Marshal(),
		"key too long":  (&BucketRequest{Key: make([]byte, maxBucketKey+1)}).Marshal(),
		"truncated":     req.Marshal()[:5],
		"too large":     make([]byte, maxBucketRequest+1),
		"critical":      append(req.Marshal(), 0x80, 0x40, 0), // field 1024, varint
		"wrong kind":    {0x08, 1},                            // key as a varint
		"repeated key":  append(req.Marshal(), req.Marshal()...),
		"bad tag":       {0xff},
		"bytes too far": {0x0a, 0x7f, 1},
	} {
		if err := gotReq.Unmarshal(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("request %s: %v, want an ErrInvalid", name, err)
		}
	}

	env := []byte("an envelope, opened by the buyer only")
	rep := BucketReply{Offers: [][]byte{env, env}, Closer: []peer.AddrInfo{{ID: id, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/4242")}}}}
	var gotRep BucketReply
	if err := gotRep.Unmarshal(rep.Marshal()); err != nil || len(gotRep.Offers) != 2 || !bytes.Equal(gotRep.Offers[1], env) ||
		len(gotRep.Closer) != 1 || gotRep.Closer[0].ID != id || !gotRep.Closer[0].Addrs[0].Equal(rep.Closer[0].Addrs[0]) {
		t.Fatalf("reply round trip: %+v, %v", gotRep, err)
	}
	tooMany := BucketReply{}
	for range MaxBucketOffers + 1 {
		tooMany.Offers = append(tooMany.Offers, env)
	}
	bigEnv := BucketReply{Offers: [][]byte{make([]byte, MaxEnvelopeSize+1)}}
	badPeer := wire.Encoder{}
	badPeer.Bytes(fRepCloser, []byte{0x0a, 3, 1, 2, 3}) // an ID that is no peer ID
	noID := wire.Encoder{}
	noID.Always(fRepCloser, nil)
	for name, b := range map[string][]byte{
		"too many offers":   tooMany.Marshal(),
		"envelope too long": bigEnv.Marshal(),
		"bad closer peer":   badPeer.B,
		"closer without ID": noID.B,
		"truncated":         rep.Marshal()[:10],
		"too large":         make([]byte, maxBucketReply+1),
	} {
		if err := gotRep.Unmarshal(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("reply %s: %v, want an ErrInvalid", name, err)
		}
	}
}

// FuzzBucketRequest: whatever a peer sends, decoding a request is an
// error or a request that encodes back to one that decodes the same.
func FuzzBucketRequest(f *testing.F) {
	f.Add((&BucketRequest{Key: []byte("key"), Count: 22}).Marshal())
	f.Add([]byte{0x0a, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r BucketRequest
		if err := r.Unmarshal(b); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not an ErrInvalid: %v", err)
			}
			return
		}
		if len(r.Key) == 0 || len(r.Key) > maxBucketKey || r.Count < 0 || r.Count > MaxBucketOffers {
			t.Fatalf("decoded out of bounds: %+v", r)
		}
		var again BucketRequest
		if err := again.Unmarshal(r.Marshal()); err != nil || !bytes.Equal(again.Key, r.Key) || again.Count != r.Count {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", r, again, err)
		}
	})
}

// FuzzBucketReply: whatever a holder answers, decoding is an error or a
// reply within the caps that encodes back to one that decodes the same.
func FuzzBucketReply(f *testing.F) {
	key, _, _ := crypto.GenerateEd25519Key(cryptorand.Reader)
	id, _ := peer.IDFromPrivateKey(key)
	f.Add((&BucketReply{Offers: [][]byte{[]byte("env")}, Closer: []peer.AddrInfo{{ID: id, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/1")}}}}).Marshal())
	f.Add([]byte{0x12, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r BucketReply
		if err := r.Unmarshal(b); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not an ErrInvalid: %v", err)
			}
			return
		}
		if len(r.Offers) > MaxBucketOffers || len(r.Closer) > MaxBucketCloser {
			t.Fatalf("decoded past the caps: %d offers, %d peers", len(r.Offers), len(r.Closer))
		}
		for _, env := range r.Offers {
			if len(env) == 0 || len(env) > MaxEnvelopeSize {
				t.Fatalf("envelope of %d bytes", len(env))
			}
		}
		var again BucketReply
		if err := again.Unmarshal(r.Marshal()); err != nil || len(again.Offers) != len(r.Offers) || len(again.Closer) != len(r.Closer) {
			t.Fatalf("re-encoded reply decodes to %d offers and %d peers, %v", len(again.Offers), len(again.Closer), err)
		}
	})
}

// bucketNet is a mocknet of hosts for the bucket protocol's tests.
type bucketNet struct {
	t  *testing.T
	mn mocknet.Mocknet
}

func (n *bucketNet) add() (host.Host, crypto.PrivKey) {
	key, _, err := crypto.GenerateEd25519Key(cryptorand.Reader)
	if err != nil {
		n.t.Fatal(err)
	}
	h, err := n.mn.AddPeer(key, ma.StringCast(fmt.Sprintf("/ip4/10.0.1.%d/tcp/4242", len(n.mn.Hosts())+1)))
	if err != nil {
		n.t.Fatal(err)
	}
	return h, key
}

// seller starts a host serving a signed offer of cpu millicores, valid
// from now for ttl (negative: expired).
func (n *bucketNet) seller(cpu uint64, ttl time.Duration) (host.Host, []byte) {
	h, key := n.add()
	o := sample(h.ID())
	o.Resources.CPUMillis = cpu
	o.Seq = uint64(time.Now().UnixMicro())
	o.Issued = time.Now().Truncate(time.Second).Add(min(ttl, 0) - time.Minute)
	o.Expiry = time.Now().Truncate(time.Second).Add(ttl)
	env := mustSeal(n.t, o, key)
	h.SetStreamHandler(ProtocolID, Handler(func() []byte { return env }, discard))
	return h, env
}

// provide puts p's provider record of key in rs, as the DHT's provider
// manager does when p sends ADD_PROVIDER.
func provide(t *testing.T, rs *RecordStore, key []byte, p peer.ID) {
	t.Helper()
	dk := ds.NewKey("/providers/" + b32(string(key)) + "/" + b32(string(p)))
	if err := rs.Put(context.Background(), dk, []byte{1}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBucketIndexHoldsOnlyVerifiedOffersOfTheBucket: a DHT server holds, of
// the providers whose records are put on it, only the offers signed by the
// provider, unexpired and in the bucket provided; it answers buyers with
// them, names closer peers when it holds none, and drops an offer when its
// provider record goes.
func TestBucketIndexHoldsOnlyVerifiedOffersOfTheBucket(t *testing.T) {
	n := &bucketNet{t: t, mn: mocknet.New()}
	defer n.mn.Close()
	server, _ := n.add()
	buyer, _ := n.add()
	other, _ := n.add()
	rs := NewRecordStore(server.ID(), DefaultStoreLimits())
	x := ServeBuckets(BucketIndexConfig{Host: server, Closest: func([]byte, int) []peer.ID { return []peer.ID{other.ID()} }}, rs)
	honest, honestEnv := n.seller(8000, 10*time.Minute)
	small, _ := n.seller(1000, 10*time.Minute) // provides cpu>=4 with 1 core
	expired, _ := n.seller(8000, -time.Minute)
	victim, victimEnv := n.seller(8000, 10*time.Minute)
	forger, _ := n.add() // serves the victim's offer as its own
	forger.SetStreamHandler(ProtocolID, Handler(func() []byte { return victimEnv }, discard))
	empty, _ := n.add()
	empty.SetStreamHandler(ProtocolID, Handler(func() []byte { return nil }, discard))
	if err := n.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := n.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	key := Bucket("cpu>=4").CID().Hash()
	for _, h := range []host.Host{honest, small, expired, forger, empty} {
		provide(t, rs, key, h.ID())
	}
	waitFor(t, "the honest offer held", func() bool { return x.Held() == 1 })
	time.Sleep(50 * time.Millisecond) // the refused ones' fetches end too
	if got := x.Offers(key, 10); len(got) != 1 || !bytes.Equal(got[0], honestEnv) {
		t.Fatalf("held %d offers, want the honest one only", len(got))
	}
	_ = victim

	ctx := context.Background()
	reply, err := AskBucket(ctx, buyer, server.ID(), key, 5)
	if err != nil || len(reply.Offers) != 1 || len(reply.Closer) != 0 {
		t.Fatalf("ask: %+v, %v", reply, err)
	}
	reply, err = AskBucket(ctx, buyer, server.ID(), Bucket("cpu>=16").CID().Hash(), 5)
	if err != nil || len(reply.Offers) != 0 || len(reply.Closer) != 1 || reply.Closer[0].ID != other.ID() {
		t.Fatalf("ask for a bucket not held: %+v, %v", reply, err)
	}

	// The record goes (expired, evicted): so does the offer.
	dk := ds.NewKey("/providers/" + b32(string(key)) + "/" + b32(string(honest.ID())))
	if err := rs.Delete(ctx, dk); err != nil {
		t.Fatal(err)
	}
	if x.Held() != 0 {
		t.Errorf("%d offers held after their records went", x.Held())
	}
	// A bad request is refused with a reset, and changes nothing.
	s, err := buyer.NewStream(ctx, server.ID(), BucketProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	s.Write(wire.AppendFrame(nil, []byte{0xff, 0xff}))
	s.CloseWrite()
	if _, err := ReadFrame(bufioReader(s), maxBucketReply); err == nil {
		t.Error("a malformed request was answered")
	}
}

// holderAnswers makes h a holder that answers every bucket request with
// reply (a cheat, or an old node's neighbour naming closer peers).
func holderAnswers(h host.Host, reply func() BucketReply) {
	h.SetStreamHandler(BucketProtocolID, func(s network.Stream) {
		defer s.Close()
		if _, err := ReadFrame(bufioReader(s), maxBucketRequest); err != nil {
			s.Reset()
			return
		}
		r := reply()
		s.Write(wire.AppendFrame(nil, r.Marshal()))
	})
}

// TestFindNRefusesWhatAHolderForges: a holder answers with a forged, an
// expired, a replayed older and a non-matching offer next to good ones;
// FindN returns only verified matching offers, the newest of each seller,
// and finds the rest the old way (the provider walk). The walk to the
// holder follows the closer peers a non-holder names, and passes over a
// peer that does not speak the protocol (an older node).
func TestFindNRefusesWhatAHolderForges(t *testing.T) {
	n := &bucketNet{t: t, mn: mocknet.New()}
	defer n.mn.Close()
	buyer, _ := n.add()
	old, _ := n.add()   // no BucketProtocolID
	relay, _ := n.add() // holds nothing, names the cheat
	cheat, _ := n.add() // the holder
	var good []peer.AddrInfo
	var goodEnvs [][]byte
	for range 6 {
		h, env := n.seller(8000, 10*time.Minute)
		good = append(good, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
		goodEnvs = append(goodEnvs, env)
	}
	otherKey, _, _ := crypto.GenerateEd25519Key(cryptorand.Reader)
	forgedOffer := sample(good[0].ID)
	forgedOffer.Seq, forgedOffer.Issued, forgedOffer.Expiry = 1<<62, time.Now().Truncate(time.Second), time.Now().Add(time.Hour)
	forged := mustSeal(t, forgedOffer, otherKey)
	_, expiredEnv := n.seller(8000, -time.Minute)
	_, smallEnv := n.seller(1000, 10*time.Minute)
	// The replayer's old offer, after the buyer saw its newer one.
	repH, repKey := n.add()
	repOld, repNew := sample(repH.ID()), sample(repH.ID())
	for i, o := range []*Offer{repOld, repNew} {
		o.Seq, o.Issued, o.Expiry = uint64(100+i), time.Now().Truncate(time.Second), time.Now().Add(10*time.Minute)
	}
	repOldEnv, repNewEnv := mustSeal(t, repOld, repKey), mustSeal(t, repNew, repKey)
	repH.SetStreamHandler(ProtocolID, Handler(func() []byte { return repNewEnv }, discard))

	holderAnswers(relay, func() BucketReply {
		return BucketReply{Closer: []peer.AddrInfo{{ID: cheat.ID(), Addrs: cheat.Addrs()}}}
	})
	holderAnswers(cheat, func() BucketReply {
		return BucketReply{Offers: [][]byte{forged, expiredEnv, repOldEnv, smallEnv, goodEnvs[0], goodEnvs[1], []byte("garbage")}}
	})
	if err := n.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var rejected []peer.ID
	fd := &listFinder{provs: append(slices.Clone(good), peer.AddrInfo{ID: repH.ID(), Addrs: repH.Addrs()})}
	d := NewDiscoverer(DiscovererConfig{
		Host: buyer, Finder: fd,
		Closest:  func([]byte, int) []peer.ID { return []peer.ID{old.ID(), relay.ID()} },
		OnReject: func(p peer.ID, err error) { mu.Lock(); rejected = append(rejected, p); mu.Unlock() },
	})
	if _, err := d.Verify(repH.ID(), repNewEnv); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := Filter{Min: Resources{CPUMillis: 4000}}
	got, err := d.FindN(ctx, f, 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("FindN 5: %d offers, %v", len(got), err)
	}
	want := map[peer.ID]bool{repH.ID(): true}
	for _, p := range good {
		want[p.ID] = true
	}
	sellers := map[peer.ID]bool{}
	for _, o := range got {
		if !want[o.Seller] || sellers[o.Seller] {
			t.Errorf("FindN returned the offer of %s (seq %d), which it must refuse", o.Seller, o.Seq)
		}
		if o.Seller == repH.ID() && o.Seq != repNew.Seq {
			t.Errorf("FindN returned the replayed offer, seq %d", o.Seq)
		}
		sellers[o.Seller] = true
	}
	if asked := fd.asked(); len(asked) == 0 {
		t.Error("the holder gave 2 good offers of 5, yet the provider walk was not asked for the rest")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(rejected) < 4 || slices.ContainsFunc(rejected, func(p peer.ID) bool { return p != cheat.ID() }) {
		t.Errorf("rejections reported against %v, want 4 or more, all the holder's", rejected)
	}
}

// TestFindNWithHolders: with a holder of every offer asked for, FindN asks
// nothing else (no provider walk, no stream to a seller); with only older
// nodes around (none speaks BucketProtocolID) it finds them the old way.
func TestFindNWithHolders(t *testing.T) {
	n := &bucketNet{t: t, mn: mocknet.New()}
	defer n.mn.Close()
	buyer, _ := n.add()
	server, _ := n.add()
	rs := NewRecordStore(server.ID(), DefaultStoreLimits())
	x := ServeBuckets(BucketIndexConfig{Host: server}, rs)
	var provs []peer.AddrInfo
	for range 8 {
		h, _ := n.seller(4000, 10*time.Minute)
		provs = append(provs, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	if err := n.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := n.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	f := Filter{Min: Resources{CPUMillis: 4000}}
	key := QueryBucket(f).CID().Hash()
	for _, p := range provs {
		provide(t, rs, key, p.ID)
	}
	waitFor(t, "8 offers held", func() bool { return x.Held() == 8 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fd := &listFinder{provs: provs}
	counting := &countingHost{Host: buyer}
	d := NewDiscoverer(DiscovererConfig{Host: counting, Finder: fd, Closest: func([]byte, int) []peer.ID { return []peer.ID{server.ID()} }})
	got, err := d.FindN(ctx, f, 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("FindN 5 from a holder: %d offers, %v", len(got), err)
	}
	if asked, fetches := fd.asked(), counting.fetches.Load(); len(asked) != 0 || fetches != 0 || counting.asks.Load() != 1 {
		t.Errorf("FindN asked the DHT for %v providers, opened %d offer streams and asked %d holders; want one holder only",
			asked, fetches, counting.asks.Load())
	}
	// Again: the same envelopes, from the cache (no second signature check).
	if again, err := d.FindN(ctx, f, 5); err != nil || len(again) != 5 {
		t.Fatalf("FindN again: %d offers, %v", len(again), err)
	}

	// Older nodes only: the walk finds no holder, the old way finds all.
	server.RemoveStreamHandler(BucketProtocolID)
	d = NewDiscoverer(DiscovererConfig{Host: buyer, Finder: fd, Closest: func([]byte, int) []peer.ID { return []peer.ID{server.ID()} }})
	got, err = d.FindN(ctx, f, 5)
	if err != nil || len(got) != 5 {
		t.Fatalf("FindN 5 among older nodes: %d offers, %v", len(got), err)
	}
	if asked := fd.asked(); len(asked) == 0 {
		t.Error("no provider walk among older nodes")
	}
}

func bufioReader(s network.Stream) *bufio.Reader { return bufio.NewReader(s) }

// TestRecordStoreTellsTheIndexOfProviderRecords: a provider record of
// another peer put (new or refreshed) is told as provided, one deleted or
// evicted as gone, with the bucket's key; the node's own records and offer
// records are not told.
func TestRecordStoreTellsTheIndexOfProviderRecords(t *testing.T) {
	ctx := context.Background()
	_, self := newKey(t)
	limits := DefaultStoreLimits()
	limits.MaxProviders = 3 // the node's own record counts, never evicted
	rs := NewRecordStore(self, limits)
	type event struct {
		key  string
		p    peer.ID
		gone bool
	}
	var events []event
	rs.setProviderHooks(func(k []byte, p peer.ID) { events = append(events, event{string(k), p, false}) },
		func(k []byte, p peer.ID) { events = append(events, event{string(k), p, true}) })
	key := Bucket("cpu>=4").CID().Hash()
	_, a := newKey(t)
	_, b := newKey(t)
	_, c := newKey(t)
	provide(t, rs, key, a)
	provide(t, rs, key, a) // refreshed
	provide(t, rs, key, self)
	provide(t, rs, key, b)
	time.Sleep(time.Millisecond)
	provide(t, rs, key, c) // evicts a, the least recently put
	if err := rs.Delete(ctx, ds.NewKey("/providers/"+b32(string(key))+"/"+b32(string(b)))); err != nil {
		t.Fatal(err)
	}
	want := []event{{string(key), a, false}, {string(key), a, false}, {string(key), b, false},
		{string(key), a, true}, {string(key), c, false}, {string(key), b, true}}
	if !slices.Equal(events, want) {
		t.Errorf("told %v\nwant %v", events, want)
	}
}

// TestBucketIndexFetchesAPublicationOnce: a seller provides each of its
// buckets when it publishes; the server fetches its offer for the first
// record and holds it for the others (it fetched it once per bucket: the
// same envelope a dozen times per publication), and fetches again for a
// second record of a bucket (the next publication, even seconds later)
// and for any record refetchAfter later.
func TestBucketIndexFetchesAPublicationOnce(t *testing.T) {
	n := &bucketNet{t: t, mn: mocknet.New()}
	defer n.mn.Close()
	server, _ := n.add()
	seller, env := n.seller(8000, 10*time.Minute)
	var mu sync.Mutex
	fetches := 0
	seller.SetStreamHandler(ProtocolID, func(s network.Stream) {
		mu.Lock()
		fetches++
		mu.Unlock()
		Handler(func() []byte { return env }, discard)(s)
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return fetches }
	if err := n.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := n.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	var clock sync.Mutex
	now := time.Now()
	rs := NewRecordStore(server.ID(), DefaultStoreLimits())
	x := ServeBuckets(BucketIndexConfig{Host: server, Now: func() time.Time { clock.Lock(); defer clock.Unlock(); return now }}, rs)
	o, err := Open(env, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	buckets := SellerBuckets(o)
	if len(buckets) < 3 {
		t.Fatalf("the sample offer is in %d buckets", len(buckets))
	}
	provide(t, rs, buckets[0].CID().Hash(), seller.ID())
	waitFor(t, "the first bucket's offer held", func() bool { return x.Held() == 1 })
	for _, b := range buckets[1:] {
		provide(t, rs, b.CID().Hash(), seller.ID())
	}
	waitFor(t, "every bucket's offer held", func() bool { return x.Held() == len(buckets) })
	time.Sleep(50 * time.Millisecond)
	if got := count(); got != 1 {
		t.Fatalf("%d buckets provided in a row: the offer was fetched %d times, want once", len(buckets), got)
	}
	// The next publication, seconds later (a relay slot's address):
	// its first record is of a bucket already provided since the fetch.
	provide(t, rs, buckets[0].CID().Hash(), seller.ID())
	waitFor(t, "a publication seconds later fetched", func() bool { return count() == 2 })
	provide(t, rs, buckets[1].CID().Hash(), seller.ID())
	time.Sleep(50 * time.Millisecond)
	if got := count(); got != 2 {
		t.Fatalf("the second publication's other bucket fetched again (%d fetches)", got)
	}
	clock.Lock()
	now = now.Add(refetchAfter)
	clock.Unlock()
	provide(t, rs, buckets[2].CID().Hash(), seller.ID())
	waitFor(t, "a record refetchAfter later fetched", func() bool { return count() == 3 })
}
