package contract

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// preparePay is fakePay that counts the channel preparations (fundings)
// per seller.
type preparePay struct {
	*fakePay
	mu       sync.Mutex
	prepared map[peer.ID]int
}

func (p *preparePay) Prepare(ctx context.Context, seller peer.ID, terms []byte, amount int64) ([]byte, error) {
	p.mu.Lock()
	p.prepared[seller]++
	p.mu.Unlock()
	return p.fakePay.Prepare(ctx, seller, terms, amount)
}

func (p *preparePay) count(s peer.ID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.prepared[s]
}

// tcpHost is a real libp2p host on loopback TCP (listen: its addresses;
// none: reachable only through a relay).
func tcpHost(t *testing.T, opts ...libp2p.Option) host.Host {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{libp2p.DisableMetrics()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// relayNet is a circuit v2 relay on loopback with relay v2's default
// limits (2 minutes, 128 KiB per circuit).
func relayNet(t *testing.T, opts ...relayv2.Option) host.Host {
	t.Helper()
	r := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	svc, err := relayv2.New(r, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return r
}

// reserve gives h a slot on relay r and returns h's circuit address.
func reserve(t *testing.T, h, r host.Host) ma.Multiaddr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ri := peer.AddrInfo{ID: r.ID(), Addrs: r.Addrs()}
	if err := h.Connect(ctx, ri); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, h, ri); err != nil {
		t.Fatal(err)
	}
	a, err := ma.NewMultiaddr(r.Addrs()[0].String() + "/p2p/" + r.ID().String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func allLimited(conns []network.Conn) bool {
	for _, c := range conns {
		if !c.Stat().Limited {
			return false
		}
	}
	return len(conns) > 0
}

// A seller reachable only through a relay (no direct listen address, no
// hole punching) accepts over the relay, but the buyer funds nothing,
// pays nothing and sends no image: the attempt ends "unreachable", the
// seller's reservation is released at once, and the job completes on the
// next, directly reachable seller. The unreachable seller is ranked last
// afterwards.
func TestUnreachableSellerRefusedBeforeFunding(t *testing.T) {
	m := newMarket(t)
	r := relayNet(t)
	capacity := offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}
	hidden := tcpHost(t, libp2p.ListenAddrStrings("/p2p-circuit"), libp2p.EnableRelay())
	hiddenPay, directPay := &fakePay{}, &fakePay{}
	// The hidden seller is the cheaper one: ranked first.
	hs, _ := m.sellerOn(hidden, &fakeRunner{work: testInterval}, hiddenPay, capacity, 1_000_000_000)
	direct := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	ds, _ := m.sellerOn(direct, &fakeRunner{work: testInterval}, directPay, capacity, 3_600_000_000)
	circuit := reserve(t, hidden, r)

	pay := &preparePay{fakePay: &fakePay{}, prepared: map[peer.ID]int{}}
	bh := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	b, _ := m.buyerOn(bh, pay, func(c *BuyerConfig) { c.DirectWait = time.Second })
	bh.Peerstore().AddAddrs(hidden.ID(), []ma.Multiaddr{circuit}, peerstore.PermanentAddrTTL)
	bh.Peerstore().AddAddrs(direct.ID(), direct.Addrs(), peerstore.PermanentAddrTTL)

	id, err := b.Submit(context.Background(), m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || j.Seller != direct.ID() {
		t.Fatalf("job %s by %s (%s), want done by the direct seller %s: %+v", j.State, j.Seller, j.Error, direct.ID(), j.Attempts)
	}
	if len(j.Attempts) != 2 {
		t.Fatalf("attempts %+v, want the unreachable one, then the direct one", j.Attempts)
	}
	a := j.Attempts[0]
	if a.Seller != hidden.ID() || a.Reason != ReasonUnreachable || a.Fault != FaultUnreachable || a.State != StateExpired || a.Paid != 0 {
		t.Fatalf("first attempt %+v, want the hidden seller, unreachable, expired, nothing paid", a)
	}
	if !allLimited(bh.Network().ConnsToPeer(hidden.ID())) && len(bh.Network().ConnsToPeer(hidden.ID())) > 0 {
		t.Fatalf("the buyer holds a direct connection to the relay-only seller")
	}
	// No money moved and no image went to the hidden seller.
	if n := pay.count(hidden.ID()); n != 0 {
		t.Fatalf("the buyer prepared %d channel(s) to the unreachable seller", n)
	}
	if pay.count(direct.ID()) != 1 {
		t.Fatalf("prepared %d channels to the direct seller, want 1", pay.count(direct.ID()))
	}
	hiddenPay.mu.Lock()
	opens, held := hiddenPay.opens, len(hiddenPay.held)
	hiddenPay.mu.Unlock()
	if opens != 0 || held != 0 {
		t.Fatalf("the unreachable seller saw %d channel opens and payments for %d contracts", opens, held)
	}
	// Told by the withdraw, the seller released the reservation at once
	// (well before its funding deadline of two minutes).
	eventually(t, "the hidden seller releases its reservation", func() bool {
		rec, err := hs.Machine().Get(RoleSeller, a.ContractID)
		return err == nil && rec.State == StateExpired && hs.Held().MilliCPU == 0
	})
	eventually(t, "the hidden seller counts one unreachable refusal", func() bool { return hs.Rejections()[ReasonUnreachable] == 1 })
	if rec, _ := ds.Machine().Get(RoleSeller, j.ContractID); rec.State != StateSettled {
		t.Fatalf("direct seller's contract %s", rec.State)
	}
	if _, ok := b.Unreachable()[hidden.ID()]; !ok {
		t.Fatalf("the buyer does not remember the unreachable seller: %v", b.Unreachable())
	}
	// Ranking learnt it: a second job goes to the direct seller first,
	// without another unreachable attempt.
	id2, err := b.Submit(context.Background(), m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	if j2 := waitJob(t, b, id2); j2.State != JobDone || len(j2.Attempts) != 1 || j2.Seller != direct.ID() {
		t.Fatalf("second job: %s by %s, attempts %+v", j2.State, j2.Seller, j2.Attempts)
	}
}

// A seller the buyer first reaches through a relay (the buyer knows only
// its circuit address) but which is directly reachable: negotiation goes
// over the relayed connection, then the buyer dials it directly and the
// contract runs on the direct connection.
func TestRelayedSellerReachedDirectly(t *testing.T) {
	m := newMarket(t)
	r := relayNet(t)
	capacity := offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}
	sh := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0", "/p2p-circuit"), libp2p.EnableRelay())
	spay := &fakePay{}
	s, _ := m.sellerOn(sh, &fakeRunner{work: testInterval}, spay, capacity, 3_600_000_000)
	circuit := reserve(t, sh, r)
	bh := tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	b, _ := m.buyerOn(bh, spay, func(c *BuyerConfig) { c.DirectWait = 20 * time.Second })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bh.Connect(ctx, peer.AddrInfo{ID: sh.ID(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
		t.Fatal(err)
	}
	if conns := bh.Network().ConnsToPeer(sh.ID()); !allLimited(conns) {
		t.Fatalf("the first connection should be the relayed, limited one: %d conns", len(conns))
	}
	id, err := b.Submit(context.Background(), m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, b, id)
	if j.State != JobDone || len(j.Attempts) != 1 || j.Attempts[0].Reason != ReasonNone {
		t.Fatalf("job %s (%s), attempts %+v", j.State, j.Error, j.Attempts)
	}
	if allLimited(bh.Network().ConnsToPeer(sh.ID())) {
		t.Fatal("the contract ran with no direct connection")
	}
	if rec, _ := s.Machine().Get(RoleSeller, j.ContractID); rec.State != StateSettled {
		t.Fatalf("seller's contract %s", rec.State)
	}
}

// A relay whose limits fit the contract (an hour, 1 GiB each way) carries
// it: the seller is reachable only through the relay, and the job runs, is
// paid and delivers over the relayed connection; the seller's side agrees
// the limits fit.
func TestRelayWhoseLimitsFit(t *testing.T) {
	rs := relayOnlySeller(t, 1<<30, func(c *SellerConfig) { c.MaxOutputBytes = 1 << 20 }, func(c *BuyerConfig) { c.MaxOutputBytes = 1 << 20 })
	j := rs.run(t)
	if j.State != JobDone || len(j.Attempts) != 1 || rs.pay.count(rs.host.ID()) != 1 {
		t.Fatalf("job %s (%s), attempts %+v, %d channel(s) prepared", j.State, j.Error, j.Attempts, rs.pay.count(rs.host.ID()))
	}
	if !allLimited(rs.bh.Network().ConnsToPeer(rs.host.ID())) {
		t.Fatal("the buyer holds a direct connection to a relay-only seller")
	}
	if rec, _ := rs.s.Machine().Get(RoleSeller, j.ContractID); rec.State != StateSettled {
		t.Fatalf("seller's contract %s", rec.State)
	}
}

// The seller keeps the rule too: a job stream over a relayed connection
// whose limits do not fit the contract as the seller counts it (here its
// outputs may be far larger than the buyer expects) is refused with the
// reason "unreachable", before any payment, and nothing is held against it.
func TestSellerRefusesJobOverTooSmallRelay(t *testing.T) {
	rs := relayOnlySeller(t, 10<<20, nil, func(c *BuyerConfig) { c.MaxOutputBytes = 1 << 20; c.Rounds = 1 })
	j := rs.run(t)
	if j.State != JobFailed || len(j.Attempts) != 1 || j.Attempts[0].Fault != FaultUnreachable || j.Attempts[0].Paid != 0 || j.Attempts[0].Reason != ReasonUnreachable {
		t.Fatalf("job %s (%s), attempts %+v", j.State, j.Error, j.Attempts)
	}
	rs.spay.mu.Lock()
	opens, held := rs.spay.opens, len(rs.spay.held)
	rs.spay.mu.Unlock()
	if opens != 0 || held != 0 {
		t.Fatalf("the seller accepted %d channel opens and payments for %d contracts", opens, held)
	}
	eventually(t, "the seller fails the contract and releases it", func() bool {
		rec, err := rs.s.Machine().Get(RoleSeller, j.Attempts[0].ContractID)
		return err == nil && rec.State != StateAccepted && rs.s.Held().MilliCPU == 0
	})
}

// relaySetup is a seller reachable only through a relay that limits each
// circuit to an hour and data bytes each way, and a buyer that knows only
// the seller's circuit address.
type relaySetup struct {
	m    *market
	s    *Seller
	host host.Host
	spay *fakePay
	pay  *preparePay
	bh   host.Host
	b    *Buyer
}

func relayOnlySeller(t *testing.T, data int64, sellerOpt func(*SellerConfig), buyerOpt func(*BuyerConfig)) *relaySetup {
	rs := &relaySetup{m: newMarket(t), spay: &fakePay{}}
	r := relayNet(t, relayv2.WithLimit(&relayv2.RelayLimit{Duration: time.Hour, Data: data}))
	rs.host = tcpHost(t, libp2p.ListenAddrStrings("/p2p-circuit"), libp2p.EnableRelay())
	var sopts []func(*SellerConfig)
	if sellerOpt != nil {
		sopts = append(sopts, sellerOpt)
	}
	rs.s, _ = rs.m.sellerOn(rs.host, &fakeRunner{work: testInterval}, rs.spay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, sopts...)
	circuit := reserve(t, rs.host, r)
	rs.pay = &preparePay{fakePay: rs.spay, prepared: map[peer.ID]int{}}
	rs.bh = tcpHost(t, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	rs.b, _ = rs.m.buyerOn(rs.bh, rs.pay, func(c *BuyerConfig) {
		c.DirectWait = time.Second
		buyerOpt(c)
	})
	rs.bh.Peerstore().AddAddrs(rs.host.ID(), []ma.Multiaddr{circuit}, peerstore.PermanentAddrTTL)
	return rs
}

// run submits a two-interval job and waits for it to end.
func (rs *relaySetup) run(t *testing.T) *JobStatus {
	t.Helper()
	id, err := rs.b.Submit(context.Background(), rs.m.request(2))
	if err != nil {
		t.Fatal(err)
	}
	return waitJob(t, rs.b, id)
}

// Carries: a direct connection always; a limited one only when the
// relay's limits (what is left of its duration, its data each way) cover
// the contract.
func TestCarries(t *testing.T) {
	now := time.Now()
	need := Need{Up: 10 << 20, Down: 1 << 20, Duration: 5 * time.Minute}
	for _, tc := range []struct {
		name string
		st   network.ConnStats
		want bool
	}{
		{"direct", network.ConnStats{}, true},
		{"limits unknown", network.ConnStats{Stats: network.Stats{Limited: true}}, false},
		{"relay defaults", limitedStat(now, 2*time.Minute, 128<<10), false},
		{"enough", limitedStat(now, time.Hour, 1<<30), true},
		{"too short", limitedStat(now, 4*time.Minute, 1<<30), false},
		{"too little data", limitedStat(now, time.Hour, 5<<20), false},
		{"no data limit", limitedStat(now, time.Hour, 0), true},
		{"half its time gone", limitedStat(now.Add(-56*time.Minute), time.Hour, 1<<30), false},
	} {
		if got := Carries(statConn{st: tc.st}, need, now); got != tc.want {
			t.Errorf("%s: carries %v, want %v", tc.name, got, tc.want)
		}
	}
	p := &Proposal{Request: Request{ImageSize: 3 << 20, Inputs: []Input{{Size: 1 << 20}}, Duration: time.Minute}}
	if n := NeedOf(p, 100); n.Up != 4<<20+transferMargin || n.Down != 300+transferMargin || n.Duration != 2*time.Minute {
		t.Fatalf("NeedOf: %+v", n)
	}
}

func limitedStat(opened time.Time, d time.Duration, data uint64) network.ConnStats {
	return network.ConnStats{Stats: network.Stats{Limited: true, Opened: opened,
		Extra: map[any]any{client.StatLimitDuration: d, client.StatLimitData: data}}}
}

// statConn is a network.Conn that only answers Stat.
type statConn struct {
	network.Conn
	st network.ConnStats
}

func (c statConn) Stat() network.ConnStats { return c.st }

// A withdraw frame must be exactly a contract ID; anything else changes
// nothing.
func FuzzWithdraw(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add([]byte("short"))
	f.Add(make([]byte, 33))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := parseWithdraw(b)
		if (err == nil) != (len(b) == 32) {
			t.Fatalf("%d bytes: err %v", len(b), err)
		}
		if err == nil {
			raw, perr := parseContractID(id)
			if perr != nil || string(raw) != string(b) {
				t.Fatalf("round trip: %v", perr)
			}
		}
	})
}
