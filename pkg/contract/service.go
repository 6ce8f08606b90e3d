package contract

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blackbox-market/blackbox/pkg/wire"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
)

// A service is a contract whose job runs until the buyer cancels it: the
// seller restarts it when it exits (restartPolicy), checks its health the
// way the buyer asked and reports it on the job stream (jHealth), and lets
// the buyer reach its port through /blackbox/forward/1.0.0 (forward.go).
// The buyer renews each contract before it ends by agreeing the next one
// (service_buyer.go).

// Service is what makes a request a service. Port and Health travel in the
// signed request; Replicas and Listen stay on the buyer's node.
type Service struct {
	// Port is the TCP port the job listens on, inside its own network
	// namespace.
	Port uint16 `json:"port"`
	// Health is the check the seller runs: "tcp" (the default: the port
	// accepts a connection) or "http:/PATH" (GET PATH answers 2xx or 3xx).
	Health string `json:"health,omitempty"`
	// Replicas is how many contracts run the service at once, each on a
	// different seller (0 means 1). Not sent to sellers.
	Replicas int `json:"replicas,omitempty"`
	// Listen, if set, is the local address the buyer's node forwards to
	// the service from the start ("127.0.0.1:0": a free port). Not sent.
	Listen string `json:"listen,omitempty"`
	// Unknown: a newer version's fields, kept as they came (Input.Unknown).
	Unknown wire.RawFields `json:"unknown_fields,omitempty"`
}

// MaxReplicas bounds a service's replicas.
const MaxReplicas = 16

const maxHealthLen = 200

func (s *Service) validate() error {
	switch {
	case s.Port == 0:
		return fmt.Errorf("%w: service port 0", ErrInvalid)
	case s.Replicas < 0 || s.Replicas > MaxReplicas:
		return fmt.Errorf("%w: %d replicas, want 1 to %d", ErrInvalid, s.Replicas, MaxReplicas)
	}
	return checkHealth(s.Health)
}

// validateFor checks the service of a request under runtime: gVisor
// (runsc) keeps the job's sockets in its own network stack, out of reach
// of a dial in the sandbox's network namespace.
func (s *Service) validateFor(runtime string) error {
	if runtime == "runsc" {
		return fmt.Errorf("%w: a service cannot run under runsc (its port is reached in the job's network namespace, which gVisor does not use)", ErrInvalid)
	}
	return s.validate()
}

// checkHealth checks a health check's spelling.
func checkHealth(h string) error {
	if h == "" || h == "tcp" {
		return nil
	}
	path, ok := strings.CutPrefix(h, "http:")
	if !ok || !strings.HasPrefix(path, "/") || len(h) > maxHealthLen {
		return fmt.Errorf("%w: health check %q: want tcp or http:/PATH", ErrInvalid, truncate(h, 80))
	}
	for _, r := range path {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%w: health check path %q has a space or control character", ErrInvalid, truncate(path, 80))
		}
	}
	return nil
}

// Service wire fields inside a request (rqService).
const (
	svPort protowire.Number = 1 + iota
	svHealth
)

var serviceSchema = wire.Schema{Max: 256, Open: true, Fields: []wire.Spec{svPort: varintField, svHealth: bytesField}}

func (s *Service) marshal() []byte {
	var e enc
	e.Uint(svPort, uint64(s.Port))
	e.String(svHealth, s.Health)
	e.B = append(e.B, s.Unknown...)
	return e.B
}

func unmarshalService(b []byte) (*Service, error) {
	fs, err := decode("service", &serviceSchema, b)
	if err != nil {
		return nil, err
	}
	s := &Service{}
	for _, f := range fs {
		if s.Unknown.Keep(f) {
			continue
		}
		switch f.Num {
		case svPort:
			if f.V == 0 || f.V > 65535 {
				return nil, fmt.Errorf("%w: service port %d", ErrMalformed, f.V)
			}
			s.Port = uint16(f.V)
		case svHealth:
			if s.Health, err = f.Text(maxHealthLen); err != nil {
				return nil, wireErr(err)
			}
		}
	}
	if s.Port == 0 {
		return nil, fmt.Errorf("%w: service without a port", ErrMalformed)
	}
	if err := checkHealth(s.Health); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return s, nil
}

// jHealth (seller to buyer, on the job stream of a service contract): an
// encoded Health, sent when it changes.
const jHealth byte = 40

// HealthState is what the seller's check of a service says.
type HealthState string

// Health states.
const (
	HealthStarting   HealthState = "starting"   // not yet checked healthy since it (re)started
	HealthHealthy    HealthState = "healthy"    // the last check passed
	HealthUnhealthy  HealthState = "unhealthy"  // the last check failed
	HealthRestarting HealthState = "restarting" // it exited; the seller restarts it after a backoff
)

var healthNums = []HealthState{1: HealthStarting, 2: HealthHealthy, 3: HealthUnhealthy, 4: HealthRestarting}

// Health is a service contract's health as its seller reports it.
type Health struct {
	State HealthState `json:"state"`
	// Restarts is how often the seller restarted the job in this contract.
	Restarts uint64 `json:"restarts,omitempty"`
	// Detail says why it is not healthy.
	Detail string `json:"detail,omitempty"`
}

const (
	hlState protowire.Number = 1 + iota
	hlRestarts
	hlDetail
)

var healthSchema = wire.Schema{Max: 512, Ordered: true, Fields: []wire.Spec{hlState: varintField, hlRestarts: varintField, hlDetail: bytesField}}

func marshalHealth(h Health) []byte {
	var e enc
	for i, s := range healthNums {
		if s == h.State && s != "" {
			e.Uint(hlState, uint64(i))
		}
	}
	e.Uint(hlRestarts, h.Restarts)
	e.String(hlDetail, truncateUTF8(h.Detail, maxHealthLen))
	return e.B
}

// unmarshalHealth decodes a seller's jHealth frame strictly.
func unmarshalHealth(b []byte) (Health, error) {
	fs, err := decode("health", &healthSchema, b)
	if err != nil {
		return Health{}, err
	}
	var h Health
	for _, f := range fs {
		switch f.Num {
		case hlState:
			if f.V == 0 || f.V >= uint64(len(healthNums)) {
				return Health{}, fmt.Errorf("decode health: %w: state %d", ErrMalformed, f.V)
			}
			h.State = healthNums[f.V]
		case hlRestarts:
			h.Restarts = f.V
		case hlDetail:
			if h.Detail, err = f.Text(maxHealthLen); err != nil {
				return Health{}, fmt.Errorf("decode health: %w", wireErr(err))
			}
		}
	}
	if h.State == "" {
		return Health{}, fmt.Errorf("decode health: %w: no state", ErrMalformed)
	}
	return h, nil
}

// ContainerDialer is what a Runner may also do, and must for services:
// connect to a TCP port inside the network namespace of the running job
// whose init process is pid, without giving the job any other network
// path (the node setns's a locked thread into it and dials 127.0.0.1).
type ContainerDialer interface {
	DialContainer(ctx context.Context, pid int, port uint16) (net.Conn, error)
}

// The restart policy of a service's job (ServiceConfig): exponential
// backoff from RestartMin to RestartMax, back to RestartMin after it ran
// RestartReset; after MaxRestarts restarts in one contract the contract
// ends (the buyer starts another, perhaps elsewhere).

// healthEvery is how often the seller checks a service's health when its
// config says nothing (a variable for the tests).
var healthEvery = DefaultHealthInterval

// svcRun is a running service contract on the seller.
type svcRun struct {
	id     string
	buyer  peer.ID
	port   uint16
	health string
	// pid is the job's init process while a run of it is up, else 0.
	pid atomic.Int64
	// out and in are the bytes forwarded to and from the buyer.
	out, in atomic.Int64
	// stream is the buyer's job stream now (nil while it is away), which
	// health reports go to; hmu orders them with a resumed stream's
	// resend of last.
	stream func() *conn
	hmu    sync.Mutex
	last   Health

	mu      sync.Mutex
	closed  bool
	streams map[io.Closer]struct{}
	wg      sync.WaitGroup
}

// report sends h to the buyer's stream when it changed.
func (sv *svcRun) report(s *Seller, h Health) {
	sv.hmu.Lock()
	defer sv.hmu.Unlock()
	if h == sv.last {
		return
	}
	sv.last = h
	s.log.Info("service health", "contract", sv.id, "peer", sv.buyer, "state", h.State, "restarts", h.Restarts, "detail", h.Detail)
	if c := sv.stream(); c != nil {
		_ = c.send(jHealth, marshalHealth(h))
	}
}

// resend sends the last health to c, a stream the buyer resumed (its
// node may have restarted and know nothing).
func (sv *svcRun) resend(c *conn) {
	sv.hmu.Lock()
	defer sv.hmu.Unlock()
	if sv.last.State != "" {
		_ = c.send(jHealth, marshalHealth(sv.last))
	}
}

// add registers a forward stream; false when the contract is ending.
func (sv *svcRun) add(c io.Closer) bool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.closed {
		return false
	}
	sv.streams[c] = struct{}{}
	sv.wg.Add(1)
	return true
}

func (sv *svcRun) done(c io.Closer) {
	sv.mu.Lock()
	delete(sv.streams, c)
	sv.mu.Unlock()
	sv.wg.Done()
}

// end refuses new forwards, closes the open ones and waits for them, so
// that the bytes they moved are final.
func (sv *svcRun) end() {
	sv.mu.Lock()
	sv.closed = true
	for c := range sv.streams {
		c.Close()
	}
	sv.mu.Unlock()
	sv.wg.Wait()
}

// svcTable is the seller's running service contracts.
type svcTable struct {
	mu sync.Mutex
	m  map[string]*svcRun
}

func (t *svcTable) get(id string) *svcRun {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

func (t *svcTable) put(sv *svcRun) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*svcRun{}
	}
	t.m[sv.id] = sv
}

func (t *svcTable) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

// forwarded ends contract id's forwards and returns the bytes they moved
// to and from the buyer (0, 0 for a contract that is not a service).
func (s *Seller) forwarded(id string) (out, in int64) {
	sv := s.services.get(id)
	if sv == nil {
		return 0, 0
	}
	sv.end()
	return sv.out.Load(), sv.in.Load()
}

// runSpec runs the job of a contract (resumed: re-attaches the one a
// previous process left running): once for a batch job, under the restart
// policy for a service, whose health goes to the buyer's stream as stream
// says it is now (nil while the buyer is away).
func (j *sellerJob) runSpec(ctx context.Context, spec RunSpec, stream func() *conn, resumed bool) (*RunResult, error) {
	svc := j.ct.Proposal.Request.Service
	ra, canReattach := j.s.cfg.Runner.(Reattacher)
	if svc == nil {
		if resumed && canReattach {
			return ra.Reattach(ctx, spec)
		}
		return j.s.cfg.Runner.Run(ctx, spec)
	}
	return j.runService(ctx, spec, svc, stream, resumed && canReattach)
}

func (j *sellerJob) runService(ctx context.Context, spec RunSpec, svc *Service, stream func() *conn, reattach bool) (*RunResult, error) {
	s := j.s
	pol := s.cfg.Service.withDefaults()
	dialer, ok := s.cfg.Runner.(ContainerDialer)
	if !ok {
		return nil, errors.New("this seller cannot reach a service's port (no container dialer)")
	}
	sv := &svcRun{id: j.id, buyer: j.buyer, port: svc.Port, health: svc.Health, streams: map[io.Closer]struct{}{}, stream: stream}
	// A resumed contract goes on counting from what the previous
	// process recorded (resume.go).
	sv.out.Store(j.fwOut)
	sv.in.Store(j.fwIn)
	s.services.put(sv)
	// The entry stays until the bill is made (forwarded), so that the
	// bytes of the last forwards are counted; runAndBill removes it.
	end := s.clock.Now().Add(spec.WallClock)
	spec.Output = io.Discard // a service has no results: /out is not shipped
	var restarts atomic.Uint64
	report := func(h Health) {
		h.Restarts = restarts.Load()
		sv.report(s, h)
	}
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	report(Health{State: HealthStarting})
	go func() {
		for {
			select {
			case <-hctx.Done():
				return
			case <-time.After(pol.HealthInterval):
			}
			pid := int(sv.pid.Load())
			if pid == 0 {
				continue
			}
			err := checkService(hctx, dialer, pid, svc, pol.HealthTimeout)
			if hctx.Err() != nil {
				return
			}
			if int(sv.pid.Load()) != pid {
				continue // restarted meanwhile
			}
			if err != nil {
				report(Health{State: HealthUnhealthy, Detail: err.Error()})
			} else {
				report(Health{State: HealthHealthy})
			}
		}
	}()
	var total Usage
	backoff := pol.RestartMin
	for {
		spec.WallClock = end.Sub(s.clock.Now())
		if spec.WallClock <= 0 {
			spec.WallClock = time.Second
		}
		spec.OnStart = func(pid int) { sv.pid.Store(int64(pid)) }
		at := s.clock.Now()
		var res *RunResult
		var err error
		if reattach {
			// The run a previous process left running: followed to its
			// end, then the restart policy goes on as for any run. One
			// that is gone (it was between two runs) starts again.
			reattach = false
			if res, err = s.cfg.Runner.(Reattacher).Reattach(ctx, spec); err != nil && !errors.Is(err, ErrDetached) && ctx.Err() == nil {
				s.log.Info("service not re-attached: starting it again", "contract", j.id, "peer", j.buyer, "err", err)
				res, err = s.cfg.Runner.Run(ctx, spec)
			}
		} else {
			res, err = s.cfg.Runner.Run(ctx, spec)
		}
		sv.pid.Store(0)
		if errors.Is(err, ErrDetached) || errors.Is(context.Cause(ctx), ErrDetach) {
			// The seller stops for an upgrade: the service runs on (or,
			// between two runs, starts again) at its next start.
			return nil, ErrDetached
		}
		if res != nil {
			total.CPUTime += res.Usage.CPUTime
			total.PeakMemory = max(total.PeakMemory, res.Usage.PeakMemory)
			total.OOMKills += res.Usage.OOMKills
			total.Wall += res.Usage.Wall
		}
		if err != nil && res == nil && restarts.Load() == 0 {
			return nil, err // it never ran
		}
		if res == nil {
			res = &RunResult{ExitCode: -1, Reason: "error", Error: errString(err)}
		}
		if ctx.Err() != nil || !s.clock.Now().Before(end) || res.Reason == "timeout" {
			res.Usage = total
			return res, nil
		}
		if restarts.Load() >= uint64(pol.MaxRestarts) {
			s.log.Info("service keeps exiting: contract ends", "contract", j.id, "peer", j.buyer, "restarts", restarts.Load(), "exit", res.ExitCode)
			res.Usage = total
			return res, nil
		}
		if s.clock.Now().Sub(at) >= pol.RestartReset {
			backoff = pol.RestartMin
		}
		restarts.Add(1)
		report(Health{State: HealthRestarting, Detail: fmt.Sprintf("exited %d (%s); restart in %s", res.ExitCode, res.Reason, backoff)})
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), ErrDetach) {
				return nil, ErrDetached // the next start runs it again
			}
			res.Usage = total
			return res, nil
		case <-s.clock.After(backoff):
		}
		backoff = min(2*backoff, pol.RestartMax)
		report(Health{State: HealthStarting})
	}
}

// checkService runs svc's health check against the job whose init
// process is pid.
func checkService(ctx context.Context, d ContainerDialer, pid int, svc *Service, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContainer(ctx, pid, svc.Port)
	if err != nil {
		return fmt.Errorf("port %d: %w", svc.Port, err)
	}
	defer c.Close()
	path, ok := strings.CutPrefix(svc.Health, "http:")
	if !ok {
		return nil
	}
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: localhost\r\nUser-Agent: blackbox-health\r\n\r\n", path); err != nil {
		return fmt.Errorf("http %s: %w", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		return fmt.Errorf("http %s: %w", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http %s: status %d", path, resp.StatusCode)
	}
	return nil
}
