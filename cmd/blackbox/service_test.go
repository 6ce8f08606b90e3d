//go:build integration

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/contract"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// serviceFlags are the flags of the service tests: a small slice of a
// core, so that a renewal's contract fits beside the running one, and a
// price cap per hour that covers a contract of a minute (30 intervals of
// 20 sats and a start fee of 1000) each minute.
var serviceFlags = []string{"--service", "--port", "8080", "--health", "http:/index.html", "--cpus", "0.1", "--memory", "64MiB",
	"--max-price", "200000"}

// httpdScript serves /tmp/www with busybox httpd; first it tries to reach
// probe (host:port) from inside with nc and writes what happened to /tmp/www/net.txt.
func httpdScript(probe string) string {
	return "mkdir -p /tmp/www && echo hello-service > /tmp/www/index.html && head -c 1048576 /dev/zero > /tmp/www/big.bin && " +
		"(echo GET / | nc -w 3 " + strings.Replace(probe, ":", " ", 1) + " && echo reached || echo unreachable) > /tmp/www/net.txt 2>&1; " +
		"exec httpd -f -p 8080 -h /tmp/www"
}

// submitService runs `blackbox submit --service --json` and returns the
// service's status with its forward listening.
func submitService(t *testing.T, buyer *daemon, image string, flags []string, cmd ...string) *contract.JobStatus {
	t.Helper()
	args := append(append([]string{"submit", "--json", "--image", image}, flags...), "--")
	out, err := buyer.cli(append(args, cmd...)...)
	if err != nil {
		t.Fatalf("submit --service: %v\n%s\n%s", err, out, tail(buyer.logs.String(), 40))
	}
	var j contract.JobStatus
	if err := json.Unmarshal([]byte(out), &j); err != nil || j.Service == nil || len(j.Service.Forwards) == 0 {
		t.Fatalf("submit --service printed %q (%v)", out, err)
	}
	return &j
}

// fetch GETs http://addr/path on a fresh connection.
func fetch(addr, path string) (string, error) {
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

// hostAddr is an address of this machine other than loopback, where a
// process outside any sandbox listens (what a job must not reach).
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			return ip.IP.String()
		}
	}
	t.Fatal("this machine has no IPv4 address besides loopback: nothing to prove the sandbox cannot reach")
	return ""
}

// TestServiceForward: a busybox httpd service on a real seller (real
// containerd, btcd regtest) is reached through the buyer's forward and
// `blackbox forward`; from inside it cannot reach a server on the host; a
// peer that is not its buyer is refused the forward protocol; its
// contracts renew before they end without a failed request; cancelled,
// every contract settles and the seller's channel closes on chain with
// what the service paid, forwarded bytes billed as egress.
func TestServiceForward(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	addr, _ := payoutAddress(t)
	seller := m.daemon(sellerEnv("BLACKBOX_PAYMENT_PAYOUT_ADDRESS="+addr, "BLACKBOX_METER_PRICING_EGRESS_GIB=100000"))
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	buyerID := buyer.peerID()
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	// A server on the host, which the service tries to reach.
	ln, err := net.Listen("tcp", hostAddr(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	var probed atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { probed.Add(1); io.WriteString(w, "host") })}
	go srv.Serve(ln)
	defer srv.Close()

	work := t.TempDir()
	j := submitService(t, buyer, busybox(t, work), append(serviceFlags, "--time", "1m"), "sh", "-c", httpdScript(ln.Addr().String()))
	id, fwd := j.ID, j.Service.Forwards[0]
	t.Logf("service %s forwarded at %s", id, fwd)
	waitFor(t, 120*time.Second, "the service healthy", func() bool {
		s := buyer.job(id).Service
		return s != nil && s.Healthy() == 1
	})
	if body, err := fetch(fwd, "/index.html"); err != nil || body != "hello-service\n" {
		t.Fatalf("GET through the forward: %q, %v\n%s", body, err, tail(seller.logs.String(), 30))
	}
	body, err := fetch(fwd, "/net.txt")
	if err != nil || !strings.HasSuffix(body, "unreachable\n") || strings.Contains(body, "reached") || probed.Load() != 0 {
		t.Fatalf("from inside the sandbox, the host's server: %q (%v), %d request(s) reached it", body, err, probed.Load())
	}
	t.Logf("from inside the sandbox, nc to the host's server %s: %q", ln.Addr(), body)
	// `blackbox forward` adds another address.
	out, err := buyer.cli("forward", id, "--listen", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("forward: %v: %s", err, out)
	}
	if body, err := fetch(strings.TrimSpace(out), "/index.html"); err != nil || body != "hello-service\n" {
		t.Fatalf("GET through `blackbox forward` %s: %q, %v", out, body, err)
	}
	out, err = buyer.cli("jobs")
	if err != nil || !strings.Contains(out, "service :8080 1/1 healthy") || !strings.Contains(out, fwd) {
		t.Fatalf("jobs does not show the service's health and forward: %v\n%s", err, out)
	}
	// A stranger (a fresh libp2p identity) names the contract: refused.
	cid := buyer.job(id).Service.Running[0].ContractID
	stranger, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	info := addrInfo(t, seller.bootAddr())
	if err := stranger.Connect(context.Background(), info); err != nil {
		t.Fatal(err)
	}
	_, err = contract.OpenForward(context.Background(), stranger, info.ID, cid)
	var je *contract.JobError
	if !errors.As(err, &je) || je.Reason != contract.RefuseContract {
		t.Fatalf("a stranger's forward: %v, want refused (contract)", err)
	}
	// Renewal: requests go on while the contract of a minute is
	// followed by the next.
	failed, total := 0, 0
	waitFor(t, 150*time.Second, "a renewal", func() bool {
		total++
		if _, err := fetch(fwd, "/index.html"); err != nil {
			failed++
			t.Logf("request %d: %v", total, err)
		}
		time.Sleep(200 * time.Millisecond)
		return buyer.job(id).Service.Renewals >= 1
	})
	if failed > 0 {
		t.Fatalf("%d of %d requests failed across a renewal", failed, total)
	}
	t.Logf("renewed: %d requests, none failed", total)
	// Downloads move bytes: they are billed (3 MiB, more than the image
	// the seller may have been sent).
	for range 3 {
		if body, err := fetch(fwd, "/big.bin"); err != nil || len(body) != 1<<20 {
			t.Fatalf("GET /big.bin: %d bytes, %v", len(body), err)
		}
	}
	// They are paid with the intervals, before any contract ends: the
	// seller's running contracts hold more than their intervals, by at
	// least the downloads' price (tally.go).
	var running, extra int64
	waitFor(t, 60*time.Second, "the downloads paid while the contracts run", func() bool {
		cs, err := seller.api().Contracts(context.Background())
		if err != nil {
			return false
		}
		running, extra = 0, 0
		for _, r := range cs.Contracts {
			if r.State == contract.StateRunning && r.Proposal != nil {
				running++
				extra += r.Paid - r.Proposal.Owed(r.Intervals)
			}
		}
		return running > 0 && extra >= contract.EgressSats(3<<20, 100_000_000)
	})
	t.Logf("before the contracts end, %d running contract(s) hold %d sats beyond their intervals (3 MiB: %d)", running, extra, contract.EgressSats(3<<20, 100_000_000))
	if out, err := buyer.cli("cancel", id); err != nil {
		t.Fatalf("cancel: %v: %s", err, out)
	}
	waitFor(t, 60*time.Second, "the service cancelled", func() bool { return buyer.job(id).State == contract.JobCancelled })
	j = buyer.job(id)
	if _, err := fetch(fwd, "/index.html"); err == nil {
		t.Fatal("the forward serves after cancel")
	}
	// Every contract the service made settled on the seller, and the
	// channel holds what the buyer paid.
	var paid int64
	var moved uint64
	waitFor(t, 60*time.Second, "the seller's contracts settled", func() bool {
		cs, err := seller.api().Contracts(context.Background())
		if err != nil {
			return false
		}
		paid, moved = 0, 0
		n := 0
		for _, r := range cs.Contracts {
			if r.State != contract.StateSettled {
				return false
			}
			paid += r.Paid
			moved += r.EgressBytes
			n++
		}
		return n == j.Service.Contracts
	})
	if paid != j.Paid || moved < 3<<20 {
		t.Fatalf("the seller holds %d sats over %d contracts (%d bytes moved); the buyer paid %d", paid, j.Service.Contracts, moved, j.Paid)
	}
	if containers := m.jobContainers(cid); containers != 0 {
		t.Fatalf("%d containers left of contract %s", containers, cid)
	}
	ch := seller.channelWith(buyerID)
	if ch == nil {
		t.Fatal("no channel with the buyer")
	}
	m.closeOnChain(seller, ch, paid)
	t.Logf("service: %d contracts, %d renewals, paid %d sats, %d bytes moved billed", j.Service.Contracts, j.Service.Renewals, paid, moved)
}

// addrInfo parses a /ip4/.../p2p/ID address.
func addrInfo(t testing.TB, s string) peer.AddrInfo {
	t.Helper()
	ma, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		t.Fatal(err)
	}
	info, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		t.Fatal(err)
	}
	return *info
}

// TestServiceRestarts: a service whose process exits every few seconds
// is restarted by its seller in the same contract, and is healthy again
// after each restart; `blackbox job` shows the restarts.
func TestServiceRestarts(t *testing.T) {
	t.Parallel()
	m := newMarket(t)
	seller := m.daemon(sellerEnv())
	buyer := m.daemon(buyerEnv, "--bootstrap", seller.bootAddr())
	m.fund(buyer.proc, 1_000_000)
	m.waitMarket(buyer, 1)
	j := submitService(t, buyer, busybox(t, t.TempDir()), append(serviceFlags, "--time", "10m"), "sh", "-c",
		"mkdir -p /tmp/www && echo hello-service > /tmp/www/index.html && (httpd -f -p 8080 -h /tmp/www &) && sleep 6 && exit 3")
	id := j.ID
	waitFor(t, 120*time.Second, "two restarts, healthy again", func() bool {
		s := buyer.job(id).Service
		return s != nil && len(s.Running) == 1 && s.Running[0].Health.Restarts >= 2 && s.Healthy() == 1
	})
	s := buyer.job(id).Service
	if s.Contracts != 1 {
		t.Fatalf("%d contracts: the restarts should stay in one", s.Contracts)
	}
	if body, err := fetch(s.Forwards[0], "/index.html"); err != nil || body != "hello-service\n" {
		t.Fatalf("GET after the restarts: %q, %v", body, err)
	}
	out, err := buyer.cli("job", id)
	if err != nil || !strings.Contains(out, "restart(s)") {
		t.Fatalf("job does not show the restarts: %v\n%s", err, out)
	}
	if out, err := buyer.cli("cancel", id); err != nil {
		t.Fatalf("cancel: %v: %s", err, out)
	}
	waitFor(t, 60*time.Second, "the service cancelled", func() bool { return buyer.job(id).State == contract.JobCancelled })
	t.Logf("%d restarts in one contract", s.Running[0].Health.Restarts)
}

// failover is a service of two replicas on three sellers, under a steady
// load of requests through the forward: what TestServiceFailover and
// TestServiceFreeze share.
type failover struct {
	m        *market
	sellers  []*daemon
	buyer    *daemon
	id, fwd  string
	victim   *daemon // the seller of replica 0
	victimID string
	cid      string // replica 0's contract
	other    string // replica 1's seller
	clients  int
	failed   atomic.Int32
	total    atomic.Int32
	slowest  atomic.Int64 // the longest request, in ns
	stop     chan struct{}
	wg       sync.WaitGroup
}

// startFailover starts three sellers and a buyer, submits a service of two
// replicas, waits until both are healthy and starts the load (two clients).
// env is added to every daemon's environment.
func startFailover(t *testing.T, env ...string) *failover {
	f := &failover{m: newMarket(t), clients: 2, stop: make(chan struct{})}
	for range 3 {
		f.sellers = append(f.sellers, f.m.daemon(sellerEnv(env...)))
	}
	boot := []string{}
	for _, s := range f.sellers {
		boot = append(boot, "--bootstrap", s.bootAddr())
	}
	f.buyer = f.m.daemon(append(slices.Clone(buyerEnv), env...), boot...)
	f.m.fund(f.buyer.proc, 2_000_000)
	f.m.waitMarket(f.buyer, 3)
	j := submitService(t, f.buyer, busybox(t, t.TempDir()), append(serviceFlags, "--replicas", "2", "--time", "10m"), "sh", "-c", httpdScript("192.0.2.1:9"))
	f.id, f.fwd = j.ID, j.Service.Forwards[0]
	waitFor(t, 180*time.Second, "two healthy replicas", func() bool {
		s := f.buyer.job(f.id).Service
		return s != nil && s.Healthy() == 2
	})
	s := f.buyer.job(f.id).Service
	byPeer := map[string]*daemon{}
	for _, d := range f.sellers {
		byPeer[d.peerID()] = d
	}
	f.victimID, f.cid, f.other = s.Running[0].Seller.String(), s.Running[0].ContractID, s.Running[1].Seller.String()
	f.victim = byPeer[f.victimID]
	if f.victim == nil || f.other == f.victimID {
		t.Fatalf("replicas: %+v", s.Running)
	}
	for range f.clients {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				select {
				case <-f.stop:
					return
				default:
				}
				f.total.Add(1)
				began := time.Now()
				if _, err := fetch(f.fwd, "/index.html"); err != nil {
					f.failed.Add(1)
					t.Logf("request: %v", err)
				}
				for d := int64(time.Since(began)); ; {
					old := f.slowest.Load()
					if d <= old || f.slowest.CompareAndSwap(old, d) {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	return f
}

// waitReplacement waits (up to timeout) until a replacement of the
// victim's replica is healthy beside the other one, and returns how long
// that took since since.
func (f *failover) waitReplacement(t *testing.T, timeout time.Duration, since time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	waitFor(t, timeout, "a healthy replacement", func() bool {
		s := f.buyer.job(f.id).Service
		if s.Healthy() < 2 || s.Replacements < 1 || runsOn(s, f.victimID) {
			return false
		}
		took = time.Since(since)
		return true
	})
	return took
}

// stopLoad ends the load (2 s after the replacement) and checks that at
// most the requests in flight at the fault failed.
func (f *failover) stopLoad(t *testing.T, what string, took time.Duration) {
	t.Helper()
	time.Sleep(2 * time.Second)
	close(f.stop)
	f.wg.Wait()
	t.Logf("%s of %s: %d of %d requests failed (%d clients), the slowest took %s; replacement healthy after %s", what, f.victimID,
		f.failed.Load(), f.total.Load(), f.clients, time.Duration(f.slowest.Load()).Round(time.Millisecond), took.Round(100*time.Millisecond))
	if f.failed.Load() > int32(f.clients) {
		t.Fatalf("%d requests failed; at most the %d in flight at the %s may", f.failed.Load(), f.clients, what)
	}
}

// TestServiceFailover: three sellers and a buyer; a service of two
// replicas under a steady load of requests through the forward; one
// replica's seller is killed (kill -9). The requests that fail are at
// most those in flight at the kill; a replacement on the third seller is
// healthy within the goal of 60 s (logged; the test asserts only that it
// comes). Cancelled, every contract settles (the killed seller's failed
// at its restart, paid what it delivered) and every channel closes on
// chain.
func TestServiceFailover(t *testing.T) {
	t.Parallel()
	f := startFailover(t)
	f.victim.kill()
	took := f.waitReplacement(t, 180*time.Second, time.Now())
	f.stopLoad(t, "kill -9", took)
	buyer, victim := f.buyer, f.victim
	f.cancel(t)
	// The killed seller starts again (its leftover container reconciled)
	// and closes its channel with what it was paid.
	victim.start()
	for _, d := range f.sellers {
		f.waitEnded(t, d)
		if ch := d.channelWith(buyer.peerID()); ch != nil && ch.Paid > 0 {
			f.m.closeOnChain(d, ch, ch.Paid)
		}
	}
}

// TestServiceFreeze: as TestServiceFailover, but the replica's seller
// hangs (SIGSTOP: its connections stay open, it answers nothing). The
// buyer sees its heartbeats stop: a replacement on the third seller is
// healthy within 60 s and at most the requests in flight at the freeze
// fail. Woken (SIGCONT), the frozen seller ends its stale contract: no
// container is left of it, and its channel with the buyer holds no more
// than the buyer paid on it. Resumption is on (the default grace), as on
// a node nobody configured: the frozen replica is waited for only a few
// seconds (a restart's) before its replacement starts, and once woken it
// gets the buyer's cancel and settles.
func TestServiceFreeze(t *testing.T) {
	t.Parallel()
	f := startFailover(t, "BLACKBOX_CONTRACT_RESTART_GRACE=2m")
	buyer, victim := f.buyer, f.victim
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	woken := false
	wake := func() {
		if !woken {
			woken = true
			victim.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	defer wake() // the cleanup's SIGTERM must reach a running process
	// The goal is 60 s: logged, not asserted.
	took := f.waitReplacement(t, 180*time.Second, frozen)
	s := buyer.job(f.id).Service
	if runsOn(s, f.victimID) || !runsOn(s, f.other) {
		t.Fatalf("replicas after the freeze: %+v", s.Running)
	}
	f.stopLoad(t, "SIGSTOP", took)
	wake()
	t.Logf("woke %s after %s frozen", f.victimID, time.Since(frozen).Round(100*time.Millisecond))
	waitFor(t, 120*time.Second, "the woken seller's stale contract ended", func() bool {
		r := victim.contractRec(f.cid)
		return r != nil && r.State != contract.StateRunning && r.State != contract.StateFunded
	})
	waitFor(t, 30*time.Second, "no container left of the stale contract", func() bool { return f.m.jobContainers(f.cid) == 0 })
	r := victim.contractRec(f.cid)
	ch, bch := victim.channelWith(buyer.peerID()), buyer.channelWith(f.victimID)
	if ch == nil || bch == nil {
		t.Fatalf("channels of the frozen seller and the buyer: %+v, %+v", ch, bch)
	}
	if ch.Paid > bch.Paid {
		t.Fatalf("the frozen seller holds %d sats on its channel; the buyer paid %d", ch.Paid, bch.Paid)
	}
	t.Logf("stale contract %s: %s, paid %d; channel: seller holds %d, buyer paid %d", f.cid[:16], r.State, r.Paid, ch.Paid, bch.Paid)
	f.cancel(t)
	for _, d := range f.sellers {
		f.waitEnded(t, d)
	}
}

// cancel cancels the service and waits for the buyer to say so.
func (f *failover) cancel(t *testing.T) {
	t.Helper()
	if out, err := f.buyer.cli("cancel", f.id); err != nil {
		t.Fatalf("cancel: %v: %s", err, out)
	}
	waitFor(t, 60*time.Second, "the service cancelled", func() bool { return f.buyer.job(f.id).State == contract.JobCancelled })
}

// waitEnded waits until seller d's contracts are settled; the victim's
// may have failed (at its restart, or woken after the buyer moved on),
// keeping what it was paid.
func (f *failover) waitEnded(t *testing.T, d *daemon) {
	t.Helper()
	waitFor(t, 60*time.Second, "the sellers' contracts ended", func() bool {
		cs, err := d.api().Contracts(context.Background())
		if err != nil {
			return false
		}
		for _, r := range cs.Contracts {
			if r.State != contract.StateSettled && !(d == f.victim && r.State == contract.StateFailed) {
				return false
			}
		}
		return true
	})
}

// runsOn reports whether a replica of service s still runs on seller id.
func runsOn(s *contract.ServiceStatus, id string) bool {
	for _, r := range s.Running {
		if r.Seller.String() == id {
			return true
		}
	}
	return false
}

// serviceLoad is a steady load of requests through a service's forward,
// one client at a time, that counts the failed ones and the longest time
// without an answer (the gap a client saw).
type serviceLoad struct {
	failed, total atomic.Int32
	gap           atomic.Int64 // ns
	stop          chan struct{}
	done          chan struct{}
}

func startLoad(t *testing.T, addr string) *serviceLoad {
	l := &serviceLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		last := time.Now()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			l.total.Add(1)
			if body, err := fetch(addr, "/index.html"); err != nil || body != "hello-service\n" {
				l.failed.Add(1)
				t.Logf("request %d: %q %v", l.total.Load(), body, err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if d := int64(time.Since(last)); d > l.gap.Load() {
				l.gap.Store(d)
			}
			last = time.Now()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return l
}

// end stops the load and returns what it counted (and resets it).
func (l *serviceLoad) end() (failed, total int32, gap time.Duration) {
	close(l.stop)
	<-l.done
	return l.failed.Load(), l.total.Load(), time.Duration(l.gap.Load())
}

// TestServiceDaemonRestarts: a service of one replica under a steady load
// survives its daemons' restarts (within contract.restart_grace). The
// seller is killed (kill -9) and started again: its container ran on, the
// seller adopts it and the same contract goes on serving on the same
// seller (at most the requests in flight at the kill fail; the others
// wait for the replica); so after a SIGTERM (an upgrade), which leaves
// the container running. Then the buyer's daemon is killed and started
// again: it runs the service again from its store, with the same contract
// and its forward on the same address, and pays on. Cancelled, the
// contract settles for what the buyer paid and no container is left.
func TestServiceDaemonRestarts(t *testing.T) {
	t.Parallel()
	m, seller, buyer, image := restartMarket(t, "60s")
	j := submitService(t, buyer, image, append(slices.Clone(serviceFlags), "--time", "10m"), "sh", "-c", httpdScript("192.0.2.1:9"))
	id, fwd := j.ID, j.Service.Forwards[0]
	waitFor(t, 120*time.Second, "the service healthy", func() bool {
		s := buyer.job(id).Service
		return s != nil && s.Healthy() == 1
	})
	cid := buyer.job(id).Service.Running[0].ContractID
	same := func(what string) *contract.JobStatus {
		t.Helper()
		j := buyer.job(id)
		s := j.Service
		// Contracts counts attempts too: a seller away longer than
		// awayReplace (5 s: its restart on a loaded machine) makes the
		// buyer try a replacement, which finds no other seller here and
		// ends; the slot stays the old contract's (Replacements 0).
		if j.State != contract.JobRunning || len(s.Running) != 1 || s.Running[0].ContractID != cid || s.Replacements != 0 {
			t.Fatalf("after %s: %s %+v; want contract %s alone\n%s", what, j.State, s, cid[:12], tail(buyer.logs.String(), 40))
		}
		if s.Contracts != 1 {
			t.Logf("after %s: %d contracts tried for the service (a replacement attempt while the seller was away)", what, s.Contracts)
		}
		return j
	}
	paidOn := func(what string) {
		t.Helper()
		before := buyer.job(id).Paid
		waitFor(t, 30*time.Second, "the buyer paying on after "+what, func() bool { return buyer.job(id).Paid > before })
	}

	// sellerDown stops the seller (down: kill -9 or SIGTERM, an upgrade),
	// starts it again and checks the same contract serves on, at most
	// the request in flight failed; resumes is how many times the buyer
	// has resumed the contract's stream by then.
	sellerDown := func(what string, down func(), resumes int) {
		t.Helper()
		load := startLoad(t, fwd)
		time.Sleep(time.Second)
		downAt := time.Now()
		down()
		if n := m.jobContainers(cid); n != 1 {
			t.Fatalf("after the %s containerd holds %d containers of the service, want it running on", what, n)
		}
		seller.start()
		away := time.Since(downAt)
		waitFor(t, 60*time.Second, "the service healthy again after the "+what, func() bool {
			return strings.Count(buyer.logs.String(), "job stream resumed") >= resumes && buyer.job(id).Service.Healthy() == 1
		})
		time.Sleep(2 * time.Second)
		failed, total, gap := load.end()
		same("the seller's " + what)
		paidOn("the seller's " + what)
		if r := seller.contractRec(cid); r == nil || r.State != contract.StateRunning {
			t.Fatalf("the seller's contract after its %s: %+v", what, r)
		}
		t.Logf("NUMBERS %s of the seller: %s without its daemon (down to API up); %d of %d requests failed, the longest gap %s; %s",
			what, away.Round(time.Millisecond), failed, total, gap.Round(time.Millisecond), resumedAfter(buyer))
		if failed > 1 {
			t.Fatalf("%d requests failed across the seller's %s; at most the one in flight may", failed, what)
		}
	}
	sellerDown("kill -9", seller.kill, 1)
	sellerDown("SIGTERM", seller.stop, 2) // an upgrade leaves the service running

	// The buyer: kill -9, start again. Its forward is down meanwhile
	// (the listener is the daemon's).
	load := startLoad(t, fwd)
	time.Sleep(time.Second)
	killAt := time.Now()
	buyer.kill()
	buyer.start()
	down := time.Since(killAt)
	waitFor(t, 60*time.Second, "the restored service healthy", func() bool {
		s := buyer.job(id).Service
		return s != nil && s.Healthy() == 1
	})
	if body, err := fetch(fwd, "/index.html"); err != nil || body != "hello-service\n" {
		t.Fatalf("GET through the restored forward %s: %q %v\n%s", fwd, body, err, tail(buyer.logs.String(), 30))
	}
	time.Sleep(2 * time.Second)
	failed, total, gap := load.end()
	j = same("the buyer's restart")
	paidOn("the buyer's restart")
	t.Logf("NUMBERS kill -9 of the buyer: %s without its daemon (kill to API up); %d of %d requests failed (its forward was down), the longest gap %s; %s",
		down.Round(time.Millisecond), failed, total, gap.Round(time.Millisecond), resumedAfter(seller))

	// Cancelled: the one contract settles for what the buyer paid.
	if out, err := buyer.cli("cancel", id); err != nil {
		t.Fatalf("cancel: %v: %s", err, out)
	}
	waitFor(t, 60*time.Second, "the service cancelled", func() bool { return buyer.job(id).State == contract.JobCancelled })
	j = buyer.job(id)
	waitFor(t, 60*time.Second, "the seller's contract settled", func() bool {
		r := seller.contractRec(cid)
		return r != nil && r.State == contract.StateSettled
	})
	r := seller.contractRec(cid)
	// The replacement attempts while the seller was away (same) found no
	// other seller and paid nothing: the one contract holds all.
	if r.Paid != j.Paid || j.Service.Replacements != 0 {
		t.Fatalf("the seller holds %d sats for the contract; the buyer paid %d over %d contract(s), %d replacements", r.Paid, j.Paid, j.Service.Contracts, j.Service.Replacements)
	}
	waitFor(t, 20*time.Second, "the service's container gone", func() bool { return m.jobContainers(cid) == 0 })
	t.Logf("one contract through both restarts: %d intervals, paid %d sats, %d bytes moved billed", r.Intervals, r.Paid, r.EgressBytes)
}
