package contract

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// The seller's side of resumption (resume.go).

// canResume reports whether a job on a stream of proto waits for a buyer
// whose stream broke.
func (s *Seller) canResume(proto protocol.ID) bool {
	return resumes(proto) && s.cfg.RestartGrace > 0
}

// canDetach reports whether this seller's jobs can outlive it: its
// runner re-attaches them at the next start.
func (s *Seller) canDetach() bool {
	_, ok := s.cfg.Runner.(Reattacher)
	return ok && s.cfg.RestartGrace > 0
}

// resumable is the running contracts this start resumes.
func (s *Seller) resumable() (map[string]bool, error) {
	if !s.canDetach() {
		return map[string]bool{}, nil
	}
	return Resumable(s.cfg.Store, RoleSeller, s.cfg.RestartGrace, s.clock.Now())
}

// resumeJobs re-attaches the jobs of the contracts in keep (left running
// by the previous process) and bills them on; the runner's kept jobs of
// any other contract are removed.
func (s *Seller) resumeJobs(ctx context.Context, keep map[string]bool) {
	for id := range keep {
		l, err := s.resumeLive(id)
		if err != nil {
			s.log.Warn("resume job", "contract", id, "err", err)
			_, _ = s.machine.Move(RoleSeller, id, StateFailed, truncate("node restarted: "+err.Error(), 200), nil)
			delete(keep, id)
			continue
		}
		// Its worst case is reserved on its channel again before any new
		// contract is taken (Start sets the stream handlers after this).
		if rec, err := s.machine.Get(RoleSeller, id); err == nil {
			restoreCapacity(s.cfg.Payments, rec)
		}
		s.mu.Lock()
		s.live[id] = l
		s.mu.Unlock()
		s.handlers.Add(1)
		go func() {
			defer s.handlers.Done()
			s.log.Info("resuming a running job after a restart", "contract", id, "peer", l.buyer, "intervals", l.k, "paid_sats", l.paid)
			err := l.run(s.ctx, l.image)
			if errors.Is(err, errJobDetached) {
				return
			}
			if g, ok := s.cfg.Payments.(FundingGate); ok {
				g.Release(id) // what it did not spend is free again
			}
			if l.inputDir != "" {
				os.RemoveAll(l.inputDir)
			}
			if err == nil {
				return
			}
			s.log.Info("resumed job ended with an error", "contract", id, "peer", l.buyer, "err", err)
			if r, gerr := s.machine.Get(RoleSeller, id); gerr == nil && r.State == StateRunning {
				_, _ = s.machine.Move(RoleSeller, id, StateFailed, truncate(err.Error(), 200), func(r *Record) { r.Paid = max(r.Paid, l.paid) })
			}
			_ = dropResume(s.cfg.Store, RoleSeller, id)
		}()
	}
	if ra, ok := s.cfg.Runner.(Reattacher); ok {
		for _, id := range ra.Adopted(ctx) {
			if !keep[id] {
				if err := ra.Discard(ctx, id); err != nil {
					s.log.Warn("remove a job no contract resumes", "contract", id, "err", err)
				}
			}
		}
	}
}

// resumeLive rebuilds a running contract's live job from the store.
func (s *Seller) resumeLive(id string) (*liveJob, error) {
	rec, err := s.machine.Get(RoleSeller, id)
	if err != nil {
		return nil, err
	}
	rs, err := loadResume(s.cfg.Store, RoleSeller, id)
	if err != nil || rs == nil {
		return nil, fmt.Errorf("no resume state: %v", err)
	}
	ct, err := OpenContract(rec.Contract)
	if err != nil {
		return nil, err
	}
	j := &sellerJob{s: s, buyer: rec.Peer, ct: ct, id: id, paid: rec.Paid, egressPrice: rec.EgressPrice, rxBytes: rs.RxBytes,
		inputDir: rs.InputDir, fwOut: rs.FwOut, fwIn: rs.FwIn}
	l := newLiveJob(j, true)
	l.resumed, l.protocol, l.started, l.k, l.image = true, rs.Proto, rec.Started, max(rec.Intervals, 1), rs.Image
	return l, nil
}

// touchLive records that this process still runs its resumable jobs, and
// the bytes their services forwarded so far.
func (s *Seller) touchLive() {
	s.mu.Lock()
	var ids []string
	for id, l := range s.live {
		if l.resumable {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	fw := map[string]fwCounts{}
	for _, id := range ids {
		if sv := s.services.get(id); sv != nil {
			fw[id] = fwCounts{sv.out.Load(), sv.in.Load()}
		}
	}
	if err := touchResumeCounts(s.cfg.Store, RoleSeller, ids, s.clock.Now(), fw); err != nil {
		s.log.Warn("record running jobs", "err", err)
	}
}

// jobOver reports whether a contract in st has no job to resume: it ran
// and ended (completed, failed, settled…), or never will.
func jobOver(st State) bool { return st != StateProposed && !st.Holds() }

// serveResume joins a buyer's resumed stream to its running job and
// serves it until the job ends or the stream is replaced or breaks.
func (s *Seller) serveResume(c *conn, remote peer.ID, b []byte) (string, error) {
	r, err := unmarshalResume(b)
	if err != nil {
		return "", refuse(RefuseProtocol, err)
	}
	id := r.ContractID
	s.mu.Lock()
	l := s.live[id]
	s.mu.Unlock()
	switch {
	case l == nil:
		if rec, err := s.machine.Get(RoleSeller, id); err == nil && jobOver(rec.State) && rec.Proposal.Buyer == remote {
			return id, refuse(RefuseEnded, fmt.Errorf("contract %s has ended here: %s (%s)", id, rec.State, rec.Why))
		}
		// Maybe not yet: a seller starting resumes its jobs first.
		return id, refuse(RefuseContract, fmt.Errorf("contract %s has no running job here", id))
	case l.buyer != remote:
		return id, refuse(RefuseContract, fmt.Errorf("%w: contract %s is not %s's", ErrInvalid, id, remote))
	case !l.resumable:
		return id, refuse(RefuseContract, fmt.Errorf("contract %s cannot be resumed", id))
	}
	p := l.ct.Proposal
	_ = c.s.SetDeadline(time.Now().Add(p.Request.Duration + s.machine.timeouts.RunGrace + l.grace + time.Minute))
	a := &attachment{c: c, have: r.Have, over: make(chan struct{})}
	select {
	case l.attachC <- a:
	case <-l.done:
		if l.detached {
			return id, errJobDetached // this process stops; the next one resumes it
		}
		return id, refuse(RefuseEnded, fmt.Errorf("contract %s: the job has ended", id))
	case <-s.ctx.Done():
		return id, errJobDetached
	}
	s.log.Info("buyer resumed its job stream", "contract", id, "peer", remote, "have", r.Have)
	<-a.over
	if a.reset {
		return id, errJobDetached
	}
	return id, nil
}
