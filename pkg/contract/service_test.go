package contract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/peer"
)

func init() { healthEvery = 50 * time.Millisecond }

// svcRunner runs a "service": an HTTP server on a loopback port of this
// process, reached through DialContainer by the pid it reports. crashes
// is how many runs exit on their own after a moment (then it serves).
type svcRunner struct {
	fakeRunner
	crashes atomic.Int32
	body    []byte

	mu    sync.Mutex
	addrs map[int]string
	pids  int
	runs  int
	// stop, when closed, ends every run as if the container died.
	dead chan struct{}
}

var _ ContainerDialer = (*svcRunner)(nil)

func newSvcRunner(body []byte) *svcRunner {
	return &svcRunner{body: body, addrs: map[int]string{}, dead: make(chan struct{})}
}

func (r *svcRunner) Run(ctx context.Context, spec RunSpec) (*RunResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(r.body)))
		w.Write(r.body)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	r.mu.Lock()
	r.pids++
	r.runs++
	pid := r.pids
	r.addrs[pid] = ln.Addr().String()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.addrs, pid)
		r.mu.Unlock()
	}()
	if spec.OnStart != nil {
		spec.OnStart(pid)
	}
	fmt.Fprintf(spec.Stderr, "serving on %s\n", ln.Addr())
	crash := time.After(time.Hour)
	if r.crashes.Add(-1) >= 0 {
		crash = time.After(100 * time.Millisecond)
	}
	select {
	case <-ctx.Done():
		return &RunResult{Reason: "killed", ExitCode: 137}, nil
	case <-time.After(spec.WallClock):
		return &RunResult{Reason: "timeout", ExitCode: 137}, nil
	case <-crash:
		return &RunResult{Reason: "exited", ExitCode: 1}, nil
	case <-r.dead:
		return &RunResult{Reason: "exited", ExitCode: 1}, nil
	}
}

func (r *svcRunner) DialContainer(ctx context.Context, pid int, port uint16) (net.Conn, error) {
	r.mu.Lock()
	addr, ok := r.addrs[pid]
	r.mu.Unlock()
	if !ok {
		return nil, errors.New("no such process")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// Generous graces: a service's contracts must not fail on a slow machine
// (the race detector, other tests) for the assertions to hold.
func calmSeller(c *SellerConfig) { c.PayGrace = 5 * time.Second }
func calmBuyer(c *BuyerConfig)   { c.HeartbeatGrace = 5 * time.Second }

func (m *market) serviceRequest(intervals, replicas int) Request {
	req := m.request(intervals)
	req.Command = []string{"httpd", "-f", "-p", "8080"}
	req.Resources.CPUMillis = 100
	req.Service = &Service{Port: 8080, Health: "http:/", Replicas: replicas}
	return req
}

// get fetches http://addr/ on a fresh connection.
func get(addr string) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return b, err
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// healthyService submits the service req, forwarded on a free loopback
// port, and waits until n replicas are healthy; it returns the job's ID,
// the forward's address and the first replica's contract.
func healthyService(t *testing.T, b *Buyer, req Request, n int) (id, addr, cid string) {
	t.Helper()
	req.Service.Listen = "127.0.0.1:0"
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, fmt.Sprintf("%d healthy replicas", n), func() bool { return healthyReplicas(b, id) == n })
	j, _ := b.Job(id)
	return id, j.Service.Forwards[0], j.Service.Running[0].ContractID
}

// forwardedService submits the service req, waits until its replica is
// healthy and opens a forward to it on a free loopback port (Buyer.Forward).
func forwardedService(t *testing.T, b *Buyer, req Request) (id, addr string) {
	t.Helper()
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the service healthy", func() bool { return healthyReplicas(b, id) == 1 })
	if addr, err = b.Forward(id, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return id, addr
}

func healthyReplicas(b *Buyer, id string) int {
	j, err := b.Job(id)
	if err != nil || j.Service == nil {
		return 0
	}
	return j.Service.Healthy()
}

// TestServiceForward: a service is reached through the buyer's forward;
// a peer that is not the contract's buyer is refused; the forwarded bytes
// are billed as egress; cancel ends it with a settled contract.
func TestServiceForward(t *testing.T) {
	m := newMarket(t)
	body := bytes.Repeat([]byte("blackbox "), 10000)
	run := newSvcRunner(body)
	pay := &fakePay{}
	s, sh := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run }, calmSeller)
	b, _ := m.buyer(pay, calmBuyer)
	_, other := m.buyer(pay)
	m.connect()
	id, addr := forwardedService(t, b, m.serviceRequest(1000, 1))
	for range 5 {
		got, err := get(addr)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("GET through the forward: %d bytes, %v", len(got), err)
		}
	}
	j, _ := b.Job(id)
	cid := j.Service.Running[0].ContractID
	// Another peer names the contract: refused, told nothing about it.
	_, err := OpenForward(context.Background(), other, sh.ID(), cid)
	var je *JobError
	if !errors.As(err, &je) || je.Reason != RefuseContract {
		t.Fatalf("a stranger's forward: %v, want refused (contract)", err)
	}
	if err := b.Cancel(id); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, b, id)
	if j.State != JobCancelled {
		t.Fatalf("service %s after cancel: %+v", j.State, j)
	}
	eventually(t, "the seller's contract settled", func() bool {
		r, err := s.Machine().Get(RoleSeller, cid)
		return err == nil && r.State == StateSettled
	})
	r, _ := s.Machine().Get(RoleSeller, cid)
	if r.EgressBytes < uint64(5*len(body)) {
		t.Fatalf("seller billed %d bytes moved, want at least the %d forwarded", r.EgressBytes, 5*len(body))
	}
	if _, err := get(addr); err == nil {
		t.Fatal("the forward still serves after cancel")
	}
	t.Logf("contract %s: %d bytes moved billed %d sat; paid %d", cid[:8], r.EgressBytes, r.Egress, r.Paid)
}

// TestServiceRestarts: a service that exits is restarted by the seller
// (with backoff) within the same contract, and its health says so.
func TestServiceRestarts(t *testing.T) {
	m := newMarket(t)
	run := newSvcRunner([]byte("up"))
	run.crashes.Store(2)
	pay := &fakePay{}
	m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run }, calmSeller)
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	id, err := b.Submit(context.Background(), m.serviceRequest(1000, 1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy after two restarts", func() bool {
		j, _ := b.Job(id)
		return j.Service != nil && j.Service.Healthy() == 1 && j.Service.Running[0].Health.Restarts == 2
	})
	j, _ := b.Job(id)
	if j.Service.Contracts != 1 {
		t.Fatalf("%d contracts; the restarts should stay within one", j.Service.Contracts)
	}
	b.Cancel(id)
	waitJob(t, b, id)
}

// TestServiceRenews: contracts of 12 intervals renew before they end,
// and the forward serves every request across the renewals.
func TestServiceRenews(t *testing.T) {
	m := newMarket(t)
	run := newSvcRunner([]byte("renewed"))
	pay := &fakePay{}
	m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run }, calmSeller)
	b, _ := m.buyer(pay, calmBuyer)
	m.connect()
	req := m.serviceRequest(40, 1) // 8 s contracts
	req.Service.Listen = "127.0.0.1:0"
	id, err := b.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the service healthy", func() bool { return healthyReplicas(b, id) == 1 })
	j, _ := b.Job(id)
	addr := j.Service.Forwards[0]
	failed, total := 0, 0
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		total++
		if _, err := get(addr); err != nil {
			failed++
			t.Logf("request %d: %v", total, err)
		}
		if j, _ := b.Job(id); j.Service.Renewals >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	j, _ = b.Job(id)
	if j.Service.Renewals < 2 || failed > 0 {
		t.Fatalf("%d renewals, %d of %d requests failed: %+v", j.Service.Renewals, failed, total, j.Service)
	}
	b.Cancel(id)
	j = waitJob(t, b, id)
	t.Logf("%d requests across %d renewals, %d contracts, paid %d", total, j.Service.Renewals, j.Service.Contracts, j.Paid)
}

// TestServiceFailover: two replicas on three sellers; one seller's host
// goes away under a steady load: the forward keeps serving from the other
// replica and a replacement starts on the third seller.
func TestServiceFailover(t *testing.T) {
	m := newMarket(t)
	pay := &fakePay{}
	var hosts []peer.ID
	runs := map[peer.ID]*svcRunner{}
	for range 3 {
		run := newSvcRunner([]byte("replica"))
		_, h := m.seller(&run.fakeRunner, pay, offer.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30}, 3_600_000_000, func(c *SellerConfig) { c.Runner = run }, calmSeller)
		hosts = append(hosts, h.ID())
		runs[h.ID()] = run
	}
	b, bh := m.buyer(pay, calmBuyer)
	m.connect()
	id, addr, _ := healthyService(t, b, m.serviceRequest(1000, 2), 2)
	j, _ := b.Job(id)
	victim := j.Service.Running[0].Seller
	if j.Service.Running[1].Seller == victim {
		t.Fatalf("both replicas on %s", victim)
	}
	var failed, total atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			total.Add(1)
			if _, err := get(addr); err != nil {
				failed.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	// The seller is gone: its links cut, its job dead.
	close(runs[victim].dead)
	if err := m.mn.UnlinkPeers(bh.ID(), victim); err != nil {
		t.Fatal(err)
	}
	m.mn.DisconnectPeers(bh.ID(), victim)
	at := time.Now()
	eventually(t, "a replacement healthy", func() bool {
		j, _ := b.Job(id)
		if j.Service.Healthy() != 2 || j.Service.Replacements < 1 {
			return false
		}
		for _, r := range j.Service.Running {
			if r.Seller == victim {
				return false
			}
		}
		return true
	})
	took := time.Since(at)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d of %d requests failed; replacement healthy after %s", failed.Load(), total.Load(), took)
	// One client: at most the one request in flight at the loss fails.
	if failed.Load() > 1 {
		t.Fatalf("%d of %d requests failed through the seller's loss; at most the one in flight may", failed.Load(), total.Load())
	}
	b.Cancel(id)
	waitJob(t, b, id)
}

func TestServiceWire(t *testing.T) {
	req := Request{Image: strings.Repeat("a", 10), Command: []string{"httpd"}, Resources: offer.Resources{CPUMillis: 1, MemoryBytes: 1},
		Duration: time.Minute, Service: &Service{Port: 8080, Health: "http:/healthz", Replicas: 3, Listen: "127.0.0.1:1"}}
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	var back Request
	if err := back.unmarshal(req.marshal()); err != nil {
		t.Fatal(err)
	}
	if back.Service == nil || *back.Service != (Service{Port: 8080, Health: "http:/healthz"}) {
		t.Fatalf("service after the round trip: %+v (replicas and listen stay home)", back.Service)
	}
	for _, bad := range []Service{{}, {Port: 1, Health: "udp"}, {Port: 1, Health: "http:x"}, {Port: 1, Health: "http:/a b"}, {Port: 1, Replicas: MaxReplicas + 1}} {
		req.Service = &bad
		if err := req.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want invalid", bad, err)
		}
	}
	req.Service, req.Runtime = &Service{Port: 1}, "runsc"
	if err := req.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a service under runsc: %v, want invalid", err)
	}
	for _, h := range []Health{{State: HealthHealthy}, {State: HealthRestarting, Restarts: 3, Detail: "exited 1"}} {
		got, err := unmarshalHealth(marshalHealth(h))
		if err != nil || got != h {
			t.Errorf("%+v: %+v %v", h, got, err)
		}
	}
	if _, err := unmarshalHealth(nil); err == nil {
		t.Error("an empty health frame was accepted")
	}
	if r := serviceContractRequest(Request{MaxPrice: 3600, Duration: time.Hour / 2}); r.MaxPrice != 1800 {
		t.Errorf("half an hour at 3600 sat/h: %d", r.MaxPrice)
	}
}

func FuzzHealth(f *testing.F) {
	f.Add([]byte{})
	f.Add(marshalHealth(Health{State: HealthUnhealthy, Restarts: 2, Detail: "port 8080: refused"}))
	f.Add([]byte{0x08, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := unmarshalHealth(b)
		if err != nil {
			return
		}
		back, err := unmarshalHealth(marshalHealth(h))
		if err != nil || back != h {
			t.Fatalf("%x: %+v, again %+v %v", b, h, back, err)
		}
	})
}

func FuzzService(f *testing.F) {
	f.Add([]byte{})
	f.Add((&Service{Port: 8080, Health: "http:/x"}).marshal())
	f.Add([]byte{0x08, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := unmarshalService(b)
		if err != nil {
			return
		}
		if err := s.validate(); err != nil {
			t.Fatalf("%x: decoded %+v that is not valid: %v", b, s, err)
		}
		back, err := unmarshalService(s.marshal())
		if err != nil || *back != *s {
			t.Fatalf("%x: %+v, again %+v %v", b, s, back, err)
		}
	})
}

func FuzzForwardOpen(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := parseForwardOpen(b)
		if err != nil {
			return
		}
		raw, err := parseContractID(id)
		if err != nil || !bytes.Equal(raw, b) {
			t.Fatalf("%x: %s %v", b, id, err)
		}
	})
}
