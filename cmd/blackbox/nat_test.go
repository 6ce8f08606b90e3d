//go:build integration

package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/netlab"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/blackbox-market/blackbox/pkg/payment"
)

// The NAT tests run the market in an internet of network namespaces
// (internal/netlab): a public segment (11.0.0.0/24) with a bootstrap node,
// a relay-capable node and btcd's RPC (the test's btcd, exposed there);
// home LANs behind NAT routers: "cone" and "cone2" with endpoint-independent
// mapping, "sym" with symmetric (port-dependent) mapping. Every node is a
// real `blackbox serve` in its own namespace; the CLI reaches it through
// its data dir's socket from the test's namespace.

// nodePort is where every node in the internet listens (TCP and QUIC), as
// a configured node would.
const nodePort = 7460

// publicPeers is how many plain nodes the public segment holds besides
// the bootstrap and relay nodes.
const publicPeers = 3

// world is a market in a netlab internet, shared by the subtests of one
// test.
type world struct {
	*market
	net                 *netlab.Internet
	rpc                 string // btcd's RPC as the internet sees it
	boot, relay         *daemon
	bootAddr            string
	cone, cone2, sym    *netlab.Home
	cgnat               *netlab.Home // a home behind a carrier-grade NAT
	bootHost, relayHost *netlab.Host
}

func newWorld(t testing.TB) *world {
	t.Helper()
	m := newMarket(t)
	in := netlab.New(t)
	w := &world{market: m, net: in}
	w.rpc = in.PublicHost("chain").Expose(18334, m.btcd.RPCHost)
	w.cone, w.cone2, w.sym = in.Home("cone", netlab.Cone), in.Home("cone2", netlab.Cone), in.Home("sym", netlab.Symmetric)
	w.cgnat = in.CGNAT("isp", netlab.Cone).Home("cgnat", netlab.Cone)
	w.bootHost, w.relayHost = in.PublicHost("boot"), in.PublicHost("relay")
	// The bootstrap node and the relay-capable node sell nothing.
	w.boot = w.at(w.bootHost, []string{"BLACKBOX_METER_MAX_CPU=0"})
	w.bootAddr = w.addrOf(w.boot, w.bootHost)
	w.relay = w.at(w.relayHost, []string{"BLACKBOX_METER_MAX_CPU=0"}, "--bootstrap", w.bootAddr)
	// A few more public peers, as on the real internet: libp2p takes an
	// address peers observe it at as its own only once 4 distinct IPs
	// observed it (observedaddrs.ActivationThresh), and a node behind NAT
	// needs that public address to punch a hole.
	for i := range publicPeers {
		w.at(in.PublicHost(fmt.Sprintf("peer%d", i)), []string{"BLACKBOX_METER_MAX_CPU=0"}, "--bootstrap", w.bootAddr)
	}
	for _, h := range []*netlab.Home{w.cone, w.cone2, w.sym, w.cgnat} {
		for _, p := range []netip.Addr{w.relayHost.IP, w.cone.Router.IP, w.cone2.Router.IP, w.sym.Router.IP} {
			if p != h.Router.IP {
				if err := h.Router.Watch(p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return w
}

// in is the world for a subtest: daemons it starts stop at its end.
func (w *world) in(t *testing.T) *world {
	m := *w.market
	m.t = t
	c := *w
	c.market = &m
	return &c
}

// at starts a node on host h with the market's environment plus extra,
// btcd at its public address and the listen address nodePort.
func (w *world) at(h *netlab.Host, extra []string, args ...string) *daemon {
	w.t.Helper()
	env := append([]string{"BLACKBOX_PAYMENT_RPC_HOST=" + w.rpc}, extra...)
	quic := fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", nodePort)
	return w.daemonIn(h.Prefix(), fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", nodePort), env, append([]string{"--listen", quic}, args...)...)
}

// addrOf is d's TCP address on host h, for --bootstrap.
func (w *world) addrOf(d *daemon, h *netlab.Host) string {
	return fmt.Sprintf("/ip4/%s/tcp/%d/p2p/%s", h.IP, nodePort, d.peerID())
}

// waitRegion waits until the buyer sees n offers in region.
func (w *world) waitRegion(buyer *daemon, region string, n int) {
	t := w.t
	t.Helper()
	var offers []api.Offer
	var err error
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		offers, err = buyer.api().Market(context.Background(), api.MarketRequest{Filter: offer.Filter{Region: region}, TimeoutSeconds: 5})
		if err == nil && len(offers) >= n {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("the buyer sees %d offers in region %s (err %v), want %d\n%s", len(offers), region, err, n, tail(buyer.logs.String(), 30))
}

// balance is the daemon's wallet balance.
func (d *daemon) balance() api.Balance {
	d.m.t.Helper()
	out, err := d.cli("wallet", "balance", "--json")
	var b api.Balance
	if err != nil || json.Unmarshal([]byte(out), &b) != nil {
		d.m.t.Fatalf("wallet balance: %v: %s", err, out)
	}
	return b
}

// statusJSON is `blackbox status --json` as a map, for what a test only
// logs or looks up by key.
func (d *daemon) statusJSON() map[string]any {
	d.m.t.Helper()
	out, err := d.cli("status", "--json")
	var s map[string]any
	if err != nil || json.Unmarshal([]byte(out), &s) != nil {
		d.m.t.Fatalf("status --json: %v: %s", err, out)
	}
	return s
}

// path is the way a job's bytes went between two homes, from the seller's
// router's counters of what it let in: "direct" (from the buyer's router,
// after hole punching), "relay" (from the relay node) or "" (neither
// carried the image).
func (w *world) path(t testing.TB, seller *netlab.Home, buyer *netlab.Home, before [2]uint64, min uint64) (string, [2]uint64) {
	t.Helper()
	direct, err := seller.Router.Traffic(buyer.Router.IP)
	if err != nil {
		t.Fatal(err)
	}
	relayed, err := seller.Router.Traffic(w.relayHost.IP)
	if err != nil {
		t.Fatal(err)
	}
	now := [2]uint64{direct, relayed}
	d, r := direct-before[0], relayed-before[1]
	t.Logf("seller's router forwarded %d bytes to/from the buyer's router, %d to/from the relay", d, r)
	switch {
	case d >= min:
		return "direct", now
	case r >= min:
		return "relay", now
	}
	return "", now
}

func (w *world) counters(t testing.TB, seller, buyer *netlab.Home) [2]uint64 {
	_, c := w.path(t, seller, buyer, [2]uint64{}, 1<<62)
	return c
}

// natBuyer is buyerEnv for the NAT tests: a buyer that finds no seller it
// can deal with gives up after 30 s, not contract.busy_wait's 2 min.
var natBuyer = append([]string{"BLACKBOX_CONTRACT_BUSY_WAIT=30s"}, buyerEnv...)

// natSeller is sellerEnv in a region of its own, so that a subtest's buyer
// deals only with its own sellers.
func natSeller(region string, extra ...string) []string {
	return sellerEnv(append([]string{"BLACKBOX_REGION=" + region}, extra...)...)
}

// TestNATMarket: a seller at home, a buyer at another home, across their
// NAT routers, the whole flow through the real CLI — for a seller behind
// the cone NAT and one behind the symmetric NAT, then with 2% loss and a
// 10 Mbit uplink on the seller's router, then with the seller's home cut
// off for 30 s mid-job. One internet, one btcd and one bootstrap node for
// all of them.
func TestNATMarket(t *testing.T) {
	w := newWorld(t)
	image := busybox(t, t.TempDir())

	// outcome runs a job from a buyer in cone2 to a seller at home and
	// checks one of the three allowed ends: done directly after hole
	// punching, done over the relay, or refused as unreachable before
	// any money moved. It returns which.
	// wantPunch is the hole punching outlook the seller must derive from
	// what peers observe of its NAT ("" checks nothing).
	outcome := func(t *testing.T, w *world, home *netlab.Home, region, wantPunch string) string {
		seller := w.at(home.Host("seller-"+region), natSeller(region), "--bootstrap", w.bootAddr)
		buyer := w.at(w.cone2.Host("buyer-"+region), natBuyer, "--bootstrap", w.bootAddr)
		sellerID, buyerID := seller.peerID(), buyer.peerID()
		w.fund(buyer.proc, 1_000_000)
		w.waitRegion(buyer, region, 1)
		// Both learn they are behind NAT first (AutoNAT, relay slots):
		// status then says how each is reached.
		for _, d := range []*daemon{seller, buyer} {
			waitFor(t, 90*time.Second, "a verdict on "+d.dir+"'s reachability", func() bool { return w.reach(d).State != "unknown" })
		}
		before := buyer.balance()
		// The image may be in the sellers' shared containerd already: a
		// fresh 1 MiB input is what must cross, one way or the other.
		input := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(input, randomBytes(t, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		c0 := w.counters(t, home, w.cone2)
		flags := append([]string{"--region", region, "--input", input}, jobFlags...)
		res := filepath.Join(t.TempDir(), "res")
		j := submit(t, buyer, image, res, flags, "sh", "-c", "echo across > /out/x; sha256sum /in/data | cut -d' ' -f1")
		t.Logf("job %s: %s paid %d; attempts %+v; %q", j.ID, j.State, j.Paid, j.Attempts, j.Error)
		t.Logf("seller's reachability: %+v", w.reach(seller))
		t.Logf("buyer's reachability: %+v", w.reach(buyer))
		// What peers observe of the seller's NAT: its router's address
		// (observed, not confirmed reachable), and one public port for
		// every peer (cone: hole punching possible) or one per peer
		// (symmetric: unlikely).
		if wantPunch != "" {
			router := "/" + home.Router.IP.String() + "/"
			waitFor(t, 90*time.Second, "the seller's NAT kind (hole punching "+wantPunch+") and observed address", func() bool {
				r := w.reach(seller)
				return r.HolePunching == wantPunch && r.PublicAddrsFrom == "observed" &&
					slices.ContainsFunc(r.PublicAddrs, func(a string) bool { return strings.Contains(a, router) })
			})
		}
		if j.State == contract.JobDone {
			if j.Seller.String() != sellerID || j.Paid <= 0 || j.ExitCode != 0 {
				t.Fatalf("job %s done on %s (want %s), paid %d, exit %d", j.ID, j.Seller, sellerID, j.Paid, j.ExitCode)
			}
			if b, _ := os.ReadFile(filepath.Join(res, "out", "x")); string(b) != "across\n" {
				t.Fatalf("out/x: %q", b)
			}
			if got, want := "sha256:"+strings.TrimSpace(readFile(t, filepath.Join(res, "stdout"))), sha256File(t, input); got != want {
				t.Fatalf("the seller read an input of %s, the buyer sent %s", got, want)
			}
			way, _ := w.path(t, home, w.cone2, c0, 1<<20)
			if way == "" {
				t.Fatalf("the job is done but neither the direct path nor the relay carried the 1 MiB input")
			}
			// The nodes' status says the same: both behind NAT
			// (private, with relay slots), and a direct connection
			// between two homes is an upgrade of the relayed one by
			// DCUtR: a punch that succeeded, or its first direct dial
			// (which gets through when the other side's earlier dial
			// to this home's public address opened its NAT).
			rs, rb := w.reach(seller), w.reach(buyer)
			if rs.State != "private" || rb.State != "private" {
				// (unreachable would be a node with no relay slot)
				t.Errorf("status: seller %s, buyer %s; want both private (behind NAT, reachable through a relay)", rs.State, rb.State)
			}
			upgraded := rs.HolePunch.Successes + rb.HolePunch.Successes + rs.HolePunch.DirectDials + rb.HolePunch.DirectDials
			if way == "direct" && upgraded == 0 {
				t.Errorf("the bytes went directly, but status counts no upgrade of the relayed connection: seller %+v, buyer %+v", rs.HolePunch, rb.HolePunch)
			}
			ch := seller.channelWith(buyerID)
			if ch == nil || ch.Paid != j.Paid {
				t.Fatalf("the seller's channel %+v; the buyer paid %d", ch, j.Paid)
			}
			w.closeOnChain(seller, ch, j.Paid)
			return way
		}
		// Not done: it must be refused as unreachable before any money
		// moved (no channel, nothing paid, the wallet as it was).
		if len(j.Attempts) == 0 || j.Attempts[len(j.Attempts)-1].Reason != contract.ReasonUnreachable {
			t.Fatalf("job %s: %s %q, attempts %+v; want done, or refused as unreachable", j.ID, j.State, j.Error, j.Attempts)
		}
		if j.Paid != 0 || buyer.channelWith(sellerID) != nil || seller.channelWith(buyerID) != nil {
			t.Fatalf("refused as unreachable, yet paid %d; buyer's channel %+v", j.Paid, buyer.channelWith(sellerID))
		}
		if after := buyer.balance(); after.Spendable != before.Spendable {
			t.Fatalf("refused as unreachable, yet the wallet went from %+v to %+v", before, after)
		}
		return "unreachable"
	}

	t.Run("public seller", func(t *testing.T) {
		// The common case today: a buyer at home, a seller on a public
		// address (a rack machine). The buyer dials out through its NAT.
		w := w.in(t)
		seller := w.at(w.net.PublicHost("seller-pub"), natSeller("pub"), "--bootstrap", w.bootAddr)
		buyer := w.at(w.cone2.Host("buyer-pub"), natBuyer, "--bootstrap", w.bootAddr)
		buyerID := buyer.peerID()
		w.fund(buyer.proc, 1_000_000)
		w.waitRegion(buyer, "pub", 1)
		res := filepath.Join(t.TempDir(), "res")
		j := submit(t, buyer, image, res, append([]string{"--region", "pub"}, jobFlags...), "sh", "-c", "echo out > /out/x; echo done")
		if j.State != contract.JobDone || j.Seller.String() != seller.peerID() || j.Paid <= 0 {
			t.Fatalf("job %s: %s on %s paid %d %q", j.ID, j.State, j.Seller, j.Paid, j.Error)
		}
		if b, _ := os.ReadFile(filepath.Join(res, "out", "x")); string(b) != "out\n" {
			t.Fatalf("out/x: %q", b)
		}
		w.closeOnChain(seller, w.waitChannelPaid(seller, buyerID, j.Paid), j.Paid)
	})
	t.Run("cone", func(t *testing.T) {
		// Both homes map endpoint-independently: hole punching works, so
		// the job's bytes must go directly, not through the relay.
		if way := outcome(t, w.in(t), w.cone, "cone", "possible"); way != "direct" {
			t.Fatalf("seller behind the cone NAT: %s; want a direct connection after hole punching", way)
		}
	})
	t.Run("symmetric", func(t *testing.T) {
		// Hole punching is expected to fail: over a relay whose limits
		// fit, or refused as unreachable.
		way := outcome(t, w.in(t), w.sym, "sym", "unlikely")
		t.Logf("seller behind the symmetric NAT: %s", way)
		if way == "direct" {
			t.Logf("a direct connection to a seller behind a symmetric NAT: unexpected, but allowed")
		}
	})
	t.Run("double NAT", func(t *testing.T) {
		// A home behind its ISP's carrier-grade NAT, both mapping
		// endpoint-independently: any of the three ends, and status
		// says which.
		way := outcome(t, w.in(t), w.cgnat, "cgnat", "")
		t.Logf("seller behind a home NAT behind a carrier-grade NAT: %s", way)
	})
	t.Run("impaired", func(t *testing.T) { impairedFlow(t, w.in(t), image) })
	t.Run("partition", func(t *testing.T) { partitionFlow(t, w.in(t), image) })
}

// reach is the reachability part of the node's status --json.
func (w *world) reach(d *daemon) api.Reachability {
	d.m.t.Helper()
	return reachOf(d.m.t, d.m.bin, d.proc).Reachability
}

// impairedFlow: 2% random loss (both ways) and a 10 Mbit uplink on the
// seller's router; the whole flow — image in, a 5 MB output back up the
// limited uplink, payment, results, the close on chain — still completes.
func impairedFlow(t *testing.T, w *world, image string) {
	r := w.cone.Router
	seller := w.at(w.cone.Host("seller-imp"), natSeller("imp"), "--bootstrap", w.bootAddr)
	buyer := w.at(w.cone2.Host("buyer-imp"), natBuyer, "--bootstrap", w.bootAddr)
	buyerID := buyer.peerID()
	w.fund(buyer.proc, 1_000_000)
	w.waitRegion(buyer, "imp", 1)
	if err := r.Loss(2); err != nil {
		t.Fatal(err)
	}
	if err := r.RateLimit(10); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Loss(0); r.RateLimit(0) })
	began := time.Now()
	flags := append([]string{"--region", "imp"}, jobFlags...)
	res := filepath.Join(t.TempDir(), "res")
	j := submit(t, buyer, image, res, flags, "sh", "-c",
		"head -c 5000000 /dev/urandom > /out/blob; sha256sum /out/blob | cut -d' ' -f1")
	if j.State != contract.JobDone || j.ExitCode != 0 || j.Paid <= 0 {
		t.Fatalf("job %s under 2%% loss and a 10 Mbit uplink: %s exit %d paid %d %q; attempts %+v\nseller:\n%s",
			j.ID, j.State, j.ExitCode, j.Paid, j.Error, j.Attempts, tail(seller.logs.String(), 40))
	}
	if st, err := os.Stat(filepath.Join(res, "out", "blob")); err != nil || st.Size() != 5_000_000 {
		t.Fatalf("out/blob: %v %v", st, err)
	}
	if got, want := sha256File(t, filepath.Join(res, "out", "blob")), "sha256:"+strings.TrimSpace(readFile(t, filepath.Join(res, "stdout"))); got != want {
		t.Fatalf("out/blob is %s, the job wrote %s", got, want)
	}
	t.Logf("done in %s under 2%% loss and a 10 Mbit uplink", time.Since(began).Round(time.Millisecond))
	ch := w.waitChannelPaid(seller, buyerID, j.Paid)
	w.closeOnChain(seller, ch, j.Paid)
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitChannelPaid waits until the seller's channel with peer holds paid.
func (w *world) waitChannelPaid(seller *daemon, peer string, paid int64) *payment.Channel {
	var ch *payment.Channel
	waitFor(w.t, 30*time.Second, "the seller's channel to hold the payment", func() bool {
		ch = seller.channelWith(peer)
		return ch != nil && ch.Paid == paid
	})
	return ch
}

// partitionFlow: a job of several intervals runs on a seller at home; the
// home is cut off for 30 s, then healed. The buyer pays at most one billing
// interval for work not delivered; the job fails over to another seller
// (on the public segment, started once the job runs at home) and
// completes; after the heal both sides agree on the channel within that
// one interval, and the home seller's close pays it on chain what it holds.
func partitionFlow(t *testing.T, w *world, image string) {
	r := w.cone.Router
	seller := w.at(w.cone.Host("seller-part"), natSeller("part"), "--bootstrap", w.bootAddr)
	buyer := w.at(w.cone2.Host("buyer-part"), natBuyer, "--bootstrap", w.bootAddr)
	sellerID, buyerID := seller.peerID(), buyer.peerID()
	w.fund(buyer.proc, 1_000_000)
	w.waitRegion(buyer, "part", 1)
	// Enough --max-price (the whole job's) that what the home seller's
	// attempt leaves still buys the job from the backup.
	flags := append(append([]string{"--region", "part"}, jobFlags...), "--max-price", "30000")
	id, j := runningJob(t, buyer, image, flags, "sh", "-c", "sleep 25; echo survived > /out/x; echo done")
	if j.Seller.String() != sellerID {
		t.Fatalf("job %s runs on %s, want the home seller %s", id, j.Seller, sellerID)
	}
	// Now a seller on the public segment to fail over to (started only
	// now: the buyer's ranking explores, it might have picked it first).
	backup := w.at(w.net.PublicHost("backup"), natSeller("part"), "--bootstrap", w.bootAddr)
	w.waitRegion(buyer, "part", 2)
	cid := j.ContractID
	if err := r.Partition(); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	healed := false
	heal := func() {
		if !healed {
			healed = true
			if err := r.Heal(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(heal)
	// The seller stops the job that is no longer paid, on its own.
	waitFor(t, 25*time.Second, "the cut-off seller to stop the unpaid job", func() bool {
		rec := seller.contractRec(cid)
		return rec != nil && rec.State != contract.StateRunning
	})
	time.Sleep(time.Until(cut.Add(30 * time.Second)))
	heal()
	t.Logf("the seller's home was cut off for %s", time.Since(cut).Round(time.Millisecond))

	j = waitJob(t, buyer, id, 120*time.Second, "ends", ended)
	if j.State != contract.JobDone || j.ExitCode != 0 {
		t.Fatalf("job %s: %s exit %d %q, attempts %+v; want done on the backup", id, j.State, j.ExitCode, j.Error, j.Attempts)
	}
	if len(j.Attempts) < 2 || j.Attempts[0].ContractID != cid || j.Attempts[len(j.Attempts)-1].Seller.String() != backup.peerID() {
		t.Fatalf("attempts %+v; want the home seller's, then the backup's", j.Attempts)
	}
	res := filepath.Join(t.TempDir(), "res")
	if o, err := buyer.cli("results", id, "--out", res); err != nil {
		t.Fatalf("results: %v %s", err, o)
	}
	if b, _ := os.ReadFile(filepath.Join(res, "out", "x")); string(b) != "survived\n" {
		t.Fatalf("out/x: %q", b)
	}
	rec := seller.contractRec(cid)
	if rec == nil || rec.State == contract.StateRunning {
		t.Fatalf("the home seller's contract after the heal: %+v", rec)
	}
	paid0 := j.Attempts[0].Paid
	// At most one interval paid for work not delivered: the seller ran
	// rec.Intervals, the buyer pays one in advance.
	if limit := rec.Proposal.Owed(rec.Intervals + 1); paid0 > limit {
		t.Fatalf("the buyer paid the cut-off seller %d sats for %d intervals run; at most %d (one in advance)", paid0, rec.Intervals, limit)
	}
	// Nothing lost: the seller holds what it took, no more than the buyer
	// signed, at most one interval less (a payment cut off in flight).
	var ch, bch *payment.Channel
	waitFor(t, 30*time.Second, "both sides to see the channel", func() bool {
		ch, bch = seller.channelWith(buyerID), buyer.channelWith(sellerID)
		return ch != nil && bch != nil
	})
	interval := rec.Proposal.Owed(2) - rec.Proposal.Owed(1)
	if ch.ID != bch.ID || ch.Contracts[cid] < rec.Paid || ch.Paid > bch.Paid || bch.Paid-ch.Paid > interval || bch.Paid != paid0 {
		t.Fatalf("after the heal the seller's channel %+v, the buyer's %+v; the contract's record paid %d; the buyer's attempt paid %d",
			ch, bch, rec.Paid, paid0)
	}
	t.Logf("cut off after %d intervals: the buyer signed %d sats, the seller holds %d; the backup was paid %d",
		rec.Intervals, bch.Paid, ch.Paid, j.Attempts[len(j.Attempts)-1].Paid)
	w.closeOnChain(seller, ch, ch.Paid)
	// The backup's channel holds what the buyer paid it.
	last := j.Attempts[len(j.Attempts)-1]
	bk := w.waitChannelPaid(backup, buyerID, last.Paid)
	if bk.Paid != last.Paid {
		t.Fatalf("the backup's channel %+v; the buyer paid it %d", bk, last.Paid)
	}
}
