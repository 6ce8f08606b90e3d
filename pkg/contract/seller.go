package contract

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/meter"
	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Job protocol frame types. Buyer to seller:
const (
	jHello   byte = 10 // the encoded Contract
	jOpen    byte = 11 // the Payer's open message (empty: channel reused)
	jBlob    byte = 12 // a chunk of the image, then of each input in order
	jBlobEnd byte = 13 // the current blob is complete
	jPay     byte = 14 // a payment update
	jCancel  byte = 15 // stop the job, send what there is
)

// Seller to buyer:
const (
	jReady   byte = 20 // contract and channel accepted; send the blobs (1.2.0: an encoded Ready)
	jAck     byte = 21 // uvarint: cumulative sats held for the contract
	jBeat    byte = 22 // uvarint n: n intervals delivered; pay for n+1
	jStdout  byte = 23
	jStderr  byte = 24
	jOutput  byte = 25 // a chunk of the tar of /out
	jReceipt byte = 26 // the signed receipt; the last frame
	// jReceived: the image and inputs arrived and passed the seller's
	// checks; only now does the buyer pay the first interval.
	jReceived byte = 27
)

// A stream the seller ends early carries frameError with an encoded
// JobError (a reason and a message) as its last frame.

const (
	chunkSize   = 64 << 10
	maxCtlFrame = 64 << 10
	jobMemory   = 2*chunkSize + MaxContractSize
)

// Receipt output names.
const (
	OutputStdout = "stdout"
	OutputStderr = "stderr"
	OutputTar    = "out.tar"
)

// SellerConfig configures a Seller. Zero values take the defaults noted.
type SellerConfig struct {
	Host host.Host
	// Key is the node's identity key; it signs decisions and receipts.
	Key   crypto.PrivKey
	Store Store
	// Runner runs jobs (the sandbox adapter).
	Runner Runner
	// Payments verifies channel opens and payment updates.
	Payments PaymentReceiver
	// Network is the Bitcoin network the seller is paid on: a proposal
	// on another is rejected (ReasonNetwork). "" checks nothing.
	Network string
	// Offer returns the seller's current offer; nil means not selling.
	Offer func() *offer.Offer
	// Capacity returns the total all contracts together may hold now: the
	// node computes it as the meter's spare plus what contracts hold, from
	// one snapshot. Admission refuses what would exceed it.
	Capacity func() offer.Resources
	// Policy, if set, may refuse a proposal (reason "policy").
	Policy func(*Proposal) error
	// AllowPull allows requests naming an image by reference.
	AllowPull bool
	// FundTimeout is how long an accepted contract waits for the buyer to
	// fund and start it; its reservation is released after. Default 2m.
	FundTimeout time.Duration
	// FundingWait is how long a funded contract waits for its channel's
	// funding to confirm when it may not start on it unconfirmed
	// (funding.go). Default DefaultFundingWait.
	FundingWait time.Duration
	// PayGrace is how long after an interval starts its payment may come;
	// 0 means half the interval. A missed payment stops the job.
	PayGrace time.Duration
	// RestartGrace is how long a running 1.4.0 job waits for its daemons:
	// a seller that stops for an upgrade leaves it running (when the
	// Runner is a Reattacher) and resumes it at its next start within the
	// grace; a buyer away that long is waited for (resume.go). 0: jobs
	// die with the daemon and a broken stream is not waited for.
	RestartGrace time.Duration
	// Service is the restart policy and health check pace of the
	// service contracts it runs (zero fields: the defaults).
	Service ServiceConfig
	// QueueWait is how long a proposal refused for capacity may wait for
	// a running contract to end before it is refused (queue.go); 0 (the
	// zero value) refuses at once. The node's default is
	// DefaultQueueWait.
	QueueWait time.Duration
	// Size limits of what a buyer may ship and get back. Defaults 2 GiB,
	// 256 MiB, 256 MiB.
	MaxImageBytes, MaxInputBytes, MaxOutputBytes int64
	// WorkDir keeps inputs while a job runs. Default os.TempDir().
	WorkDir string
	// Timeouts of the state machine.
	Timeouts Timeouts
	// AdvanceEvery is how often timeouts are applied. Default 5s.
	AdvanceEvery time.Duration
	Clock        Clock
	Log          *slog.Logger
	// OnPhase, if set, is told how long each phase of a job took (phase.go).
	OnPhase PhaseFunc
	// OnThroughput, if set, is told the rate in bits/s each real transfer
	// of at least 1 MiB achieved (the image and inputs received, the
	// outputs sent), so the advertised bandwidth follows reality
	// (meter.Meter.ObserveThroughput).
	OnThroughput func(bitsPerSec float64)
}

func (c *SellerConfig) defaults() error {
	if c.Host == nil || c.Key == nil || c.Store == nil || c.Runner == nil || c.Payments == nil || c.Offer == nil || c.Capacity == nil {
		return errors.New("seller config: host, key, store, runner, payments, offer and capacity are required")
	}
	if c.FundTimeout <= 0 {
		c.FundTimeout = 2 * time.Minute
	}
	if c.FundingWait <= 0 {
		c.FundingWait = DefaultFundingWait
	}
	if c.MaxImageBytes <= 0 {
		c.MaxImageBytes = 2 << 30
	}
	if c.MaxInputBytes <= 0 {
		c.MaxInputBytes = 256 << 20
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = 256 << 20
	}
	if c.WorkDir == "" {
		c.WorkDir = os.TempDir()
	}
	if c.AdvanceEvery <= 0 {
		c.AdvanceEvery = 5 * time.Second
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Seller answers proposals and runs contracted jobs.
type Seller struct {
	cfg     SellerConfig
	id      peer.ID
	clock   Clock
	log     *slog.Logger
	machine *Machine
	// refusals keeps a buyer's repeated proposals (every two seconds while
	// this seller is busy) to one line per reason.
	refusals changeLog

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
	// live are the running contracts' jobs, which a buyer's resumed
	// stream joins (live.go).
	live    map[string]*liveJob
	rejects map[Reason]uint64
	stop    context.CancelFunc
	done    chan struct{}
	// ctx is the stream handlers' parent context; endHandlers ends it at
	// Close, once the handlers had their grace.
	ctx         context.Context
	endHandlers context.CancelFunc
	// closing refuses new streams; handlers and streams are the ones
	// running, which Close waits for (and resets if they linger).
	closing  bool
	handlers sync.WaitGroup
	streams  map[network.Stream]struct{}
	// services are the running service contracts (service.go).
	services svcTable
	// holds times the contracts' jobs, for retry-after hints
	// (retryafter.go).
	holds holdStats
}

// errSellerClosing is the cause a running job is stopped with at Close.
var errSellerClosing = errors.New("seller stopping")

// closeGrace is how long Close lets handlers finish (a killed job's receipt
// is signed, recorded and sent) before it resets their streams.
const closeGrace = 15 * time.Second

var _ meter.Held = (*Seller)(nil)

// NewSeller returns a seller; Start makes it serve.
func NewSeller(cfg SellerConfig) (*Seller, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Seller{cfg: cfg, id: cfg.Host.ID(), clock: cfg.Clock, log: cfg.Log.With("role", "seller"),
		running: map[string]context.CancelCauseFunc{}, live: map[string]*liveJob{}, rejects: map[Reason]uint64{}, streams: map[network.Stream]struct{}{},
		ctx: context.Background()}
	// The machine names the role in its own lines: not s.log, or role twice.
	s.machine = NewMachine(cfg.Store, cfg.Timeouts, cfg.Clock.Now, cfg.Log)
	s.machine.OnMove = s.onMove
	return s, nil
}

// Machine is the seller's state machine (for listing contracts).
func (s *Seller) Machine() *Machine { return s.machine }

// Start recovers contracts left by a previous run (resuming the running
// jobs it can, resume.go), registers the
// negotiate and job protocol handlers and applies timeouts every
// AdvanceEvery until Close.
func (s *Seller) Start(ctx context.Context) error {
	keep, err := s.resumable()
	if err != nil {
		return fmt.Errorf("start seller: %w", err)
	}
	if _, err := s.machine.recoverKeeping(keep, RoleSeller); err != nil {
		return fmt.Errorf("start seller: %w", err)
	}
	s.ctx, s.endHandlers = context.WithCancel(ctx)
	s.resumeJobs(ctx, keep)
	ctx, s.stop = context.WithCancel(ctx)
	s.done = make(chan struct{})
	s.cfg.Host.SetStreamHandler(NegotiateProtocol, s.tracked(s.handleNegotiate))
	s.cfg.Host.SetStreamHandler(JobProtocol, s.tracked(s.handleJob))
	s.cfg.Host.SetStreamHandler(JobProtocol13, s.tracked(s.handleJob))
	s.cfg.Host.SetStreamHandler(JobProtocol12, s.tracked(s.handleJob))
	s.cfg.Host.SetStreamHandler(JobProtocol11, s.tracked(s.handleJob))
	s.cfg.Host.SetStreamHandler(ForwardProtocol, s.handleForward)
	go func() {
		defer close(s.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.clock.After(s.cfg.AdvanceEvery):
				if _, err := s.machine.Advance(); err != nil {
					s.log.Warn("apply contract timeouts", "err", err)
				}
				s.touchLive()
			}
		}
	}()
	return nil
}

// Close stops serving, kills running jobs and waits for every stream
// handler to end: a killed job's receipt is signed, recorded and sent to its
// buyer, and payments in flight are acknowledged or refused, before Close
// returns and the caller closes the host and the store. Handlers still
// blocked on their peer after closeGrace have their streams reset. (If the
// process dies instead, Recover fails the contracts at the next start.)
func (s *Seller) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.cfg.Host.RemoveStreamHandler(NegotiateProtocol)
	s.cfg.Host.RemoveStreamHandler(JobProtocol)
	s.cfg.Host.RemoveStreamHandler(JobProtocol13)
	s.cfg.Host.RemoveStreamHandler(JobProtocol12)
	s.cfg.Host.RemoveStreamHandler(JobProtocol11)
	s.cfg.Host.RemoveStreamHandler(ForwardProtocol)
	s.mu.Lock()
	for id, c := range s.running {
		if l := s.live[id]; l != nil && l.resumable && s.canDetach() {
			// An upgrade: the job runs on, and the next start resumes it.
			c(ErrDetach)
			continue
		}
		c(errSellerClosing)
	}
	s.mu.Unlock()
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	idle := make(chan struct{})
	go func() { s.handlers.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(closeGrace):
		s.mu.Lock()
		s.endHandlers()
		for st := range s.streams {
			st.Reset()
		}
		s.mu.Unlock()
		<-idle
	}
	if s.endHandlers != nil {
		s.endHandlers()
	}
	return nil
}

// tracked runs a stream handler unless the seller is closing, and lets
// Close wait for it.
func (s *Seller) tracked(h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			st.Reset()
			return
		}
		s.handlers.Add(1)
		s.streams[st] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.streams, st)
			s.mu.Unlock()
			s.handlers.Done()
		}()
		h(st)
	}
}

// Held implements meter.Held: what accepted, funded and running contracts
// hold.
func (s *Seller) Held() meter.Capacity {
	r, err := s.machine.Held()
	if err != nil {
		s.log.Warn("read reservations", "err", err)
	}
	return meter.Capacity{MilliCPU: int64(r.CPUMillis), Memory: int64(r.MemoryBytes), Disk: int64(r.DiskBytes)}
}

// Rejections counts refusals by reason (for metrics).
func (s *Seller) Rejections() map[Reason]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Reason]uint64, len(s.rejects))
	for k, v := range s.rejects {
		out[k] = v
	}
	return out
}

func (s *Seller) metricsReject(r Reason) {
	s.mu.Lock()
	s.rejects[r]++
	s.mu.Unlock()
}

// onMove stops a job whose contract left running (a timeout).
func (s *Seller) onMove(r *Record, from State) {
	if from.Holds() && !r.State.Holds() {
		// Its reservation went: a proposal waiting for capacity may
		// take it (queue.go).
		s.holds.released()
	}
	if from == StateRunning && r.State != StateRunning {
		s.mu.Lock()
		c := s.running[r.ID]
		s.mu.Unlock()
		if c != nil {
			c(errors.New(r.Why))
		}
	}
}

// ChannelFailedPrefix starts the reason of a contract failed because its
// payment channel failed ("payment channel failed: ID: why").
const ChannelFailedPrefix = "payment channel failed: "

// Earnings sums what the seller holds payment for, by state.
func (s *Seller) Earnings() (map[State]int64, error) {
	recs, err := s.machine.List(RoleSeller)
	if err != nil {
		return nil, err
	}
	out := map[State]int64{}
	for _, r := range recs {
		out[r.State] += r.Paid
	}
	return out, nil
}

// handleJob is the seller's job protocol handler (1.3.0, 1.2.0 and 1.1.0).
func (s *Seller) handleJob(st network.Stream) {
	remote := st.Conn().RemotePeer()
	if err := setupStream(st, jobMemory, time.Now().Add(s.cfg.FundTimeout+time.Minute)); err != nil {
		s.log.Debug("job stream refused", "peer", remote, "err", err)
		st.Reset()
		return
	}
	defer st.Scope().ReleaseMemory(jobMemory)
	c := newConn(st)
	id, err := s.serveJob(c, remote)
	if errors.Is(err, errJobDetached) {
		st.Reset() // the buyer resumes on a new stream
		return
	}
	if err != nil {
		reason := refusalOf(err)
		s.log.Info("job stream ended with an error", "peer", remote, "contract", id, "reason", reason, "err", err)
		_ = c.send(frameError, marshalJobError(&JobError{Reason: reason, Message: err.Error(), Closing: closingTx(err), Held: heldUpdate(err)}))
		lingerClose(c)
		return
	}
	lingerClose(c)
}

// lingerClose ends a job stream whose last frame (a receipt, a refusal's
// reason) the buyer may not have read yet. A reset, or the connection
// closing (a seller that stops right after a killed job's receipt),
// drops what the buyer has not read: the stream reset ends its reads
// before its buffered bytes. So this side closes, then reads
// (discarding, for up to jobLinger) what the buyer still sends, such as
// the rest of an image or a payment, until the buyer has read the last
// frame and closed its own side. A live job's reader, still reading the
// stream, is waited for first (bounded by the same deadline): two reads
// waiting at once, one would miss the buyer's close and, the deadline
// cleared by the close, wait forever.
func lingerClose(c *conn) {
	st := c.s
	_ = st.CloseWrite()
	_ = st.SetReadDeadline(time.Now().Add(jobLinger))
	c.reading.Wait()
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		st.Reset()
		return
	}
	st.Close()
}

// jobLinger is how long a seller that ended a job stream waits for the
// buyer to read its last frame.
const jobLinger = 5 * time.Second

// refusal marks a seller-side error of a job stream with the reason the
// buyer is told.
type refusal struct {
	reason JobReason
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(reason JobReason, err error) error {
	if err == nil {
		return nil
	}
	var r *refusal
	if errors.As(err, &r) {
		return err
	}
	return &refusal{reason: reason, err: err}
}

// refusalOf is the reason err carries; an unmarked error is the seller's
// own (internal).
func refusalOf(err error) JobReason {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason
	}
	return RefuseInternal
}

type sellerJob struct {
	s        *Seller
	c        *conn
	buyer    peer.ID
	ct       *Contract
	id       string
	paid     int64
	inputDir string
	// cached is the name of the seller's image of the contract's digest
	// when the seller told the buyer (1.2.0) it need not send it.
	cached string
	// egressPrice is what the bytes sent are billed at (1.3.0), msat per
	// GiB: the offer's when the contract was accepted.
	egressPrice uint64
	// rxBytes and rxTime are what the image and inputs took to arrive
	// (time spent waiting on the stream); rxBytes is billed (egress.go).
	rxBytes int64
	rxTime  time.Duration
	// release, if set, forgets the contract at the funding gate
	// (funding.go) once it has ended.
	release func()
	// fwOut and fwIn are a resumed service contract's forwarded bytes as
	// the previous process last recorded them (resume.go).
	fwOut, fwIn int64
}

func (s *Seller) serveJob(c *conn, remote peer.ID) (string, error) {
	t, b, err := c.recv(MaxContractSize)
	switch {
	case err != nil:
		return "", refuse(RefuseProtocol, fmt.Errorf("read contract: %w", err))
	case t == jResume && resumes(c.s.Protocol()):
		return s.serveResume(c, remote, b)
	case t != jHello:
		return "", refuse(RefuseProtocol, fmt.Errorf("read contract: %w: frame %d", ErrMalformed, t))
	}
	ct, err := OpenContract(b)
	if err != nil {
		return "", refuse(RefuseContract, fmt.Errorf("open contract: %w", err))
	}
	id := ct.ID
	if ct.Proposal.Seller != s.id || ct.Proposal.Buyer != remote {
		return id, refuse(RefuseContract, fmt.Errorf("%w: contract is not between %s and us", ErrInvalid, remote))
	}
	rec, err := s.machine.Get(RoleSeller, id)
	if errors.Is(err, ErrNotFound) {
		return id, refuse(RefuseContract, err)
	}
	if err != nil {
		return id, err
	}
	if rec.State != StateAccepted {
		return id, refuse(RefuseContract, fmt.Errorf("contract %s is %s, not accepted", id, rec.State))
	}
	if !s.clock.Now().Before(rec.Deadline) {
		return id, refuse(RefuseContract, fmt.Errorf("contract %s: funding deadline passed", id))
	}
	// The contract rule (reach.go), kept by the seller too: no job over a
	// relayed connection whose limits do not fit it.
	if cn := c.s.Conn(); cn.Stat().Limited && !Carries(cn, NeedOf(ct.Proposal, s.cfg.MaxOutputBytes), time.Now()) {
		err := fmt.Errorf("contract %s: job stream over a relayed connection whose limits do not fit the contract", id)
		// Nothing was funded: the reservation goes at once.
		_, _ = s.machine.Move(RoleSeller, id, StateExpired, string(RefuseUnreachable)+": relayed connection too small for the contract", nil)
		s.metricsReject(ReasonUnreachable)
		return id, refuse(RefuseUnreachable, err)
	}
	j := &sellerJob{s: s, c: c, buyer: remote, ct: ct, id: id, egressPrice: rec.EgressPrice}
	held := s.holds.begin(s.clock.Now())
	defer func() { held(s.clock.Now()) }()
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	err = j.run(ctx)
	if j.release != nil {
		j.release()
	}
	if errors.Is(err, errJobDetached) {
		// Still running, for the next start, which removes the inputs
		// when the job ends (a service may need them to restart).
		return id, err
	}
	if j.inputDir != "" {
		os.RemoveAll(j.inputDir)
	}
	if err != nil {
		// Whatever state it reached, a broken contract fails; the
		// payments held stay held.
		if r, gerr := s.machine.Get(RoleSeller, id); gerr == nil && !r.State.Final() && r.State != StateFailed && r.State != StateCompleted {
			_, _ = s.machine.Move(RoleSeller, id, StateFailed, truncate(err.Error(), 200), func(r *Record) { r.Paid = max(r.Paid, j.paid) })
		}
	}
	return id, err
}

func (j *sellerJob) run(ctx context.Context) error {
	s, p := j.s, j.ct.Proposal
	at := s.clock.Now()
	open, err := j.c.expect(jOpen, maxCtlFrame)
	if err != nil {
		return refuse(RefuseProtocol, fmt.Errorf("read channel open: %w", err))
	}
	if err := j.acceptOpen(ctx, open); err != nil {
		return refuse(RefuseChannel, fmt.Errorf("accept channel: %w", err))
	}
	if _, err := s.machine.Move(RoleSeller, j.id, StateFunded, "channel ready", nil); err != nil {
		return err
	}
	if err := j.awaitFunding(ctx, open); err != nil {
		return err
	}
	at = s.phase(PhaseFund, at)
	if err := j.c.send(jReady, j.ready(ctx)); err != nil {
		return err
	}
	// The transfer and the first payment get the funded state's timeout.
	_ = j.c.s.SetDeadline(time.Now().Add(s.machine.timeouts.Start))
	image, err := j.receiveBlobs(ctx)
	if err != nil {
		return err
	}
	s.observe(j.rxBytes, j.rxTime)
	at = s.phase(PhaseTransfer, at)
	// The buyer pays nothing for what the seller refuses.
	if err := j.c.send(jReceived, nil); err != nil {
		return err
	}
	// The first interval is paid before anything runs.
	if err := j.readPayment(ctx, 1); err != nil {
		return err
	}
	started := s.clock.Now()
	if _, err := s.machine.Move(RoleSeller, j.id, StateRunning, "first interval paid", func(r *Record) {
		r.Paid, r.Intervals, r.Started = j.paid, 1, started
	}); err != nil {
		return err
	}
	s.phase(PhasePay, at)
	// The job stream lives as long as the contract.
	_ = j.c.s.SetDeadline(time.Now().Add(p.Request.Duration + s.machine.timeouts.RunGrace + time.Minute))
	// A service's contract is resumed as a job's is: the seller follows
	// the running service (restart policy, health, forwards) after its
	// restart, and the buyer's node comes back to it (service_buyer.go).
	l := newLiveJob(j, s.canResume(j.c.s.Protocol()))
	l.protocol, l.started, l.k = j.c.s.Protocol(), started, 1
	return l.run(ctx, image)
}

func (j *sellerJob) readPayment(ctx context.Context, n uint64) error {
	b, err := j.c.expect(jPay, maxCtlFrame)
	if err != nil {
		return refuse(RefuseProtocol, fmt.Errorf("read payment: %w", err))
	}
	if err := j.acceptPay(ctx, b); err != nil {
		return refuse(RefusePayment, err)
	}
	if need := j.ct.Proposal.Owed(n); j.paid < need {
		return refuse(RefusePayment, fmt.Errorf("payment of %d sats does not cover interval %d (%d)", j.paid, n, need))
	}
	return nil
}

func (j *sellerJob) acceptPay(ctx context.Context, b []byte) error {
	total, err := j.s.cfg.Payments.AcceptUpdate(ctx, j.buyer, j.id, b)
	if err != nil {
		return fmt.Errorf("accept payment: %w", err)
	}
	if total > j.paid {
		j.paid = total
	}
	return j.c.send(jAck, binary.AppendUvarint(nil, uint64(j.paid)))
}

// ImageCache is what a Runner may also do: say whether it holds an image
// imported from a tarball of digest, and its name for RunSpec.Image. It
// answers only for an image whose tarball hashed to digest when imported.
type ImageCache interface {
	CachedImage(ctx context.Context, digest string) (name string, ok bool)
}

// ready is the jReady payload: in 1.2.0 whether the seller holds the
// contract's image, looked up by the digest the signed contract names (so
// what runs is that digest's image, whatever the buyer sends later); in
// 1.1.0 empty.
func (j *sellerJob) ready(ctx context.Context) []byte {
	req := &j.ct.Proposal.Request
	proto := j.c.s.Protocol()
	if !hasReady(proto) {
		return nil
	}
	if ic, ok := j.s.cfg.Runner.(ImageCache); ok && req.ImageIsDigest() {
		if name, ok := ic.CachedImage(ctx, req.Image); ok {
			j.cached = name
		}
	}
	r := Ready{HaveImage: j.cached != ""}
	if billsEgress(proto) {
		r.EgressPrice = j.egressPrice
	}
	return marshalReady(r)
}

// observe tells OnThroughput what a transfer achieved, when it says
// anything.
func (s *Seller) observe(bytes int64, d time.Duration) {
	if bps := throughput(bytes, d); bps > 0 && s.cfg.OnThroughput != nil {
		s.log.Info("transfer measured", "bytes", bytes, "seconds", d.Seconds(), "bits_per_sec", int64(bps))
		s.cfg.OnThroughput(bps)
	}
}

// receiveBlobs reads the image (when shipped by digest and the seller
// does not hold it) and the inputs, each capped and digest-checked, and
// returns the image name to run.
func (j *sellerJob) receiveBlobs(ctx context.Context) (string, error) {
	s, req := j.s, &j.ct.Proposal.Request
	var image string
	if j.cached != "" {
		image = j.cached
		s.log.Info("image cached, not transferred", "contract", j.id, "image", req.Image)
	} else if req.ImageIsDigest() {
		pr, pw := io.Pipe()
		type res struct {
			name string
			err  error
		}
		done := make(chan res, 1)
		go func() {
			name, err := s.cfg.Runner.ImportImage(ctx, pr, req.Image)
			pr.CloseWithError(errors.New("import finished"))
			done <- res{name, err}
		}()
		n, err := j.readBlob(pw, s.cfg.MaxImageBytes)
		pw.CloseWithError(err)
		r := <-done
		if err != nil {
			return "", blobRefusal(fmt.Errorf("receive image: %w", err))
		}
		s.log.Info("image received", "contract", j.id, "image", req.Image, "bytes", n)
		if r.err != nil {
			reason := RefuseInternal
			if errors.Is(r.err, ErrBadImage) {
				reason = RefuseBadImage
			}
			return "", refuse(reason, fmt.Errorf("import image %s: %w", req.Image, r.err))
		}
		image = r.name
	} else {
		name, err := s.cfg.Runner.Pull(ctx, req.Image)
		if err != nil {
			return "", refuse(RefusePull, fmt.Errorf("pull image %s: %w", req.Image, err))
		}
		image = name
	}
	if len(req.Inputs) > 0 {
		dir, err := os.MkdirTemp(s.cfg.WorkDir, "blackbox-in-")
		if err != nil {
			return "", fmt.Errorf("input dir: %w", err)
		}
		j.inputDir = dir
		left := s.cfg.MaxInputBytes
		for _, in := range req.Inputs {
			f, err := os.OpenFile(filepath.Join(dir, in.Name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if errors.Is(err, os.ErrExist) {
				return "", refuse(RefuseBadInput, fmt.Errorf("input %s: %w", in.Name, err))
			}
			if err != nil {
				return "", fmt.Errorf("input %s: %w", in.Name, err)
			}
			h := sha256.New()
			n, err := j.readBlob(io.MultiWriter(f, h), min(left, int64(in.Size)))
			f.Close()
			if err != nil {
				return "", blobRefusal(fmt.Errorf("receive input %s: %w", in.Name, err))
			}
			left -= n
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != in.SHA256 {
				return "", refuse(RefuseBadInput, fmt.Errorf("input %s: digest %s, want %s", in.Name, got, in.SHA256))
			}
		}
	}
	return image, nil
}

// blobRefusal marks an error of readBlob: too much, or not the protocol.
func blobRefusal(err error) error {
	if errors.Is(err, ErrTooLarge) {
		return refuse(RefuseTooLarge, err)
	}
	return refuse(RefuseProtocol, err)
}

// readBlob copies jBlob frames into w until jBlobEnd, at most limit bytes.
// A writer that stops accepting (a cached image needs no bytes) is
// drained, not an error.
func (j *sellerJob) readBlob(w io.Writer, limit int64) (int64, error) {
	var n int64
	sink := w
	for {
		at := time.Now()
		t, b, err := j.c.recv(chunkSize)
		j.rxTime += time.Since(at)
		if err != nil {
			return n, err
		}
		switch t {
		case jBlobEnd:
			return n, nil
		case jBlob:
			n += int64(len(b))
			j.rxBytes += int64(len(b))
			if n > limit {
				return n, fmt.Errorf("%w: blob exceeds %d bytes", ErrTooLarge, limit)
			}
			if _, err := sink.Write(b); err != nil {
				sink = io.Discard
			}
		default:
			return n, fmt.Errorf("%w: frame %d during transfer", ErrMalformed, t)
		}
	}
}

// payGrace is how long after an interval starts its payment may come.
func (j *sellerJob) payGrace() time.Duration {
	if g := j.s.cfg.PayGrace; g > 0 {
		return g
	}
	return j.ct.Proposal.Interval / 2
}
