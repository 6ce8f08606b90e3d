//go:build integration

package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/internal/api"
	"github.com/blackbox-market/blackbox/internal/netlab"
	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/blackbox-market/blackbox/pkg/offer"
)

// BenchmarkNAT measures the market across NATs in a netlab internet (the
// world of TestNATMarket) and prints BENCHROW lines for bench.sh's table:
//
//   - hole punching: of BLACKBOX_BENCH_PUNCHES (20; the symmetric NAT,
//     expected to fail, BLACKBOX_BENCH_SYM_PUNCHES, 5) fresh buyers at home
//     (cone2) that find a seller's offer at another home, how many got a
//     direct connection to it (the seller's router let in bytes from the
//     buyer's router: ground truth, not the nodes' own counters), for a
//     seller behind the cone NAT and one behind the symmetric NAT;
//   - from `serve` start of a seller behind NAT to its offer being found
//     by a buyer at another home (median of 5);
//   - submit-to-result of a trivial warm job home to home behind NAT, as
//     a ratio to the same job between two nodes on loopback, interleaved
//     in the same run (median of 3 each);
//   - idle CPU and RSS over BLACKBOX_BENCH_IDLE (60 s) of a node behind
//     NAT holding relay slots, and of the public relay node while 20 nodes
//     behind NAT hold slots on it (goal < 1% of a core, < 80 MiB).
func BenchmarkNAT(b *testing.B) {
	w := newWorld(b)
	image := busybox(b, b.TempDir())
	ctx := context.Background()
	row := func(figure, baseline, ratio, goal string, met bool) {
		m := "no"
		if met {
			m = "yes"
		}
		fmt.Printf("BENCHROW %s|%s|%s|%s|%s\n", figure, baseline, ratio, goal, m)
	}
	sees := func(buyer *daemon, region, seller string) bool {
		offers, err := buyer.api().Market(ctx, api.MarketRequest{Filter: offer.Filter{Region: region}, TimeoutSeconds: 5})
		return err == nil && slices.ContainsFunc(offers, func(o api.Offer) bool { return o.Seller == seller })
	}

	observed := func(d *daemon) bool {
		return slices.ContainsFunc(waitStatus(b, w.bin, d.proc).Addrs, func(a string) bool {
			f := strings.Split(a, "/")
			ip, err := netip.ParseAddr(f[min(2, len(f)-1)])
			return err == nil && netlab.PublicPrefix.Contains(ip) && !strings.Contains(a, "p2p-circuit")
		})
	}

	buyer := w.at(w.cone2.Host("buyer"), natBuyer, "--bootstrap", w.bootAddr)
	w.fund(buyer.proc, 2_000_000)

	// From serve start to the offer found from the other home.
	var found []float64
	var seller *daemon
	for i := range 5 {
		region := fmt.Sprintf("found%d", i)
		began := time.Now()
		s := w.at(w.cone.Host(region), natSeller(region), "--bootstrap", w.bootAddr)
		id := s.peerID()
		for !sees(buyer, region, id) {
			if time.Since(began) > 3*time.Minute {
				b.Fatalf("the buyer at cone2 never found the offer of %s at cone\n%s", id, tail(s.logs.String(), 30))
			}
			time.Sleep(200 * time.Millisecond)
		}
		found = append(found, time.Since(began).Seconds())
		b.Logf("offer %d found %.1f s after serve started", i+1, found[i])
		if i < 4 {
			s.stop()
		} else {
			seller = s
		}
	}
	f := median(found)
	row(fmt.Sprintf("NAT offer found from another home (median of 5) = %.1f s", f), "-", "-", "informational", true)

	// Submit-to-result home to home, against loopback in the same run.
	loSeller := w.daemon(natSeller("lo"))
	loBuyer := w.daemon(buyerEnv, "--bootstrap", loSeller.bootAddr())
	w.fund(loBuyer.proc, 2_000_000)
	w.waitRegion(loBuyer, "lo", 1)
	job := func(buyer *daemon, region string) (time.Duration, *contract.JobStatus) {
		out := filepath.Join(b.TempDir(), "res")
		began := time.Now()
		j := submit(b, buyer, image, out, append([]string{"--region", region}, jobFlags...), "sh", "-c", "echo hello > /out/hello.txt")
		return time.Since(began), j
	}
	var home, lo []float64
	homeOK := true
	for i := range 4 { // the first of each warms up: channel, image
		d, j := job(buyer, "found4")
		if j.State != contract.JobDone {
			b.Logf("home-to-home job %d: %s %q; attempts %+v", i, j.State, j.Error, j.Attempts)
			homeOK = false
			break
		}
		dl, jl := job(loBuyer, "lo")
		if jl.State != contract.JobDone {
			b.Fatalf("loopback job: %s %q", jl.State, jl.Error)
		}
		if i > 0 {
			home, lo = append(home, d.Seconds()), append(lo, dl.Seconds())
		}
		b.Logf("trivial job %d: home to home %.2f s, loopback %.2f s", i, d.Seconds(), dl.Seconds())
	}
	if homeOK {
		h, l := median(home), median(lo)
		row(fmt.Sprintf("NAT trivial job home to home = %.2f s", h), fmt.Sprintf("%.2f s (loopback)", l), fmt.Sprintf("%.2f", h/l), "informational", true)
	} else {
		row("NAT trivial job home to home = failed", "-", "-", "completes", false)
	}

	// Hole punching, cone and symmetric.
	punches := benchEnvCount(b, "BLACKBOX_BENCH_PUNCHES", 20, 1)
	// The symmetric NAT is expected to fail: a few attempts show it (each
	// waits its whole 10 s for a direct path that never comes; 20 of them
	// were half of the benchmark's time).
	symPunches := benchEnvCount(b, "BLACKBOX_BENCH_SYM_PUNCHES", 5, 1)
	// The attempts' buyers only look up and connect: no wallet (payments
	// off, no btcd at that address). A wallet made each a few seconds
	// slower to start, and its websocket to the test's one btcd counted
	// against btcd's limit of them.
	punchBuyer := append(slices.Clone(natBuyer), "BLACKBOX_PAYMENT_RPC_HOST=127.0.0.1:9")
	// Only the attempt's buyer may talk from cone2 to the sellers now:
	// the routers count by address, and the job buyer's connection to
	// the cone seller would count as a hole punch.
	buyer.stop()
	symSeller := w.at(w.sym.Host("symseller"), natSeller("sympunch"), "--bootstrap", w.bootAddr)
	for _, c := range []struct {
		name    string
		home    *netlab.Home
		seller  *daemon
		region  string
		punches int
	}{{"cone", w.cone, seller, "found4", punches}, {"symmetric", w.sym, symSeller, "sympunch", symPunches}} {
		punches := c.punches
		id := c.seller.peerID()
		hp0 := w.reach(c.seller).HolePunch
		ok := 0
		for i := range punches {
			before, err := c.home.Router.Traffic(w.cone2.Router.IP)
			if err != nil {
				b.Fatal(err)
			}
			began := time.Now()
			p := w.at(w.cone2.Host(fmt.Sprintf("p%s%d", c.name[:1], i)), punchBuyer, "--bootstrap", w.bootAddr)
			up := time.Now()
			// A hole punch needs the address peers see it at: libp2p
			// adopts one once 4 public peers observed it.
			for !observed(p) && time.Since(began) < time.Minute {
				time.Sleep(200 * time.Millisecond)
			}
			seen := time.Now()
			for !sees(p, c.region, id) && time.Since(began) < 2*time.Minute {
				time.Sleep(200 * time.Millisecond)
			}
			saw := time.Now()
			direct := false
			for t0 := time.Now(); time.Since(t0) < 10*time.Second && !direct; time.Sleep(200 * time.Millisecond) {
				n, err := c.home.Router.Traffic(w.cone2.Router.IP)
				direct = err == nil && n > before
			}
			if direct {
				ok++
			}
			// The nodes' own view, for the log: DCUtR's counters.
			hp := w.reach(p).HolePunch
			b.Logf("%s attempt %d: direct %v (%.1f s: up %.1f s, observed %.1f s, found %.1f s); the buyer's DCUtR: %d attempts, %d successes, %d direct dials",
				c.name, i+1, direct, time.Since(began).Seconds(), up.Sub(began).Seconds(), seen.Sub(up).Seconds(), saw.Sub(seen).Seconds(), hp.Attempts, hp.Successes, hp.DirectDials)
			p.stop()
		}
		// The seller's own view beside the routers' ground truth: its
		// DCUtR counters over the attempts, and the NAT kind it derived.
		r := w.reach(c.seller)
		hp := r.HolePunch
		b.Logf("%s seller's reachability after %d attempts: %+v", c.name, punches, r)
		goal, met := ">= 90%", float64(ok) >= 0.9*float64(punches)
		if c.name == "symmetric" {
			goal, met = "expected to fail", true
		}
		row(fmt.Sprintf("NAT hole punch %s = %d of %d (seller's DCUtR: %d punches, %d succeeded, %d direct dials; hole_punching %s)",
			c.name, ok, punches, hp.Attempts-hp0.Attempts, hp.Successes-hp0.Successes, hp.DirectDials-hp0.DirectDials, r.HolePunching),
			"-", fmt.Sprintf("%.2f", float64(ok)/float64(punches)), goal, met)
	}

	// Idle: relay slots held behind NAT; a relay serving 20.
	relayAddr := w.addrOf(w.relay, w.relayHost)
	relayID := w.relay.peerID()
	homes := []*netlab.Home{w.cone, w.cone2, w.sym}
	var reserved []*daemon
	for i := range 20 {
		// Slot holders need no wallet: their payments are off (no btcd
		// at that address). (With a wallet each, a fresh node once hung
		// over two minutes in "creating the node's wallet" here.)
		env := []string{"BLACKBOX_METER_MAX_CPU=0", "BLACKBOX_NETWORK_RELAYS=" + relayAddr, "BLACKBOX_PAYMENT_RPC_HOST=127.0.0.1:9"}
		reserved = append(reserved, w.at(homes[i%3].Host(fmt.Sprintf("r%d", i)), env, "--bootstrap", w.bootAddr))
	}
	holding := func() int {
		n := 0
		for _, d := range reserved {
			if slices.Contains(w.reach(d).Relays, relayID) {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(3 * time.Minute)
	for holding() < 20 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Second)
	}
	held := holding()
	b.Logf("%d of 20 nodes behind NAT hold a slot on the relay", held)
	if r := w.reach(seller); len(r.Relays) == 0 {
		b.Logf("the seller behind NAT holds no relay slot: %+v", r)
	}
	time.Sleep(benchEnvDuration(b, "BLACKBOX_BENCH_SETTLE", 10*time.Second))
	idle := benchEnvDuration(b, "BLACKBOX_BENCH_IDLE", time.Minute)
	procs := map[string]*daemon{"node behind NAT holding relay slots": seller, fmt.Sprintf("public relay serving %d slots", held): w.relay}
	for name, f := range measureIdle(b, procs, idle) {
		row(fmt.Sprintf("%s idle CPU = %.2f %% of a core", name, f.cpuPct), "-", "-", "< 1 %", f.cpuPct < 1)
		row(fmt.Sprintf("%s idle RSS = %.1f MiB", name, f.rssMiB), "-", "-", "< 80 MiB", f.rssMiB < 80)
	}
}
