package contract

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A service survives its daemons' restarts (resume.go), as a job does:
//
//   - The seller resumes a service's contract like a job's: it re-attaches
//     the running container (or starts it again when it was between two
//     runs), and its restart policy, health reports and forwards go on
//     for the same contract (service.go). Health goes to the buyer's
//     stream of the moment, and a resumed stream is sent the last one.
//   - The buyer resumes a service contract whose stream broke, as a job's.
//     Meanwhile the contract is away (PhaseResume): the forward takes no
//     connection to it, and connections wait for a replica. If it stays
//     away awayReplace, the slot starts a replacement on another seller
//     (a seller that hangs keeps its connection, and would hold the slot
//     for the whole grace): the first of the two to serve keeps the slot,
//     the other is cancelled. A contract given up while away still tries
//     its seller until the grace ends, to tell it (the seller then stops
//     the job and bills it, instead of waiting out the grace unpaid).
//   - A buyer node that restarts runs again each service it left running
//     (its spec, counts and forward addresses are in the service's job
//     record): the contracts it can resume (within the grace) go on in
//     their slots, on the same sellers, and the forwards listen again on
//     the addresses they had. A slot without one starts a new contract.
//   - Both sides record a service contract's forwarded bytes with its
//     resume state every few seconds, and go on counting from there.

// awayReplace is how long a service contract's seller may be away before
// its slot starts a replacement. A restart takes a few seconds, and a
// replacement a few more to serve: the old contract, back by then, keeps
// the slot.
const awayReplace = 5 * time.Second

// replaceFind bounds a replacement's lookups of offers: the seller away
// may hang, and hold the DHT's query for its timeout (20 s).
const replaceFind = 5 * time.Second

// errReplaced cancels a contract whose seller was away and another took
// its slot.
var errReplaced = errors.New("replaced: its seller was away")

// away reports whether c's job stream is being resumed, and since when.
func (sv *svcBuyer) away(c *svcContract) (time.Time, bool) {
	sv.b.mu.Lock()
	defer sv.b.mu.Unlock()
	return c.sj.phaseAt, c.sj.Phase == PhaseResume
}

// up reports whether c runs, serves and is healthy.
func (sv *svcBuyer) up(c *svcContract) bool {
	sv.observe(c)
	if _, away := sv.away(c); away || c.runningAt.IsZero() {
		return false
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.health[c.contract].State == HealthHealthy
}

// abandon takes c, whose seller is away, out of slot i and cancels it: it
// goes on in the background until its seller is back (and is told) or the
// grace ends.
func (sv *svcBuyer) abandon(i int, c *svcContract, why error) {
	sv.mu.Lock()
	sv.slots[i] = slices.DeleteFunc(sv.slots[i], func(x *svcContract) bool { return x == c })
	sv.mu.Unlock()
	sv.b.log.Info("service contract given up while its seller is away", "service", sv.id, "slot", i, "contract", c.contract, "peer", c.sj.Seller, "why", why)
	c.cancel(why)
	sv.changed()
}

// replaceAway starts a replacement for cur, whose seller has been away
// awayReplace, on another seller, and returns the slot's contract: the
// replacement once it serves healthy (cur is given up), cur when it comes
// back first (the replacement is cancelled). false: no replacement came
// (try again later).
func (sv *svcBuyer) replaceAway(ctx context.Context, i int, cur *svcContract) (*svcContract, bool) {
	b := sv.b
	b.log.Info("service replica away: starting a replacement", "service", sv.id, "slot", i, "contract", cur.contract, "peer", cur.sj.Seller)
	next := sv.startAvoiding(ctx, i, cur.sj.Seller)
	for {
		select {
		case <-cur.done:
			return next, true // the old one ended: the new one is the slot's
		default:
		}
		if sv.up(next) {
			sv.mu.Lock()
			sv.replaced++
			sv.mu.Unlock()
			b.log.Info("service replica replaced", "service", sv.id, "slot", i, "old", cur.contract, "new", next.contract)
			sv.abandon(i, cur, errReplaced)
			return next, true
		}
		if _, away := sv.away(cur); !away {
			b.log.Info("service replica back", "service", sv.id, "slot", i, "contract", cur.contract, "peer", cur.sj.Seller)
			next.cancel(errors.New("not needed: the replica is back"))
			return cur, true
		}
		select {
		case <-ctx.Done():
			return cur, true
		case <-next.done:
			return cur, false
		case <-cur.done:
		case <-b.clock.After(slotPoll):
		}
	}
}

// contractEnded is the bookkeeping of a contract chain of slot i that
// ended.
func (sv *svcBuyer) contractEnded(i int, c *svcContract, out outcome, err error) {
	b := sv.b
	b.log.Info("service contract ended", "service", sv.id, "slot", i, "job", c.sj.ID, "outcome", out, "err", err)
	b.mu.Lock()
	paid := c.sj.Paid
	b.mu.Unlock()
	b.svc.mu.Lock()
	delete(b.svc.byJob, c.sj.ID)
	b.svc.mu.Unlock()
	sv.mu.Lock()
	sv.paidDone += paid
	sv.slots[i] = slices.DeleteFunc(sv.slots[i], func(x *svcContract) bool { return x == c })
	sv.mu.Unlock()
	sv.changed()
}

// restoreServices runs again the services a previous process left
// running, with their contracts that this start resumes.
func (b *Buyer) restoreServices(ctx context.Context, jobs []*JobStatus) {
	if len(jobs) == 0 {
		return
	}
	recs, err := b.machine.List(RoleBuyer)
	if err != nil {
		b.log.Warn("restore services", "err", err)
	}
	for _, j := range jobs {
		var mine []*Record
		for _, r := range recs {
			if r.State == StateRunning && strings.HasPrefix(r.Job, j.ID+"-") {
				mine = append(mine, r)
				restoreCapacity(b.cfg.Payer, r) // as resumeJobs
			}
		}
		b.log.Info("service runs again after a restart", "service", j.ID, "contracts", len(mine))
		j.phaseAt = b.clock.Now()
		b.track(ctx, j, func(jctx context.Context) { b.runService(jctx, j, mine) })
	}
}

// restore sets a service up again after a restart from prev, its status
// as the previous process recorded it: its counts, its forwards and the
// contracts in resumed. It returns each slot's contract (nil: none).
func (sv *svcBuyer) restore(ctx context.Context, prev *ServiceStatus, resumed []*Record) []*svcContract {
	b := sv.b
	var kept int64
	for _, r := range resumed {
		kept += r.Paid
	}
	sv.mu.Lock()
	sv.made, sv.renewals, sv.replaced = prev.Contracts, prev.Renewals, prev.Replacements
	b.mu.Lock()
	sv.paidDone = max(sv.j.Paid-kept, 0)
	b.mu.Unlock()
	sv.mu.Unlock()
	for _, addr := range prev.Forwards {
		if _, err := sv.forward(b, addr); err != nil {
			b.log.Warn("service forward not restored", "service", sv.id, "addr", addr, "err", err)
		}
	}
	curs := make([]*svcContract, len(sv.slots))
	// The newest contract of a slot keeps it; an older one (a renewal
	// was under way) is cancelled once back.
	slices.SortFunc(resumed, func(a, b *Record) int { return a.Started.Compare(b.Started) })
	for _, r := range resumed {
		i, n, ok := slotOf(sv.id, r.Job)
		if !ok || i >= len(sv.slots) {
			b.log.Warn("service contract of no slot", "service", sv.id, "contract", r.ID, "job", r.Job)
			continue
		}
		sv.mu.Lock()
		sv.made = max(sv.made, n)
		sv.mu.Unlock()
		c := sv.resumeContract(ctx, i, r)
		if old := curs[i]; old != nil {
			old.cancel(errRenewed)
		}
		curs[i] = c
	}
	return curs
}

// slotOf parses a service contract's job ID: service-slot-n.
func slotOf(service, job string) (slot, n int, ok bool) {
	rest, ok := strings.CutPrefix(job, service+"-")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	slot, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	return slot, n, err1 == nil && err2 == nil && slot >= 0 && n >= 0
}

// resumeContract goes on with running contract r of slot i after a
// restart: its stream is resumed (away until then), its seller paid on.
func (sv *svcBuyer) resumeContract(ctx context.Context, i int, r *Record) *svcContract {
	b := sv.b
	now := b.clock.Now()
	sj := &JobStatus{ID: r.Job, Request: serviceContractRequest(sv.j.Request), State: JobRunning, Phase: PhaseResume, Created: r.Started,
		Updated: now, Seller: r.Peer, ContractID: r.ID, Paid: r.Paid, shadow: true, phaseAt: now,
		Attempts: []Attempt{{Seller: r.Peer, ContractID: r.ID, State: StateRunning, Paid: r.Paid}},
		exclude:  func(p peer.ID) bool { return sv.otherSlotOn(i, p) }}
	cctx, cancel := context.WithCancelCause(ctx)
	c := &svcContract{slot: i, sj: sj, cancel: cancel, done: make(chan struct{}), contract: r.ID, runningAt: r.Started} // renewal counts from its start
	if c.runningAt.IsZero() {
		c.runningAt = now
	}
	if rs, err := loadResume(b.cfg.Store, RoleBuyer, r.ID); err == nil && rs != nil {
		n := sv.counter(r.ID)
		n.out.Store(rs.FwOut)
		n.in.Store(rs.FwIn)
		n.broken.Add(1) // the streams open at the restart broke
	}
	sv.mu.Lock()
	sv.slots[i] = append(sv.slots[i], c)
	sv.mu.Unlock()
	b.svc.mu.Lock()
	b.svc.byJob[sj.ID] = sv
	b.svc.mu.Unlock()
	b.log.Info("service contract resuming", "service", sv.id, "slot", i, "job", sj.ID, "contract", r.ID, "peer", r.Peer)
	go func() {
		defer close(c.done)
		defer cancel(nil)
		out, err := b.resumeAttempt(cctx, sj)
		sv.contractEnded(i, c, out, err)
	}()
	sv.changed()
	return c
}

// serviceCounts are the bytes each running service contract's forwards
// moved so far (recorded with its resume state).
func (b *Buyer) serviceCounts() map[string]fwCounts {
	b.svc.mu.Lock()
	svs := make([]*svcBuyer, 0, len(b.svc.byID))
	for _, sv := range b.svc.byID {
		svs = append(svs, sv)
	}
	b.svc.mu.Unlock()
	out := map[string]fwCounts{}
	for _, sv := range svs {
		sv.mu.Lock()
		for id, n := range sv.counts {
			out[id] = fwCounts{n.out.Load(), n.in.Load()}
		}
		sv.mu.Unlock()
	}
	return out
}
