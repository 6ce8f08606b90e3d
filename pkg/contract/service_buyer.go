package contract

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The buyer's side of a service. A service is a job (JobStatus with
// Service set) that runs until cancelled as a chain of contracts per
// replica ("slot"). Renewal overlaps: renewLead before a slot's contract
// ends, the next one is agreed (with any seller not running another
// replica, the same one included) and started; once it runs and its
// health check passes, the old one is cancelled (billed for the intervals
// it started). The forward balances over every running contract, so
// connections move to the new contract without a gap. Overlap was chosen
// over handing a running container from one contract to the next: each
// contract stays a bounded, separately signed and settled agreement whose
// job the seller starts and stops as any other, at the cost of one
// overlapping interval or two per renewal, and of the job's local state
// (a service keeps its state elsewhere, as any replicated one must).
//
// A slot whose contract fails (seller gone, missed heartbeats, refused
// payments) starts a replacement at once on a seller not running another
// replica; the forward skips contracts that are not running or not
// healthy, and retries a connection on the next replica when one refuses.

// ServiceStatus is a service as `blackbox jobs` and `blackbox job` show it.
type ServiceStatus struct {
	Port   uint16 `json:"port"`
	Health string `json:"health"`
	// Replicas is how many contracts should run it at once.
	Replicas int `json:"replicas"`
	// Forwards are the local addresses forwarding to it.
	Forwards []string `json:"forwards,omitempty"`
	// Running are its contracts now (more than Replicas while one renews).
	Running []ServiceReplica `json:"running"`
	// Contracts counts the contracts it made; Renewals and Replacements
	// the ones that followed another before it ended, or after it failed.
	Contracts    int `json:"contracts"`
	Renewals     int `json:"renewals"`
	Replacements int `json:"replacements"`
}

// ServiceReplica is one contract of a service.
type ServiceReplica struct {
	Slot       int      `json:"slot"`
	Seller     peer.ID  `json:"seller,omitempty"`
	ContractID string   `json:"contract_id,omitempty"`
	State      JobState `json:"state"`
	Phase      string   `json:"phase,omitempty"`
	Health     Health   `json:"health"`
	Paid       int64    `json:"paid_sat"`
}

// Healthy counts the running, healthy contracts.
func (s *ServiceStatus) Healthy() int {
	n := 0
	for _, r := range s.Running {
		if r.State == JobRunning && r.Health.State == HealthHealthy {
			n++
		}
	}
	return n
}

// DefaultServiceTerm is a service contract's length when the request
// names none.
const DefaultServiceTerm = time.Hour

// serviceContractRequest is the request each contract of a service
// proposes: the service's MaxPrice is per hour, a contract's is for its
// length.
func serviceContractRequest(req Request) Request {
	if req.MaxPrice > 0 {
		req.MaxPrice = (req.MaxPrice*uint64(req.Duration/time.Second) + 3599) / 3600
	}
	return req
}

// slotPoll is how often a slot looks at its contract.
const slotPoll = 250 * time.Millisecond

var errRenewed = errors.New("renewed: the next contract serves")

// serviceBook is the buyer's running services.
type serviceBook struct {
	mu    sync.Mutex
	byID  map[string]*svcBuyer
	byJob map[string]*svcBuyer // a contract's (shadow) job ID
}

func (b *Buyer) service(id string) *svcBuyer {
	b.svc.mu.Lock()
	defer b.svc.mu.Unlock()
	return b.svc.byID[id]
}

func (b *Buyer) serviceOfJob(jobID string) *svcBuyer {
	b.svc.mu.Lock()
	defer b.svc.mu.Unlock()
	return b.svc.byJob[jobID]
}

// svcBuyer is one running service.
type svcBuyer struct {
	id  string
	b   *Buyer
	j   *JobStatus
	ctx context.Context

	mu        sync.Mutex
	ended     bool
	listeners []net.Listener
	slots     [][]*svcContract
	health    map[string]Health
	counts    map[string]*fwdCount
	bad       map[string]time.Time // contract: when a forward to it failed
	rr        int
	made      int
	renewals  int
	replaced  int
	paidDone  int64 // what contracts that ended paid
	dirty     chan struct{}
}

// svcContract is one contract chain of a slot: a shadow job that seek
// runs (and moves to another seller when its contract fails).
type svcContract struct {
	slot   int
	sj     *JobStatus
	cancel context.CancelCauseFunc
	done   chan struct{}
	// contract and runningAt: the contract seen running, and since when.
	contract  string
	runningAt time.Time
	// draining: renewed, it takes no new connections (sv.mu).
	draining bool
}

// drain waits until c's forwarded connections ended, c ended, ctx ended or
// the drain time (contract.service.drain) passed.
func (sv *svcBuyer) drain(ctx context.Context, c *svcContract) {
	n := sv.counter(c.contract)
	for end := sv.b.clock.Now().Add(sv.b.cfg.Service.withDefaults().Drain); n.open() > 0 && sv.b.clock.Now().Before(end); {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-sv.b.clock.After(100 * time.Millisecond):
		}
	}
}

func (sv *svcBuyer) changed() {
	select {
	case sv.dirty <- struct{}{}:
	default:
	}
}

// runService runs service job j until it is cancelled. After a restart
// (j.Service is what the previous process recorded), it goes on with the
// running contracts in resumed (service_restart.go).
func (b *Buyer) runService(ctx context.Context, j *JobStatus, resumed []*Record) {
	svc := *j.Request.Service
	n := max(svc.Replicas, 1)
	prev := j.Service
	sv := &svcBuyer{id: j.ID, b: b, j: j, ctx: ctx, slots: make([][]*svcContract, n), health: map[string]Health{},
		counts: map[string]*fwdCount{}, bad: map[string]time.Time{}, dirty: make(chan struct{}, 1)}
	b.svc.mu.Lock()
	if b.svc.byID == nil {
		b.svc.byID, b.svc.byJob = map[string]*svcBuyer{}, map[string]*svcBuyer{}
	}
	b.svc.byID[j.ID] = sv
	b.svc.mu.Unlock()
	defer func() {
		b.svc.mu.Lock()
		delete(b.svc.byID, j.ID)
		b.svc.mu.Unlock()
	}()
	first := sv.snapshot()
	b.update(j, func(j *JobStatus) { j.State, j.Phase, j.Service = JobRunning, "discover", first })
	var curs []*svcContract
	if prev != nil {
		curs = sv.restore(ctx, prev, resumed)
	} else if svc.Listen != "" {
		if _, err := sv.forward(b, svc.Listen); err != nil {
			b.update(j, func(j *JobStatus) { j.State, j.Phase, j.Error = JobFailed, "", err.Error() })
			return
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		var cur *svcContract
		if i < len(curs) {
			cur = curs[i]
		}
		wg.Add(1)
		go func() { defer wg.Done(); sv.slot(ctx, i, cur) }()
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	var last string
	refresh := func() {
		s := sv.snapshot()
		paid := sv.paid()
		key := fmt.Sprintf("%+v %d", *s, paid)
		if key == last {
			return
		}
		last = key
		b.update(j, func(j *JobStatus) {
			j.Service, j.Paid = s, paid
			j.Phase = "run"
			if len(s.Running) > 0 {
				r := s.Running[0]
				j.Seller, j.ContractID = r.Seller, r.ContractID
			}
		})
	}
loop:
	for {
		refresh()
		select {
		case <-stopped:
			break loop
		case <-sv.dirty:
		case <-time.After(time.Second):
		}
	}
	sv.mu.Lock()
	sv.ended = true
	for _, l := range sv.listeners {
		l.Close()
	}
	sv.mu.Unlock()
	refresh()
	cause := context.Cause(ctx)
	if errors.Is(cause, errBuyerStopping) {
		// The node stops: the service, and its contracts that can be
		// resumed, go on at its next start (service_restart.go).
		b.log.Info("service left for the next start", "service", j.ID, "contracts", sv.made)
		return
	}
	b.update(j, func(j *JobStatus) {
		j.Phase = ""
		if cause == errCancelled {
			j.State, j.Error = JobCancelled, "cancelled"
		} else {
			j.State, j.Error = JobFailed, errString(cause)
		}
	})
	b.log.Info("service ended", "service", j.ID, "cause", cause, "contracts", sv.made, "paid_sats", sv.paid())
}

// slot keeps one replica of the service running until ctx ends, from cur
// (nil: a new contract).
func (sv *svcBuyer) slot(ctx context.Context, i int, cur *svcContract) {
	b := sv.b
	defer func() {
		// Every contract of the slot ends with the service; one whose
		// seller is away goes on in the background until it is back
		// (to be told) or the restart grace ends.
		sv.mu.Lock()
		list := slices.Clone(sv.slots[i])
		sv.mu.Unlock()
		for _, c := range list {
			if _, away := sv.away(c); away && !errors.Is(context.Cause(ctx), errBuyerStopping) {
				sv.abandon(i, c, context.Cause(ctx))
				continue
			}
			<-c.done
		}
	}()
	var renewAfter, replaceAfter time.Time
	for ctx.Err() == nil {
		if cur == nil {
			cur = sv.start(ctx, i)
		}
		select {
		case <-ctx.Done():
			continue
		case <-cur.done:
			failed := cur.runningAt.IsZero()
			if until, spent := sv.capSpent(cur); spent {
				// Its bytes took the contract to its max price before its
				// end: the next starts when it would have ended, so that
				// the slot spends at most the service's max price an hour.
				b.log.Warn("service replica paused: its contract spent its max price before its end", "service", sv.id, "slot", i,
					"contract", cur.contract, "max_price_sats", cur.sj.Request.MaxPrice, "until", until.Format(time.RFC3339))
				select {
				case <-ctx.Done():
				case <-b.clock.After(until.Sub(b.clock.Now())):
				}
			}
			cur = nil
			if failed {
				// No seller took it: wait before asking the market again.
				select {
				case <-ctx.Done():
				case <-b.clock.After(b.cfg.RetryBackoff):
				}
			}
			continue
		case <-b.clock.After(slotPoll):
		}
		sv.observe(cur)
		if since, away := sv.away(cur); away && b.clock.Now().Sub(since) >= awayReplace && !b.clock.Now().Before(replaceAfter) {
			var ok bool
			if cur, ok = sv.replaceAway(ctx, i, cur); !ok {
				replaceAfter = b.clock.Now().Add(b.cfg.RetryBackoff * 5)
			}
			continue
		}
		if cur.runningAt.IsZero() || b.clock.Now().Before(renewAfter) {
			continue
		}
		term := cur.sj.Request.Duration
		if b.clock.Now().Before(cur.runningAt.Add(term - b.cfg.Service.renewLead(term))) {
			continue
		}
		// Renew: the next contract first, then the old one goes.
		next := sv.start(ctx, i)
		if sv.waitUp(ctx, next, cur) {
			b.log.Info("service contract renewed", "service", sv.id, "slot", i, "old", cur.contract, "new", next.contract)
			sv.mu.Lock()
			sv.renewals++
			cur.draining = true
			sv.mu.Unlock()
			// New connections go to the new contract; the old one ends
			// once its open ones did (or the drain time passed).
			sv.drain(ctx, cur)
			cur.cancel(errRenewed)
			cur = next
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		select {
		case <-cur.done:
			// The old one ended first: the new one is the slot's now.
			cur = next
		default:
			// The new one failed: keep the old, try again in a while.
			next.cancel(errors.New("renewal not up"))
			renewAfter = b.clock.Now().Add(b.cfg.RetryBackoff * 5)
		}
	}
}

// capSpent reports whether c's contract ended having paid its whole max
// price before the end of its term, and when that term ends.
func (sv *svcBuyer) capSpent(c *svcContract) (time.Time, bool) {
	b := sv.b
	b.mu.Lock()
	paid, limit := c.sj.Paid, c.sj.Request.MaxPrice
	b.mu.Unlock()
	if c.runningAt.IsZero() || limit == 0 || paid < int64(limit) {
		return time.Time{}, false
	}
	until := c.runningAt.Add(c.sj.Request.Duration)
	return until, b.clock.Now().Before(until)
}

// waitUp waits until next runs and is healthy (true), or until next ends,
// cur ends or ctx ends (false).
func (sv *svcBuyer) waitUp(ctx context.Context, next, cur *svcContract) bool {
	for {
		sv.observe(next)
		if !next.runningAt.IsZero() {
			sv.mu.Lock()
			h := sv.health[next.contract]
			sv.mu.Unlock()
			if h.State == HealthHealthy {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-next.done:
			return false
		case <-cur.done:
			return false
		case <-sv.b.clock.After(500 * time.Millisecond):
		}
	}
}

// observe notes when c's contract started running (again, after seek
// moved it to another seller).
func (sv *svcBuyer) observe(c *svcContract) {
	b := sv.b
	b.mu.Lock()
	state, id := c.sj.State, c.sj.ContractID
	b.mu.Unlock()
	if state != JobRunning || id == "" {
		return
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if id != c.contract {
		if c.contract != "" {
			sv.replaced++
			b.log.Info("service replica replaced", "service", sv.id, "slot", c.slot, "old", c.contract, "new", id)
		}
		c.contract, c.runningAt = id, b.clock.Now()
	}
}

// start begins a new contract chain for slot i, on a seller that runs no
// other slot of the service.
func (sv *svcBuyer) start(ctx context.Context, i int) *svcContract {
	return sv.startAvoiding(ctx, i, "")
}

// startAvoiding is start, on a seller other than avoid too.
func (sv *svcBuyer) startAvoiding(ctx context.Context, i int, avoid peer.ID) *svcContract {
	b := sv.b
	req := serviceContractRequest(sv.j.Request)
	// Another slot still choosing its seller might choose the same one:
	// wait (a bounded while) until the others have theirs.
	for end := b.clock.Now().Add(30 * time.Second); sv.othersChoosing(i) && ctx.Err() == nil && b.clock.Now().Before(end); {
		select {
		case <-ctx.Done():
		case <-b.clock.After(100 * time.Millisecond):
		}
	}
	sv.mu.Lock()
	sv.made++
	n := sv.made
	sj := &JobStatus{ID: fmt.Sprintf("%s-%d-%d", sv.id, i, n), Request: req, State: JobSearching, Created: b.clock.Now(), shadow: true,
		exclude: func(p peer.ID) bool { return p == avoid || sv.otherSlotOn(i, p) }}
	if avoid != "" {
		sj.findWithin = replaceFind // service_restart.go
	}
	cctx, cancel := context.WithCancelCause(ctx)
	c := &svcContract{slot: i, sj: sj, cancel: cancel, done: make(chan struct{})}
	sv.slots[i] = append(sv.slots[i], c)
	sv.mu.Unlock()
	b.svc.mu.Lock()
	b.svc.byJob[sj.ID] = sv
	b.svc.mu.Unlock()
	b.log.Info("service contract starting", "service", sv.id, "slot", i, "job", sj.ID)
	go func() {
		defer close(c.done)
		defer cancel(nil)
		out, err := b.seek(cctx, sj, map[peer.ID]bool{}, b.cfg.MaxAttempts)
		sv.contractEnded(i, c, out, err)
	}()
	sv.changed()
	return c
}

// othersChoosing reports whether a slot other than i has a contract that
// has no seller yet.
func (sv *svcBuyer) othersChoosing(i int) bool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.b.mu.Lock()
	defer sv.b.mu.Unlock()
	for k, list := range sv.slots {
		for _, c := range list {
			if k != i && c.sj.Seller == "" && c.sj.State == JobSearching {
				return true
			}
		}
	}
	return false
}

// otherSlotOn reports whether a slot other than i runs a contract on p.
func (sv *svcBuyer) otherSlotOn(i int, p peer.ID) bool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.b.mu.Lock()
	defer sv.b.mu.Unlock()
	for k, list := range sv.slots {
		for _, c := range list {
			if k != i && c.sj.Seller == p && (c.sj.State == JobRunning || c.sj.State == JobSearching) {
				return true
			}
		}
	}
	return false
}

// paid is what the service's contracts paid, all of them.
func (sv *svcBuyer) paid() int64 {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	total := sv.paidDone
	sv.b.mu.Lock()
	defer sv.b.mu.Unlock()
	for _, list := range sv.slots {
		for _, c := range list {
			total += c.sj.Paid
		}
	}
	return total
}

func (sv *svcBuyer) snapshot() *ServiceStatus {
	svc := sv.j.Request.Service
	s := &ServiceStatus{Port: svc.Port, Health: svc.Health, Replicas: max(svc.Replicas, 1)}
	if s.Health == "" {
		s.Health = "tcp"
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	for _, l := range sv.listeners {
		s.Forwards = append(s.Forwards, l.Addr().String())
	}
	s.Contracts, s.Renewals, s.Replacements = sv.made, sv.renewals, sv.replaced
	sv.b.mu.Lock()
	defer sv.b.mu.Unlock()
	for i, list := range sv.slots {
		for _, c := range list {
			r := ServiceReplica{Slot: i, Seller: c.sj.Seller, ContractID: c.sj.ContractID, State: c.sj.State, Phase: c.sj.Phase, Paid: c.sj.Paid}
			r.Health = sv.health[r.ContractID]
			if r.Health.State == "" {
				r.Health.State = HealthStarting
			}
			s.Running = append(s.Running, r)
		}
	}
	return s
}

// pick chooses the replica for a new connection, and counts a stream
// open to it: the running, healthy
// contracts in turn, then running ones whose health is not known to be
// good (a check may be wrong), skipping those tried and those a forward
// failed on in the last few seconds.
func (sv *svcBuyer) pick(tried map[string]bool) (replica, bool) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	now := sv.b.clock.Now()
	var good, rest []replica
	sv.b.mu.Lock()
	for _, list := range sv.slots {
		for _, c := range list {
			id := c.sj.ContractID
			if c.sj.State != JobRunning || id == "" || tried[id] || c.draining || c.sj.Phase == PhaseResume {
				continue
			}
			if n := sv.counts[id]; n != nil && n.conns.ended() {
				continue // its run ended (forwardend.go)
			}
			r := replica{contract: id, seller: c.sj.Seller}
			if at, ok := sv.bad[id]; ok && now.Sub(at) < 5*time.Second {
				rest = append(rest, r)
				continue
			}
			if sv.health[id].State == HealthHealthy {
				r.healthy = true
				good = append(good, r)
			} else {
				rest = append(rest, r)
			}
		}
	}
	sv.b.mu.Unlock()
	for _, l := range [][]replica{good, rest} {
		if len(l) > 0 {
			sv.rr++
			r := l[sv.rr%len(l)]
			// Open from now, under sv.mu: drain, which marks a contract
			// draining under it too, sees every connection picked before.
			n := sv.counts[r.contract]
			if n == nil {
				n = &fwdCount{}
				sv.counts[r.contract] = n
			}
			n.streams.Add(1)
			return r, true
		}
	}
	return replica{}, false
}

// failed marks contract as refusing forwards, for a few seconds.
func (sv *svcBuyer) failed(contract string) {
	sv.mu.Lock()
	sv.bad[contract] = sv.b.clock.Now()
	sv.mu.Unlock()
}

func (sv *svcBuyer) counter(contract string) *fwdCount {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	n := sv.counts[contract]
	if n == nil {
		n = &fwdCount{}
		sv.counts[contract] = n
	}
	return n
}

// onHealth takes a service contract's jHealth frame.
func (r *buyerRun) onHealth(b []byte) error {
	h, err := unmarshalHealth(b)
	if err != nil {
		return sellerFault(err)
	}
	sv := r.b.serviceOfJob(r.j.ID)
	if sv == nil {
		return sellerFault(fmt.Errorf("%w: health of a contract that is not a service's", ErrMalformed))
	}
	sv.mu.Lock()
	sv.health[r.ct.ID] = h
	if h.State == HealthHealthy {
		delete(sv.bad, r.ct.ID)
	}
	sv.mu.Unlock()
	sv.changed()
	return nil
}

// billBytesOK checks a bill's byte counts against what the buyer counted:
// exactly for a job; for a service, its forwarded bytes within the bytes
// in flight of the forward streams that broke or were still open when the
// contract ended (forwardSlack each).
func (r *buyerRun) billBytesOK(bl Bill, received uint64) error {
	recv, sent, slack := r.counted(received)
	low := recv
	if r.resumed {
		// A seller that restarted lost count of the bytes forwarded
		// since its last record: fewer is its loss.
		low = received
	}
	switch {
	case bl.EgressBytes < low || bl.EgressBytes > recv+slack:
		return sellerFault(fmt.Errorf("%w: bill for %d bytes of egress, %d arrived", ErrInvalid, bl.EgressBytes, recv))
	case bl.IngressBytes > sent || bl.IngressBytes+slack < sent:
		return sellerFault(fmt.Errorf("%w: bill for %d bytes of image, inputs and forwards, %d were sent", ErrInvalid, bl.IngressBytes, sent))
	}
	return nil
}
