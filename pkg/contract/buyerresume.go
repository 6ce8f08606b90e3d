package contract

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// The buyer's side of resumption (resume.go): a broken 1.4.0 job stream
// is redialled for up to RestartGrace, and a restart resumes the running
// jobs from the store.

// errBuyerStopping is the cause a buyer's runs are cancelled with at Close:
// a resumable run detaches (outDetached), the others stop as cancelled.
var errBuyerStopping = errors.New("buyer closing")

// resumableRun reports whether r's stream may be resumed.
func (r *buyerRun) resumableRun() bool {
	return r.b.cfg.RestartGrace > 0 && r.st != nil && resumes(r.st.Protocol())
}

// saveResume keeps what a restart needs to resume r.
func (r *buyerRun) saveResume() {
	if !r.resumableRun() {
		return
	}
	r.rememberAddrs()
	rs := resumeState{Proto: r.st.Protocol(), Alive: r.b.clock.Now(), SentBytes: r.sentBytes,
		EgressPrice: r.egressPrice, Base: r.base, Limited: r.limited, Addrs: r.addrs}
	if err := saveResume(r.b.cfg.Store, RoleBuyer, r.ct.ID, rs); err != nil {
		r.b.log.Warn("save resume state", "contract", r.ct.ID, "err", err)
		return
	}
	r.b.mu.Lock()
	r.b.resuming[r.ct.ID] = true
	r.b.mu.Unlock()
}

// rememberAddrs keeps where the seller is reached: a seller that stops may
// tell the buyer (identify) it has no addresses left as its listeners
// close, and a restarted buyer has none.
func (r *buyerRun) rememberAddrs() {
	seen := map[string]bool{}
	for _, a := range r.addrs {
		seen[a] = true
	}
	add := func(a ma.Multiaddr) {
		if a != nil && !seen[a.String()] {
			seen[a.String()] = true
			r.addrs = append(r.addrs, a.String())
		}
	}
	if r.st != nil {
		add(r.st.Conn().RemoteMultiaddr())
	}
	for _, a := range r.b.cfg.Host.Peerstore().Addrs(r.seller) {
		add(a)
	}
}

// restoreAddrs gives the peerstore the seller's remembered addresses.
func (r *buyerRun) restoreAddrs() {
	var addrs []ma.Multiaddr
	for _, s := range r.addrs {
		if a, err := ma.NewMultiaddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	r.b.cfg.Host.Peerstore().AddAddrs(r.seller, addrs, 10*time.Minute)
}

// dropResume forgets r's resume state: its run is over.
func (r *buyerRun) dropResume() {
	r.b.mu.Lock()
	had := r.b.resuming[r.ct.ID]
	delete(r.b.resuming, r.ct.ID)
	r.b.mu.Unlock()
	if had {
		_ = dropResume(r.b.cfg.Store, RoleBuyer, r.ct.ID)
	}
}

// openResults opens the contract's result files: created empty, or for a
// resumed run kept, their bytes hashed and counted, to be appended to.
func (r *buyerRun) openResults(resume bool) (string, map[byte]*resultFile, error) {
	dir := filepath.Join(r.b.cfg.ResultDir, r.ct.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, buyerFault(fmt.Errorf("result dir: %w", err))
	}
	files := map[byte]*resultFile{}
	for typ, name := range map[byte]string{jStdout: OutputStdout, jStderr: OutputStderr, jOutput: OutputTar} {
		flags := os.O_CREATE | os.O_RDWR | os.O_TRUNC
		if resume {
			flags = os.O_CREATE | os.O_RDWR
		}
		f, err := os.OpenFile(filepath.Join(dir, name), flags, 0o600)
		if err != nil {
			closeResults(files)
			return "", nil, buyerFault(fmt.Errorf("result file: %w", err))
		}
		rf := &resultFile{f: f, h: sha256.New()}
		files[typ] = rf
		if resume {
			n, err := io.Copy(rf.h, f)
			if err != nil {
				closeResults(files)
				return "", nil, buyerFault(fmt.Errorf("result file: %w", err))
			}
			rf.n = n
		}
	}
	return dir, files, nil
}

func closeResults(files map[byte]*resultFile) {
	for _, rf := range files {
		rf.f.Close()
	}
}

func (r *buyerRun) loop(ctx context.Context) (outcome, error) {
	dir, files, err := r.openResults(false)
	if err != nil {
		return outFailed, err
	}
	defer closeResults(files)
	// Logs land here as they come, so `blackbox job` can show them live.
	r.b.update(r.j, func(j *JobStatus) { j.ResultDir = dir })
	return r.follow(ctx, dir, files)
}

type jobFrame struct {
	t   byte
	b   []byte
	err error
}

// reader reads the current stream's frames into a channel until stop.
func (r *buyerRun) reader() (<-chan jobFrame, func()) {
	frames := make(chan jobFrame, 8)
	stop := make(chan struct{})
	c := r.c
	go func() {
		defer close(frames)
		for {
			t, b, err := c.recv(max(chunkSize, MaxReceiptSize))
			select {
			case frames <- jobFrame{t, b, err}:
			case <-stop: // the contract is over, or a new stream took over
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var stopped bool
	return frames, func() {
		if !stopped {
			stopped = true
			close(stop)
		}
	}
}

// follow pays and collects a running job to its receipt, resuming a
// broken 1.4.0 stream within the grace.
func (r *buyerRun) follow(ctx context.Context, dir string, files map[byte]*resultFile) (outcome, error) {
	b, p := r.b, r.ct.Proposal
	detached := false
	defer func() {
		if !detached {
			r.dropResume()
		}
	}()
	frames, stopReader := r.reader()
	defer func() { stopReader() }()
	var extra []network.Stream // resumed streams, closed at the end
	defer func() {
		for _, st := range extra {
			st.Scope().ReleaseMemory(jobMemory)
			st.Close()
		}
	}()
	interval := p.Interval
	grace := b.cfg.HeartbeatGrace
	if grace <= 0 {
		grace = interval / 2
	}
	total := p.Intervals()
	watchdog := b.clock.After(interval + grace)
	cancelled := false
	done := ctx.Done()
	// resume redials a broken stream; true when the job goes on.
	resume := func(why error) bool {
		if !r.resumableRun() {
			return false
		}
		// A service's contract is away meanwhile (PhaseResume): its
		// forward takes no connection to it, and its slot starts a
		// replacement if it stays away (service_buyer.go). A user's
		// cancel, or the slot's, reaches a seller that comes back.
		svc := r.b.serviceOfJob(r.j.ID) != nil
		if svc {
			b.update(r.j, func(j *JobStatus) { j.Phase = PhaseResume })
		}
		stopReader()
		r.st.Reset()
		b.log.Info("job stream broke; resuming", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "why", why)
		at := b.clock.Now()
		st, err := r.reconnect(context.WithoutCancel(ctx), files)
		if err != nil {
			b.log.Info("job stream not resumed", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "err", err)
			return false
		}
		if svc {
			b.update(r.j, func(j *JobStatus) { j.Phase = PhaseRun })
		}
		extra = append(extra, st)
		b.log.Info("job stream resumed", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "away", b.clock.Now().Sub(at).Round(time.Millisecond))
		frames, stopReader = r.reader()
		watchdog = b.clock.After(interval + grace + b.cfg.RestartGrace)
		if cancelled {
			_ = r.c.send(jCancel, nil)
		}
		return true
	}
	for {
		select {
		case <-done:
			if errors.Is(context.Cause(ctx), errBuyerStopping) && r.resumableRun() {
				// The node stops (an upgrade): the job runs on, and
				// the next start resumes it within the grace.
				detached = true
				b.log.Info("job left running for the next start", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller)
				return outDetached, errBuyerStopping
			}
			done = nil
			cancelled = true
			_ = r.c.send(jCancel, nil)
		case <-watchdog:
			err := fmt.Errorf("seller %s missed a heartbeat", r.seller)
			if resume(err) {
				continue
			}
			return outFailed, sellerGone(fmt.Errorf("%w: payments stopped", err))
		case f, ok := <-frames:
			if !ok || f.err != nil {
				err := fmt.Errorf("seller %s: stream broke: %v", r.seller, f.err)
				if resume(err) {
					continue
				}
				return outFailed, sellerGone(err)
			}
			switch f.t {
			case jBeat:
				n, tally, err := parseBeat(f.b)
				if err != nil {
					return outFailed, sellerFault(err)
				}
				watchdog = b.clock.After(interval + grace)
				b.update(r.j, func(j *JobStatus) { j.Intervals = n })
				if !cancelled && n < total {
					if err := r.payBeat(ctx, n, tally, received(files)); err != nil {
						if done != nil && ctx.Err() != nil {
							// The cancel (or the node's stop) came
							// as it paid: the done case tells the
							// seller, and the receipt still comes.
							continue
						}
						if FaultOf(err) == FaultSellerGone && resume(err) {
							continue
						}
						return outFailed, err
					}
				}
			case jAck, jResumed:
			case jStdout, jStderr, jOutput:
				rf := files[f.t]
				if rf.n+int64(len(f.b)) > b.cfg.MaxOutputBytes {
					// The seller keeps to its own cap; this one is the
					// buyer's.
					return outFailed, buyerFault(fmt.Errorf("%w: output exceeds %d bytes", ErrTooLarge, b.cfg.MaxOutputBytes))
				}
				rf.n += int64(len(f.b))
				rf.h.Write(f.b)
				if _, err := rf.f.Write(f.b); err != nil {
					return outFailed, buyerFault(fmt.Errorf("write result: %w", err))
				}
			case jBill:
				if err := r.payBill(ctx, f.b, received(files), r.j.Intervals); err != nil {
					if FaultOf(err) == FaultSellerGone && resume(err) {
						continue
					}
					return outFailed, err
				}
				// The job is over: no more heartbeats, the receipt comes
				// once the seller has the payment (or has waited for it).
				watchdog = b.clock.After(b.machine.timeouts.Settle)
			case jHealth:
				if err := r.onHealth(f.b); err != nil {
					return outFailed, err
				}
			case jReceipt:
				b.enter(r.j, PhaseResults)
				return r.finish(dir, f.b, files, cancelled)
			case frameError:
				je := UnmarshalJobError(f.b)
				return outFailed, withFault(je.Reason.Fault(), fmt.Errorf("seller %s: %w", r.seller, je))
			default:
				return outFailed, sellerFault(fmt.Errorf("%w: frame %d", ErrMalformed, f.t))
			}
		}
	}
}

// resumeRetry is the wait between two dials of a seller that is away.
const resumeRetry = time.Second

// reconnect dials the seller again, for up to RestartGrace, with a 1.4.0
// stream that resumes the contract from the bytes the buyer holds, and
// makes it r's stream.
func (r *buyerRun) reconnect(ctx context.Context, files map[byte]*resultFile) (network.Stream, error) {
	b, p := r.b, r.ct.Proposal
	deadline := b.clock.Now().Add(b.cfg.RestartGrace)
	msg := Resume{ContractID: r.ct.ID}
	for i, typ := range []byte{jStdout, jStderr, jOutput} {
		msg.Have[i] = uint64(files[typ].n)
	}
	var last error
	r.rememberAddrs()
	for b.clock.Now().Before(deadline) {
		r.restoreAddrs()
		c, err := r.dialResume(ctx, msg, p)
		if err == nil {
			r.st, r.c, r.resumed = c.s, c, true
			// The last payment may have been lost with the old stream:
			// it goes again (the seller takes a resend it holds).
			if r.paid > 0 {
				if u, err := b.cfg.Payer.Pay(ctx, r.seller, r.ct.ID, r.paid); err == nil {
					_ = c.send(jPay, u)
				}
			}
			return c.s, nil
		}
		// A refusal too is tried again until the grace ends (a seller
		// that is stopping, or starting, may not hold the job yet), but
		// for a job that has ended there.
		if je := (*JobError)(nil); errors.As(err, &je) && je.Reason == RefuseEnded {
			return nil, fmt.Errorf("seller %s: %w", r.seller, err)
		}
		last = err
		select {
		case <-b.clock.After(resumeRetry):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("seller %s not back within %s: %w", r.seller, b.cfg.RestartGrace, last)
}

// dialResume opens one resumed stream and reads the seller's answer.
func (r *buyerRun) dialResume(ctx context.Context, msg Resume, p *Proposal) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if r.limited {
		dctx = network.WithAllowLimitedConn(dctx, "blackbox job: the relay's limits fit the contract")
	} else {
		// A seller restarting refused the last dials: they must not hold
		// this one back (the swarm's dial backoff is 5 s and more).
		dctx = network.WithForceDirectDial(dctx, "blackbox job: resume")
	}
	st, err := r.b.cfg.Host.NewStream(dctx, r.seller, JobProtocol)
	if err != nil {
		return nil, err
	}
	if err := setupStream(st, jobMemory, time.Now().Add(p.Request.Duration+r.b.machine.timeouts.RunGrace+time.Minute)); err != nil {
		st.Reset()
		return nil, err
	}
	c := newConn(st)
	fail := func(err error) (*conn, error) {
		st.Scope().ReleaseMemory(jobMemory)
		st.Reset()
		return nil, err
	}
	if err := c.send(jResume, marshalResume(msg)); err != nil {
		return fail(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	t, b, err := c.recv(maxCtlFrame)
	_ = st.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
		return fail(err)
	case t == frameError:
		return fail(UnmarshalJobError(b))
	case t != jResumed:
		return fail(fmt.Errorf("%w: frame %d, want resumed", ErrMalformed, t))
	}
	return c, nil
}

// resumable is the running contracts this start resumes.
func (b *Buyer) resumable() (map[string]bool, error) {
	return Resumable(b.cfg.Store, RoleBuyer, b.cfg.RestartGrace, b.clock.Now())
}

// resumeJobs goes on with the jobs whose contracts a restart resumes: it
// reconnects to their sellers, pays on and collects their results.
func (b *Buyer) resumeJobs(ctx context.Context, jobs []*JobStatus) {
	if b.cfg.RestartGrace > 0 {
		go b.touchLoop(ctx)
	}
	for _, j := range jobs {
		// Its worst case is reserved on its channel again before Start
		// returns, so no new contract takes the room it still needs.
		if rec, err := b.machine.Get(RoleBuyer, j.ContractID); err == nil {
			restoreCapacity(b.cfg.Payer, rec)
		}
		j.phaseAt = b.clock.Now()
		b.track(ctx, j, func(jctx context.Context) { b.resumeJob(jctx, j) })
	}
}

// touchLoop records, every few seconds, that this node still runs its
// resumable jobs (the restart grace counts from it).
func (b *Buyer) touchLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.clock.After(5 * time.Second):
		}
		b.mu.Lock()
		var ids []string
		for id := range b.resuming {
			ids = append(ids, id)
		}
		b.mu.Unlock()
		if err := touchResumeCounts(b.cfg.Store, RoleBuyer, ids, b.clock.Now(), b.serviceCounts()); err != nil {
			b.log.Warn("record running jobs", "err", err)
		}
	}
}

// resumeJob resumes job j's running contract after a restart and sees the
// job through: another seller is tried if this one does not come back.
func (b *Buyer) resumeJob(ctx context.Context, j *JobStatus) {
	out, err := b.resumeAttempt(ctx, j)
	if out == outFailed && FaultOf(err) != FaultBuyer && ctx.Err() == nil {
		tried := map[peer.ID]bool{}
		for _, a := range j.Attempts {
			tried[a.Seller] = true
		}
		if left := b.cfg.MaxAttempts - len(j.Attempts); left > 0 {
			out, err = b.seek(ctx, j, tried, left)
		}
	}
	switch {
	case out == outDetached:
	case out == outDone:
		b.update(j, func(j *JobStatus) { j.State, j.Phase = JobDone, "" })
		b.maybeSpotCheck(j)
	case out == outCancelled || context.Cause(ctx) == errCancelled:
		b.update(j, func(j *JobStatus) { j.State, j.Phase, j.Error = JobCancelled, "", "cancelled" })
	default:
		b.update(j, func(j *JobStatus) { j.State, j.Phase, j.Error = JobFailed, "", errString(err) })
	}
}

// resumeAttempt is attempt's second half for a contract running when the
// node restarted: reconnect, pay on, collect the results.
func (b *Buyer) resumeAttempt(ctx context.Context, j *JobStatus) (outcome, error) {
	id := j.ContractID
	rec, err := b.machine.Get(RoleBuyer, id)
	if err != nil {
		return outFailed, buyerFault(err)
	}
	rs, err := loadResume(b.cfg.Store, RoleBuyer, id)
	if err != nil || rs == nil {
		return outFailed, buyerFault(fmt.Errorf("resume contract %s: no resume state (%v)", id, err))
	}
	ct, err := OpenContract(rec.Contract)
	if err != nil {
		return outFailed, buyerFault(err)
	}
	run := &buyerRun{b: b, j: j, ct: ct, seller: ct.Proposal.Seller, paid: rec.Paid, base: rs.Base, limited: rs.Limited,
		egressMax: rs.EgressPrice, egressPrice: rs.EgressPrice, sentBytes: rs.SentBytes, addrs: rs.Addrs}
	b.mu.Lock()
	b.resuming[id] = true
	b.mu.Unlock()
	b.log.Info("resuming a running job after a restart", "job", j.ID, "contract", id, "peer", run.seller, "paid_sats", rec.Paid)
	dir, files, err := run.openResults(true)
	var out outcome
	if err == nil {
		defer closeResults(files)
		var st network.Stream
		if st, err = run.reconnect(ctx, files); err == nil {
			defer func() {
				st.Scope().ReleaseMemory(jobMemory)
				st.Close()
			}()
			b.update(j, func(j *JobStatus) { j.Phase = "run" })
			out, err = run.follow(ctx, dir, files)
		} else {
			run.dropResume()
			out, err = outFailed, sellerGone(err)
		}
	} else {
		run.dropResume()
		out = outFailed
	}
	if cp, ok := b.cfg.Payer.(ContractPayer); ok && out != outDetached {
		// What the contract did not spend is free for the next.
		cp.Release(run.seller, id)
	}
	out, fault, state := b.endRun(ctx, run, id, out, err)
	b.update(j, func(j *JobStatus) {
		if n := len(j.Attempts); n > 0 && j.Attempts[n-1].ContractID == id {
			a := &j.Attempts[n-1]
			a.State, a.Paid, a.Why, a.Fault = state, run.paid, errString(err), fault
		}
		j.Paid = run.base + run.paid
	})
	if out != outDetached {
		b.cfg.Reputation.Outcome(run.seller, id, fault)
	}
	return out, err
}
