package contract

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// liveJob is the seller's running contract: the job, its billing, and
// the buyer's stream, which in 1.4.0 may break and come back (resume.go).
// One goroutine (run) owns the billing state and the current attachment;
// the outputs' writers are fed by the runner's goroutines.
type liveJob struct {
	*sellerJob
	resumable bool
	grace     time.Duration // RestartGrace (resumable only)
	resumed   bool          // re-attached after a restart
	protocol  protocol.ID   // the job stream's
	started   time.Time     // the contract's first interval began
	k         uint64        // intervals paid for and started
	tally     tallies       // what the beats asked for the bytes moved (tally.go)
	outs      [3]*spoolWriter
	attachC   chan *attachment
	in        chan inFrame
	done      chan struct{}
	cur       *attachment // the buyer's stream; nil while it is away
	gen       int
	lostAt    time.Time
	detached  bool   // the job was left running for the next start
	image     string // a resumed job's image (a service runs it again)
	// sc is the buyer's stream now, as other goroutines (a service's
	// health reports) read it: run sets it with cur.
	smu sync.Mutex
	sc  *conn
}

// stream is the buyer's stream now; nil while it is away.
func (l *liveJob) stream() *conn {
	l.smu.Lock()
	defer l.smu.Unlock()
	return l.sc
}

func (l *liveJob) setStream(c *conn) {
	l.smu.Lock()
	l.sc = c
	l.smu.Unlock()
}

// attachment is one buyer stream of a live job.
type attachment struct {
	c        *conn
	gen      int
	have     [3]uint64 // bytes of each output the buyer holds
	over     chan struct{}
	overOnce sync.Once
	reset    bool
}

// end ends the attachment: its stream's handler returns (closing the
// stream), or with reset the stream is reset (a stream that broke or was
// replaced: the buyer comes back on a new one).
func (a *attachment) end(reset bool) {
	a.overOnce.Do(func() {
		a.reset = reset
		if reset {
			a.c.s.Reset()
		}
		close(a.over)
	})
}

type inFrame struct {
	gen int
	t   byte
	b   []byte
	err error
}

func newLiveJob(j *sellerJob, resumable bool) *liveJob {
	l := &liveJob{sellerJob: j, resumable: resumable, grace: j.s.cfg.RestartGrace,
		attachC: make(chan *attachment), in: make(chan inFrame, 4), done: make(chan struct{})}
	for i, typ := range []byte{jStdout, jStderr, jOutput} {
		l.outs[i] = &spoolWriter{typ: typ, h: sha256.New(), cap: j.s.cfg.MaxOutputBytes}
	}
	return l
}

// openSpools gives each output a spool file (resumable jobs).
func (l *liveJob) openSpools() error {
	for i, w := range l.outs {
		f, err := os.OpenFile(l.spoolPath(i), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
		if err != nil {
			l.closeSpools(true)
			return fmt.Errorf("output spool: %w", err)
		}
		w.f = f
	}
	return nil
}

func (l *liveJob) spoolPath(i int) string {
	return filepath.Join(l.s.cfg.WorkDir, fmt.Sprintf("spool-%s-%d", l.id, i))
}

func (l *liveJob) closeSpools(remove bool) {
	for i, w := range l.outs {
		w.mu.Lock()
		if w.f != nil {
			w.f.Close()
			w.f = nil
		}
		w.mu.Unlock()
		if remove {
			os.Remove(l.spoolPath(i))
		}
	}
}

// attach makes a the buyer's stream: a resumed one is told what the
// seller holds, then every output gets what the buyer lacks.
func (l *liveJob) attach(a *attachment, resumed bool) {
	if l.cur != nil {
		l.cur.end(true)
	}
	l.gen++
	a.gen, l.cur, l.c = l.gen, a, a.c
	l.setStream(a.c)
	a.c.reading.Go(func() {
		for {
			t, b, err := a.c.recv(maxCtlFrame)
			select {
			case l.in <- inFrame{a.gen, t, b, err}:
			case <-l.done:
				return
			case <-a.over:
				return
			}
			if err != nil {
				return
			}
		}
	})
	if resumed {
		_ = a.c.send(jResumed, binary.AppendUvarint(nil, uint64(l.paid)))
		if sv := l.s.services.get(l.id); sv != nil {
			// Not on this goroutine: a health report may hold sv's lock
			// while it sends on the stream being replaced.
			go sv.resend(a.c)
		}
	}
	for i, w := range l.outs {
		w.attach(a.c, a.have[i])
	}
}

// lose drops the buyer's stream, which broke.
func (l *liveJob) lose() {
	if l.cur == nil {
		return
	}
	l.cur.end(true)
	l.cur, l.c = nil, nil
	l.setStream(nil)
	l.lostAt = l.s.clock.Now()
	for _, w := range l.outs {
		w.attach(nil, 0)
	}
	l.s.log.Info("buyer's job stream lost", "contract", l.id, "peer", l.buyer, "resumable", l.resumable)
}

// awaitBuyer waits, while no stream is attached, until a buyer's resumed
// stream comes (true) or until: false.
func (l *liveJob) awaitBuyer(ctx context.Context, until time.Time) bool {
	for l.cur == nil {
		if !l.resumable {
			return false
		}
		wait := until.Sub(l.s.clock.Now())
		if wait <= 0 {
			return false
		}
		select {
		case a := <-l.attachC:
			l.attach(a, true)
		case <-l.s.clock.After(wait):
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// lostGraceEnd is when a buyer away from a resumable job must be back.
func (l *liveJob) lostGraceEnd() time.Time { return l.lostAt.Add(l.grace) }

// run runs (resumed: re-attaches) the job and bills it to its end, then
// sends bill and receipt. It returns errJobDetached when the job was left
// running for the next start.
func (l *liveJob) run(ctx context.Context, image string) error {
	s, p := l.s, l.ct.Proposal
	jobCtx, stopJob := context.WithCancelCause(ctx)
	defer stopJob(nil)
	defer close(l.done)
	s.mu.Lock()
	s.running[l.id] = stopJob
	s.live[l.id] = l
	s.mu.Unlock()
	detached := false
	defer func() {
		l.detached = detached // read after done is closed
		if detached {
			s.touchLive() // a service's forwarded bytes, for the next start
		}
		s.mu.Lock()
		delete(s.running, l.id)
		delete(s.live, l.id)
		s.mu.Unlock()
		s.services.remove(l.id)
		if l.cur != nil {
			l.cur.end(detached)
		}
		if l.resumable {
			l.closeSpools(!detached)
			if !detached {
				if err := dropResume(s.cfg.Store, RoleSeller, l.id); err != nil {
					s.log.Warn("drop resume state", "contract", l.id, "err", err)
				}
			}
		}
	}()
	if l.resumable {
		if err := l.openSpools(); err != nil {
			return err
		}
		if !l.resumed {
			// The inputs stay for the job left running (the next start
			// removes them when it ends).
			rs := resumeState{Proto: l.protocol, Alive: s.clock.Now(), RxBytes: l.rxBytes, InputDir: l.inputDir}
			if p.Request.Service != nil {
				rs.Image = image
			}
			if err := saveResume(s.cfg.Store, RoleSeller, l.id, rs); err != nil {
				return err
			}
		}
	}
	spec := RunSpec{ContractID: l.id, Image: image, Args: p.Request.Command, Env: p.Request.Env, InputDir: l.inputDir,
		Runtime: p.Request.Runtime, Resources: p.Request.Resources, WallClock: p.Request.Duration,
		Stdout: l.outs[0], Stderr: l.outs[1], Output: l.outs[2]}
	type runDone struct {
		res *RunResult
		err error
	}
	done := make(chan runDone, 1)
	// The buyer's stream first: what the job writes at once goes to it.
	if l.c != nil {
		l.attach(&attachment{c: l.c, over: make(chan struct{})}, false)
	} else {
		l.lostAt = s.clock.Now() // a restart: the buyer has the grace to come back
	}
	if l.resumed {
		// A service runs again within the contract's own end.
		spec.WallClock = max(l.started.Add(p.Request.Duration).Sub(s.clock.Now()), time.Second)
	}
	go func() {
		at := s.clock.Now()
		res, err := l.runSpec(jobCtx, spec, l.stream, l.resumed)
		s.ran(s.clock.Now().Sub(at), res)
		done <- runDone{res, err}
	}()
	now := s.clock.Now()
	interval, total, grace := p.Interval, p.Intervals(), l.payGrace()
	// started is how many intervals have begun at t (at most total).
	started := func(t time.Time) uint64 {
		if t.Before(l.started) {
			return 1
		}
		return min(uint64(t.Sub(l.started)/interval)+1, total)
	}
	delivered := started(now) - 1 // intervals over (the next tick ends one more)
	want := started(now)
	tick := s.clock.After(l.started.Add(time.Duration(delivered+1) * interval).Sub(now))
	var due <-chan time.Time
	catchUp := func() {
		for l.k < want && l.paid >= l.owes(l.k+1) {
			l.k++
		}
		l.tally.drop(l.k)
		if l.k >= want {
			due = nil
		}
	}
	catchUp()
	if l.k < want {
		due = s.clock.After(l.grace) // a restart: the buyer pays when back
	}
	// ask sends the beat asking for the interval after the last one paid
	// (a buyer behind is asked for one more at a time; one back from
	// away, for all at once, when it attaches).
	ask := func() {
		if l.cur != nil {
			_ = l.c.send(jBeat, l.beat(min(delivered, l.k)))
		}
	}
	var why string
	var rd runDone
loop:
	for {
		select {
		case rd = <-done:
			break loop
		case a := <-l.attachC:
			l.attach(a, true)
			if delivered > 0 {
				_ = a.c.send(jBeat, binary.AppendUvarint(nil, delivered))
			}
			if due != nil {
				due = s.clock.After(grace) // a fresh grace to pay, now it is back
			}
		case f := <-l.in:
			if f.gen != l.gen {
				continue // an earlier stream's
			}
			if f.err != nil {
				l.lose()
				continue
			}
			switch f.t {
			case jPay:
				if err := l.acceptPay(ctx, f.b); err != nil {
					s.log.Info("payment refused", "contract", l.id, "peer", l.buyer, "err", err)
					continue
				}
				before := l.k
				catchUp()
				if l.k > before && l.k < want && why == "" {
					// A buyer catching up (back from away, its
					// payments behind) is asked for the next interval
					// as soon as it paid one, not at the next tick:
					// the grace is shorter than an interval.
					ask()
				}
				if err := s.machine.NotePaid(RoleSeller, l.id, l.paid, l.k); err != nil {
					s.log.Warn("record payment", "contract", l.id, "err", err)
				}
			case jCancel:
				why = "cancelled"
				stopJob(errors.New("cancelled by the buyer"))
			}
		case <-tick:
			// Interval delivered+1 is over. Ask for the next, due within
			// the grace; unless the job is being stopped (a cancel, its
			// time up): however long the sandbox takes, no interval
			// after that is asked for, and the beats go on so the buyer
			// waits for the receipt.
			delivered++
			stopping := why != ""
			if !stopping {
				want = min(delivered+1, total)
				catchUp()
			}
			ask()
			tick = s.clock.After(l.started.Add(time.Duration(delivered+1) * interval).Sub(s.clock.Now()))
			if stopping {
				continue
			}
			if delivered >= total {
				// Every interval of the contract is over; the runner's
				// wall clock should have ended the job already.
				why = "timeout"
				stopJob(errors.New("contract duration over"))
			}
			if l.k < want && due == nil {
				due = s.clock.After(grace)
			}
		case <-due:
			if why != "" {
				// The job is already being stopped (the buyer's
				// cancel): the stop keeps its reason, and the interval
				// stays owed (due set) as far as it was paid.
				continue
			}
			due = nil
			if l.k >= want {
				continue
			}
			if l.resumable && l.cur == nil {
				if left := l.lostGraceEnd().Sub(s.clock.Now()); left > 0 {
					due = s.clock.After(left) // the buyer may be restarting
					continue
				}
			}
			why = "unpaid"
			s.log.Info("payment missed, stopping the job", "contract", l.id, "peer", l.buyer, "interval", l.k+1)
			stopJob(errors.New("payment missed"))
		}
	}
	if errors.Is(rd.err, ErrDetached) {
		detached = true
		s.log.Info("job left running for the next start", "contract", l.id, "peer", l.buyer)
		return errJobDetached
	}
	if rd.err != nil {
		return fmt.Errorf("run job: %w", rd.err)
	}
	owedTo := l.k
	if due != nil {
		owedTo = max(want, l.k)
	}
	return l.finish(ctx, rd.res, why, owedTo)
}

// acceptPay takes a payment update from the buyer's current stream.
func (l *liveJob) acceptPay(ctx context.Context, b []byte) error {
	total, err := l.s.cfg.Payments.AcceptUpdate(ctx, l.buyer, l.id, b)
	if err != nil {
		return fmt.Errorf("accept payment: %w", err)
	}
	if total > l.paid {
		l.paid = total
	}
	if l.c != nil {
		_ = l.c.send(jAck, binary.AppendUvarint(nil, uint64(l.paid)))
	}
	return nil
}

// finish bills the ended job, records its receipt and delivers both to the
// buyer (waiting, for a resumable job, for a buyer that is away). owedTo
// is the intervals started, including those whose payment was still within
// the grace.
func (l *liveJob) finish(ctx context.Context, res *RunResult, why string, owedTo uint64) error {
	s, p := l.s, l.ct.Proposal
	at := s.clock.Now()
	if why == "" {
		why = res.Reason
	}
	if l.cur == nil && l.resumable && why != "unpaid" {
		l.awaitBuyer(ctx, maxTime(l.lostGraceEnd(), at.Add(time.Second)))
	}
	var sent int64
	var sendTime time.Duration
	for _, w := range l.outs {
		w.mu.Lock()
		sent, sendTime = sent+w.at, sendTime+w.sendTime
		w.mu.Unlock()
	}
	s.observe(sent, sendTime)
	k := l.k
	// movedBytes is what the bytes moved both ways (egress.go): what the
	// buyer got of the outputs and what the seller received of the image
	// and inputs.
	var movedBytes uint64
	var egress int64
	var bl *Bill
	if billsEgress(l.proto()) {
		// An interval that started while its payment was still within
		// the grace is owed too: the bill asks for it, and the buyer's
		// payment for it (perhaps on its way as the job ended, its beat
		// queued behind the outputs) is collected with the bill's.
		started := max(k, owedTo)
		// A service's forwarded bytes are billed with the rest (forward.go).
		fwOut, fwIn := s.forwarded(l.id)
		bl = &Bill{EgressBytes: uint64(sent + fwOut), IngressBytes: uint64(l.rxBytes + fwIn), EgressPrice: l.egressPrice, Intervals: started}
		movedBytes, _ = bl.Moved() // both are counts of bytes that moved: no overflow
		egress = EgressSats(movedBytes, l.egressPrice)
		bl.Egress, bl.Total = egress, p.Owed(started)+egress
		if l.cur != nil && why != "unpaid" {
			l.collectBill(ctx, *bl)
		}
		for k < started && l.paid >= p.Owed(k+1) {
			k++
		}
	} else if owedTo > k {
		// A buyer before egress bills (1.2.0) was asked for an interval
		// that started as the job ended: its payment may be on its way.
		// It is collected as a bill's would be, and the interval billed
		// if paid, so that the receipt bills what the channel holds.
		if l.cur != nil && why != "unpaid" {
			l.collectPay(ctx, p.Owed(owedTo))
		}
		for k < owedTo && l.paid >= p.Owed(k+1) {
			k++
		}
	}
	owed := p.Owed(k)
	billed := min(l.paid, owed+egress)
	rc := &Receipt{Version: Version, ContractID: l.id, Seller: s.id, Buyer: l.buyer, ExitCode: int64(res.ExitCode),
		Reason: why, Usage: res.Usage, Billed: billed, Intervals: k,
		Outputs:     []Output{l.outs[0].output(OutputStdout), l.outs[1].output(OutputStderr), l.outs[2].output(OutputTar)},
		EgressBytes: movedBytes, Egress: min(egress, max(billed-owed, 0)),
		Issued: s.clock.Now(), Expiry: s.clock.Now().Add(ReceiptTTL)}
	env, err := SignReceipt(rc, s.cfg.Key)
	if err != nil {
		return err
	}
	final := StateCompleted
	if why == "unpaid" {
		final = StateFailed
	}
	if _, err := s.machine.Move(RoleSeller, l.id, final, why, func(r *Record) {
		r.Paid, r.Intervals, r.Receipt, r.Ended = l.paid, k, env, s.clock.Now()
		r.EgressBytes, r.Egress = rc.EgressBytes, rc.Egress
	}); err != nil {
		// Failed while it ran because its payment channel failed (the
		// node does so when the buyer's funding was double-spent, which
		// stops the job): the buyer's channel, the buyer's fault.
		if r, gerr := s.machine.Get(RoleSeller, l.id); gerr == nil && r.State == StateFailed && strings.HasPrefix(r.Why, ChannelFailedPrefix) {
			return refuse(RefuseChannel, errors.New(r.Why))
		}
		return err
	}
	if final == StateCompleted && l.paid >= billed {
		_, _ = s.machine.Move(RoleSeller, l.id, StateSettled, "paid in full", nil)
	}
	s.log.Info("job ended", "contract", l.id, "peer", l.buyer, "reason", why, "exit", res.ExitCode, "intervals", k, "paid_sats", l.paid,
		"egress_bytes", rc.EgressBytes, "egress_sats", rc.Egress)
	// The receipt goes to the buyer's stream; a resumable job's buyer
	// that is away gets it (after the outputs it lacks and the bill) when
	// it comes back within the grace.
	for {
		if l.cur != nil {
			err := l.c.send(jReceipt, env)
			if err == nil {
				s.phase(PhaseResults, at)
				return nil
			}
			if !l.resumable {
				return err
			}
			l.lose()
		}
		if why == "unpaid" || !l.awaitBuyer(ctx, maxTime(l.lostGraceEnd(), s.clock.Now().Add(time.Second))) {
			s.log.Info("buyer did not come back for its receipt", "contract", l.id, "peer", l.buyer)
			return nil
		}
		if bl != nil {
			_ = l.c.send(jBill, marshalBill(*bl))
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// proto is the job stream's protocol (of the resume state after a restart).
func (l *liveJob) proto() protocol.ID { return l.protocol }

// collectBill sends the buyer the bill of a 1.3.0+ job that has ended and
// takes the payments that come for it, until the bill is paid, the buyer's
// stream breaks or billWait passes.
func (l *liveJob) collectBill(ctx context.Context, bl Bill) {
	if err := l.c.send(jBill, marshalBill(bl)); err != nil {
		return
	}
	l.collectPay(ctx, bl.Total)
}

// collectPay accepts the buyer's payments until they reach total, the
// bill's wait is over or the stream fails.
func (l *liveJob) collectPay(ctx context.Context, total int64) {
	timeout := time.NewTimer(billWait(l.payGrace()))
	defer timeout.Stop()
	for l.paid < total {
		select {
		case f := <-l.in:
			if f.gen != l.gen {
				continue
			}
			if f.err != nil {
				l.lose()
				return
			}
			if f.t != jPay {
				continue
			}
			if err := l.acceptPay(ctx, f.b); err != nil {
				l.s.log.Info("payment refused", "contract", l.id, "peer", l.buyer, "err", err)
			}
		case <-timeout.C:
			l.s.log.Info("bill not paid in full", "contract", l.id, "peer", l.buyer, "total_sats", total, "paid_sats", l.paid)
			return
		case <-ctx.Done():
			return
		}
	}
}

// spoolWriter is one output of a job on its way to the buyer: it hashes
// what the job writes (up to its cap), keeps it in a spool file when the
// job is resumable, and sends the buyer's stream what it lacks. It never
// fails the job: a buyer gone only misses bytes (a resumable one gets them
// when it comes back).
type spoolWriter struct {
	typ byte
	mu  sync.Mutex
	h   hash.Hash
	n   int64 // bytes kept (at most cap)
	cap int64
	f   *os.File // the spool; nil: not resumable
	c   *conn    // the buyer's stream; nil while away
	// at is how many bytes the buyer's current (or last) stream holds.
	at   int64
	dead bool
	// sendTime is how long the sends took (the measured throughput).
	sendTime time.Duration
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := p
	if room := w.cap - w.n; int64(len(q)) > room {
		q = q[:max(room, 0)]
	}
	w.h.Write(q)
	if w.f != nil {
		if _, err := w.f.WriteAt(q, w.n); err != nil {
			w.f.Close()
			w.f = nil // no resend from here: the buyer gets what follows
		}
	}
	start := w.n
	w.n += int64(len(q))
	w.flush(q, start)
	return len(p), nil
}

// flush sends the buyer's stream the bytes it lacks: from q (written at
// offset start) when it is there, else from the spool.
func (w *spoolWriter) flush(q []byte, start int64) {
	for w.c != nil && !w.dead && w.at < w.n {
		var chunk []byte
		switch {
		case q != nil && w.at >= start:
			off := w.at - start
			chunk = q[off:min(int64(len(q)), off+chunkSize)]
		case w.f != nil:
			buf := make([]byte, min(chunkSize, w.n-w.at))
			k, _ := w.f.ReadAt(buf, w.at)
			if k == 0 {
				return
			}
			chunk = buf[:k]
		default:
			return
		}
		at := time.Now()
		err := w.c.send(w.typ, chunk)
		w.sendTime += time.Since(at)
		if err != nil {
			w.dead = true
			return
		}
		w.at += int64(len(chunk))
	}
}

// attach points the writer at a buyer's stream holding have bytes (nil:
// none) and sends what it lacks.
func (w *spoolWriter) attach(c *conn, have uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c = c
	if c == nil {
		return
	}
	w.dead = false
	w.at = int64(min(have, uint64(w.cap)))
	w.flush(nil, w.n)
}

func (w *spoolWriter) output(name string) Output {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Output{Name: name, SHA256: "sha256:" + hex.EncodeToString(w.h.Sum(nil)), Size: uint64(w.n)}
}
