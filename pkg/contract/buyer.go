package contract

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/blackbox-market/blackbox/pkg/offer"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
)

// BuyerConfig configures a Buyer. Zero values take the defaults noted.
type BuyerConfig struct {
	Host host.Host
	// Key is the node's identity key; it signs proposals.
	Key   crypto.PrivKey
	Store Store
	// Payer pays sellers over payment channels.
	Payer Payer
	// PaymentKey is the buyer's 33-byte payment public key, put in every
	// proposal.
	PaymentKey []byte
	// Network is the Bitcoin network the buyer pays on, put in every
	// proposal; offers on another network are ruled out ("" rules out
	// none).
	Network string
	// Blobs holds the image tarballs and inputs requests name by digest.
	Blobs Blobs
	// CheckImage, if set, reads an image tarball the way sellers check it
	// before they import it; Submit refuses an image it fails, before
	// any channel is funded.
	CheckImage func(io.Reader) error
	// Find returns verified offers matching a filter (offer.Discoverer.Find).
	Find func(ctx context.Context, f offer.Filter) ([]*offer.Offer, error)
	// Precheck, if set, is what Submit asks last, after its own checks and
	// before it records the job: an error refuses the job as it is (the
	// node looks at the market, with Quote, and at its wallet).
	Precheck func(ctx context.Context, req Request) error
	// Reputation ranks sellers; nil is Neutral.
	Reputation Reputation
	// ResultDir receives, per contract, stdout, stderr, out.tar and the
	// receipt: ResultDir/<contract id>/.
	ResultDir string
	// MaxAttempts is how many contracts one job may go through (a seller
	// that fails is not tried again for that job). Default 3.
	MaxAttempts int
	// Rounds is how many times discovery is repeated when every seller
	// refused (busy); RetryBackoff is the wait between rounds. Defaults 5
	// and 2s.
	Rounds       int
	RetryBackoff time.Duration
	// HeartbeatGrace is how late a seller's heartbeat may be; 0 means half
	// the interval. A missed heartbeat stops the payments.
	HeartbeatGrace time.Duration
	// RestartGrace is how long a 1.4.0 job's broken stream is redialled
	// (the seller restarting) and how long after this node's own restart
	// its running jobs are resumed (resume.go). 0: never.
	RestartGrace time.Duration
	// Service is the renewal and drain of this node's services (zero
	// fields: the defaults).
	Service ServiceConfig
	// MaxOutputBytes caps each of stdout, stderr and out.tar. Default 256 MiB.
	MaxOutputBytes int64
	// SpotCheckTimeout bounds a deterministic job's spot check (up to two
	// more runs on other sellers). Default: twice the job's duration plus
	// ten minutes.
	SpotCheckTimeout time.Duration
	// DirectWait is how long, after a seller accepted over a relayed
	// connection, the buyer waits for a direct one (or one whose relay
	// limits fit the contract) before it gives up on that seller with the
	// reason "unreachable", before anything is funded. Default 15s.
	DirectWait time.Duration
	// UnreachableFor is how long a seller found unreachable is ranked
	// behind the others (not held against its reputation). Default 10m.
	UnreachableFor time.Duration
	Timeouts       Timeouts
	Clock          Clock
	Rand           *mrand.Rand
	Log            *slog.Logger
	// OnPhase, if set, is told how long each phase of a job took (phase.go).
	OnPhase PhaseFunc

	// FundingWait bounds, with the start timeout, how long a seller may
	// keep a contract waiting for its funding's confirmations (funding.go).
	// Default DefaultFundingWait.
	FundingWait time.Duration
}

func (c *BuyerConfig) defaults() error {
	if c.Host == nil || c.Key == nil || c.Store == nil || c.Payer == nil || c.Find == nil || len(c.PaymentKey) != 33 || c.ResultDir == "" {
		return errors.New("buyer config: host, key, store, payer, find, a 33-byte payment key and a result dir are required")
	}
	if c.Reputation == nil {
		c.Reputation = Neutral{}
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.Rounds <= 0 {
		c.Rounds = 5
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 2 * time.Second
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = 256 << 20
	}
	if c.DirectWait <= 0 {
		c.DirectWait = DefaultDirectWait
	}
	if c.UnreachableFor <= 0 {
		c.UnreachableFor = DefaultUnreachableFor
	}
	if c.FundingWait <= 0 {
		c.FundingWait = DefaultFundingWait
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.Rand == nil {
		c.Rand = mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// JobState is where a buyer's job is.
type JobState string

// Job states.
const (
	JobSearching JobState = "searching"
	JobRunning   JobState = "running"
	JobDone      JobState = "done"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Attempt is one seller tried for a job.
type Attempt struct {
	Seller     peer.ID `json:"seller,omitempty"`
	ContractID string  `json:"contract_id"`
	State      State   `json:"state"`
	Paid       int64   `json:"paid_sat"`
	// Price is what the contract costs in all, start fee included, and
	// StartFee the start fee, in sats.
	Price    int64  `json:"price_sat,omitempty"`
	StartFee int64  `json:"start_fee_sat,omitempty"`
	Why      string `json:"why,omitempty"`
	// Reason is the machine-readable reason of an attempt that ended
	// before anything was funded (ReasonUnreachable).
	Reason Reason `json:"reason,omitempty"`
	// Fault is whose fault the contract's end was (none: delivered).
	Fault Fault `json:"fault"`
}

// JobStatus is a buyer's job as `blackbox jobs` and `blackbox job` show it.
type JobStatus struct {
	ID         string    `json:"id"`
	Request    Request   `json:"request"`
	State      JobState  `json:"state"`
	Phase      string    `json:"phase,omitempty"` // discover, negotiate, fund, transfer, run, results
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Attempts   []Attempt `json:"attempts,omitempty"`
	Seller     peer.ID   `json:"seller,omitempty"`
	ContractID string    `json:"contract_id,omitempty"`
	Intervals  uint64    `json:"intervals"`
	// Paid is what all attempts paid, in sats; Billed what the final
	// receipt claims.
	Paid      int64    `json:"paid_sat"`
	Billed    int64    `json:"billed_sat"`
	ExitCode  int64    `json:"exit_code"`
	ResultDir string   `json:"result_dir,omitempty"`
	Receipt   *Receipt `json:"receipt,omitempty"`
	Error     string   `json:"error,omitempty"`
	// Funding is where the current contract's channel funding is, as its
	// seller said (funding.go): the confirmations while the contract waits
	// for them, or that it started unconfirmed.
	Funding *Funding `json:"funding,omitempty"`
	// SpotCheck, for a deterministic job, is the spot check that re-ran it
	// on other sellers after it was done (spotcheck.go); it never changes
	// the job's own state, results or Paid.
	SpotCheck *SpotCheck `json:"spot_check,omitempty"`
	// Service is a service's replicas, health and forwards
	// (service_buyer.go); nil for a job.
	Service *ServiceStatus `json:"service,omitempty"`

	// shadow marks a spot-check run: it is never stored or listed.
	shadow bool
	// exclude, if set, names sellers seek must not try for this job (the
	// sellers of a service's other replicas, as they are now).
	exclude func(peer.ID) bool
	// findWithin, if set, bounds each lookup of offers: seek goes on with
	// the offers found by then (a replacement in a hurry: a seller that
	// hangs holds a DHT query for its whole timeout).
	findWithin time.Duration
	// phaseAt is when the job entered Phase (for OnPhase).
	phaseAt time.Time
}

const bucketJobs = "contract_jobs"

// Buyer submits jobs to the market and sees them through.
type Buyer struct {
	cfg     BuyerConfig
	payKey  paymentKey // cfg.PaymentKey, or what SetPaymentKey put (paykey.go)
	id      peer.ID
	clock   Clock
	log     *slog.Logger
	machine *Machine

	// refusals keeps a busy seller's refusals to one line per reason.
	refusals changeLog

	mu     sync.Mutex
	jobs   map[string]*JobStatus
	cancel map[string]context.CancelCauseFunc
	done   map[string]chan struct{}
	rng    *mrand.Rand
	wg     sync.WaitGroup
	// spots cancels the spot checks running in the background; closed
	// stops new ones.
	spots  map[string]context.CancelFunc
	closed bool
	// changed is closed (and replaced) whenever a job changes: WaitChange
	// waits on it. changes holds each job's last maxChanges statuses, in
	// order, while it runs and for changesKept after it ended: a client
	// that waits on a job sees every change, not only the newest.
	changed chan struct{}
	changes map[string][]JobStatus
	// unreach holds the sellers found unreachable, until when they are
	// ranked last (reach.go).
	unreach map[peer.ID]time.Time
	// resuming are the contracts whose runs can be resumed (resume.go).
	resuming map[string]bool
	// svc holds the running services (service_buyer.go).
	svc serviceBook
}

const (
	maxChanges  = 32
	changesKept = time.Minute
)

// NewBuyer returns a buyer; call Start before Submit.
func NewBuyer(cfg BuyerConfig) (*Buyer, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	b := &Buyer{cfg: cfg, id: cfg.Host.ID(), clock: cfg.Clock, log: cfg.Log.With("role", "buyer"),
		jobs: map[string]*JobStatus{}, cancel: map[string]context.CancelCauseFunc{}, done: map[string]chan struct{}{}, rng: cfg.Rand,
		spots: map[string]context.CancelFunc{}, changed: make(chan struct{}), changes: map[string][]JobStatus{}, unreach: map[peer.ID]time.Time{}, resuming: map[string]bool{}}
	// The machine names the role in its own lines: not b.log, or role twice.
	b.machine = NewMachine(cfg.Store, cfg.Timeouts, cfg.Clock.Now, cfg.Log)
	return b, nil
}

// Machine is the buyer's state machine (for listing contracts).
func (b *Buyer) Machine() *Machine { return b.machine }

// Start recovers contracts and jobs a previous run left unfinished: a
// running job of job protocol 1.4.0 whose last sign of life is within
// RestartGrace is resumed (buyerresume.go); any other's stream is gone, so
// its contract fails and its job is marked failed (the user may submit
// again). It also restores the sellers a
// previous run found unreachable and still ranks last (unreach.go).
func (b *Buyer) Start(ctx context.Context) error {
	keep, err := b.resumable()
	if err != nil {
		return fmt.Errorf("start buyer: %w", err)
	}
	if _, err := b.machine.recoverKeeping(keep, RoleBuyer); err != nil {
		return fmt.Errorf("start buyer: %w", err)
	}
	if err := b.loadUnreachable(); err != nil {
		return fmt.Errorf("start buyer: %w", err)
	}
	var resume, services []*JobStatus
	defer func() {
		b.resumeJobs(ctx, resume)
		b.restoreServices(ctx, services) // service_restart.go
	}()
	return b.cfg.Store.Update(func(kv KV) error {
		var fix []*JobStatus
		err := kv.ForEach(bucketJobs, "", func(k string, v []byte) error {
			var j JobStatus
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("job %s: %w", k, err)
			}
			if j.Request.Service != nil && (j.State == JobSearching || j.State == JobRunning) {
				services = append(services, &j) // a service runs until cancelled
			} else if j.State == JobRunning && keep[j.ContractID] {
				resume = append(resume, &j) // resume.go
			} else if j.State == JobSearching || j.State == JobRunning {
				j.State, j.Error = JobFailed, "node restarted"
				fix = append(fix, &j)
			} else if sc := j.SpotCheck; sc != nil && sc.State == SpotRunning {
				cp := *sc
				cp.State, cp.Error = SpotFailed, "node restarted"
				j.SpotCheck = &cp
				fix = append(fix, &j)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, j := range fix {
			if err := putJSON(kv, bucketJobs, j.ID, j); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close cancels running jobs and waits for them to end.
func (b *Buyer) Close() error {
	b.mu.Lock()
	b.closed = true
	for _, c := range b.cancel {
		c(errBuyerStopping) // a resumable run detaches (buyerresume.go)
	}
	for _, c := range b.spots {
		c()
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// Submit validates req, records a new job and runs it in the background.
// It returns the job's ID at once; Wait, Job and Cancel follow it.
func (b *Buyer) Submit(ctx context.Context, req Request) (string, error) {
	if err := req.Validate(); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	// What the buyer can check is checked before any money moves.
	if (req.ImageIsDigest() || len(req.Inputs) > 0) && b.cfg.Blobs == nil {
		return "", errors.New("submit: no blob store for the image tarball and inputs")
	}
	if req.ImageIsDigest() {
		rc, n, err := b.cfg.Blobs.Open(req.Image)
		if err != nil {
			return "", fmt.Errorf("submit: %w", err)
		}
		if b.cfg.CheckImage != nil {
			err = b.cfg.CheckImage(rc)
		}
		rc.Close()
		if err != nil {
			return "", fmt.Errorf("submit: %w: image %s: %w", ErrInvalid, req.Image, err)
		}
		req.ImageSize = uint64(n)
	}
	for _, in := range req.Inputs {
		rc, n, err := b.cfg.Blobs.Open(in.SHA256)
		if err != nil {
			return "", fmt.Errorf("submit: input %s: %w", in.Name, err)
		}
		rc.Close()
		if uint64(n) != in.Size {
			return "", fmt.Errorf("submit: %w: input %s holds %d bytes, the request says %d", ErrInvalid, in.Name, n, in.Size)
		}
	}
	if b.cfg.Precheck != nil {
		pre := req
		if req.Service != nil {
			pre = serviceContractRequest(req) // what each of its contracts proposes
		}
		if err := b.cfg.Precheck(ctx, pre); err != nil {
			return "", err
		}
	}
	idb := make([]byte, 8)
	_, _ = rand.Read(idb)
	now := b.clock.Now()
	j := &JobStatus{ID: hex.EncodeToString(idb), Request: req, State: JobSearching, Phase: "discover", Created: now, Updated: now, phaseAt: now}
	if err := b.save(j); err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	b.track(ctx, j, func(jctx context.Context) {
		if req.Service != nil {
			b.runService(jctx, j, nil)
			return
		}
		b.runJob(jctx, j)
	})
	b.log.Info("job submitted", "job", j.ID, "image", req.Image, "cpu_millis", req.Resources.CPUMillis, "duration", req.Duration)
	return j.ID, nil
}

// track holds job j (its status, changes, cancel and done) and runs it in
// its own goroutine, which outlives the request that started it.
func (b *Buyer) track(ctx context.Context, j *JobStatus, run func(ctx context.Context)) {
	jctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	done := make(chan struct{})
	b.mu.Lock()
	b.jobs[j.ID] = j
	b.changes[j.ID] = []JobStatus{*j}
	b.cancel[j.ID] = cancel
	b.done[j.ID] = done
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(done)
		defer cancel(nil)
		run(jctx)
	}()
}

// Wait blocks until job id ends or ctx is done, and returns its status.
func (b *Buyer) Wait(ctx context.Context, id string) (*JobStatus, error) {
	b.mu.Lock()
	done := b.done[id]
	b.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Job(id)
}

// Cancel stops job id: the seller is told, stops the job and sends what
// there is with a receipt; payments stop.
func (b *Buyer) Cancel(id string) error {
	b.mu.Lock()
	c := b.cancel[id]
	b.mu.Unlock()
	if c == nil {
		if _, err := b.Job(id); err != nil {
			return err
		}
		return nil // already over
	}
	c(errCancelled)
	return nil
}

var errCancelled = fmt.Errorf("%w by the user", ErrCancelled)

// Job returns a job's status.
func (b *Buyer) Job(id string) (*JobStatus, error) {
	b.mu.Lock()
	if j, ok := b.jobs[id]; ok {
		cp := *j
		cp.Attempts = append([]Attempt(nil), j.Attempts...)
		b.mu.Unlock()
		return &cp, nil
	}
	b.mu.Unlock()
	var j *JobStatus
	err := b.cfg.Store.View(func(kv KV) error {
		v := kv.Get(bucketJobs, id)
		if v == nil {
			return fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		j = &JobStatus{}
		return json.Unmarshal(v, j)
	})
	return j, err
}

// Jobs lists every job, oldest first.
func (b *Buyer) Jobs() ([]*JobStatus, error) {
	var out []*JobStatus
	err := b.cfg.Store.View(func(kv KV) error {
		return kv.ForEach(bucketJobs, "", func(k string, v []byte) error {
			var j JobStatus
			if err := json.Unmarshal(v, &j); err != nil {
				return fmt.Errorf("job %s: %w", k, err)
			}
			out = append(out, &j)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	for i, j := range out {
		if live, ok := b.jobs[j.ID]; ok {
			cp := *live
			out[i] = &cp
		}
	}
	b.mu.Unlock()
	slicesSortJobs(out)
	return out, nil
}

func (b *Buyer) update(j *JobStatus, fn func(*JobStatus)) { b.change(j, fn, false) }

// enter moves j to phase, for its watchers only: a phase alone is not
// stored (a commit, two disk syncs, each), since a restart reads a job's
// state and contract, never its phase; the job's next update stores it.
func (b *Buyer) enter(j *JobStatus, phase string) {
	b.changeOnly(j, func(j *JobStatus) { j.Phase = phase }, nil)
}

// change applies fn to job j, saves it (with later, as a LaterStore's
// later change: see updateLater) and tells the job's watchers.
func (b *Buyer) change(j *JobStatus, fn func(*JobStatus), later bool) {
	save := b.save
	if later {
		save = b.saveLater
	}
	b.changeOnly(j, fn, save)
}

// changeOnly is change saving with save (nil: not stored).
func (b *Buyer) changeOnly(j *JobStatus, fn func(*JobStatus), save func(*JobStatus) error) {
	b.mu.Lock()
	from := j.Phase
	fn(j)
	if j.Phase != from {
		b.phaseChange(j, from)
	}
	j.Updated = b.clock.Now()
	cp := *j
	cp.Attempts = append([]Attempt(nil), j.Attempts...)
	b.mu.Unlock()
	if save != nil {
		if err := save(&cp); err != nil {
			b.log.Warn("save job", "job", j.ID, "err", err)
		}
	}
	b.mu.Lock()
	if !cp.shadow {
		h := append(b.changes[cp.ID], cp)
		b.changes[cp.ID] = h[max(len(h)-maxChanges, 0):]
		if cp.State == JobDone || cp.State == JobFailed || cp.State == JobCancelled {
			id := cp.ID
			time.AfterFunc(changesKept, func() {
				b.mu.Lock()
				delete(b.changes, id)
				b.mu.Unlock()
			})
		}
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// WaitChange returns job id as it was at its first change after since (the
// newest state when its earlier ones are no longer kept), or as it is once
// it has ended or ctx is done: a client waits on the job's changes instead
// of polling it, and sees each phase even when it passed in a moment.
func (b *Buyer) WaitChange(ctx context.Context, id string, since time.Time) (*JobStatus, error) {
	for {
		b.mu.Lock()
		changed := b.changed
		for _, st := range b.changes[id] {
			if st.Updated.After(since) {
				b.mu.Unlock()
				st.Attempts = append([]Attempt(nil), st.Attempts...)
				return &st, nil
			}
		}
		b.mu.Unlock()
		j, err := b.Job(id)
		if err != nil || j.Updated.After(since) || j.State == JobDone || j.State == JobFailed || j.State == JobCancelled {
			return j, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return j, nil
		}
	}
}

func (b *Buyer) save(j *JobStatus) error {
	if j.shadow {
		return nil
	}
	return b.cfg.Store.Update(func(kv KV) error { return putJSON(kv, bucketJobs, j.ID, j) })
}

// outcome of one attempt.
type outcome int

const (
	outDone      outcome = iota // finished with a verified receipt
	outRefused                  // the seller said no; try another
	outFailed                   // a contract broke; try another seller
	outCancelled                // the user cancelled
	outDetached                 // the node stops; the run resumes at its next start
)

func (o outcome) String() string {
	switch o {
	case outDone:
		return "done"
	case outRefused:
		return "refused"
	case outFailed:
		return "failed"
	case outCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// sellerRefusal is a seller's reject or counter, as the buyer's error.
type sellerRefusal struct {
	seller  peer.ID
	reason  Reason
	msg     string
	counter bool
	// retryAfter is the seller's hint of when it has room again.
	retryAfter time.Duration
}

func (r *sellerRefusal) Error() string {
	if r.counter {
		return fmt.Sprintf("seller %s countered (%s)", r.seller, r.reason)
	}
	return fmt.Sprintf("seller %s rejected: %s %s", r.seller, r.reason, r.msg)
}

// refusalReason is what a refusal is about, without the details that vary
// from one retry to the next.
func refusalReason(err error) string {
	var r *sellerRefusal
	if errors.As(err, &r) {
		return fmt.Sprintf("%t %s", r.counter, r.reason)
	}
	return err.Error()
}

func (b *Buyer) runJob(ctx context.Context, j *JobStatus) {
	out, err := b.seek(ctx, j, map[peer.ID]bool{}, b.cfg.MaxAttempts)
	switch {
	case out == outDone:
		b.update(j, func(j *JobStatus) { j.State, j.Phase = JobDone, "" })
		b.maybeSpotCheck(j)
	case out == outDetached:
		// The node stops: the job stays running, for the next start.
	case out == outCancelled || context.Cause(ctx) == errCancelled:
		b.update(j, func(j *JobStatus) { j.State, j.Phase, j.Error = JobCancelled, "", "cancelled" })
	default:
		b.update(j, func(j *JobStatus) { j.State, j.Phase, j.Error = JobFailed, "", err.Error() })
	}
}

// seek runs j's request on the best-ranked sellers not in tried (which it
// extends with the sellers that failed), one contract at a time, until one
// completes (outDone), the user cancels (outCancelled), or maxAttempts
// contracts failed, the rounds ran out or the buyer itself failed
// (outFailed, with the last error).
//
// The request's MaxPrice is what the whole job may cost: every attempt is
// offered, and ranked by, only what earlier attempts left of it.
func (b *Buyer) seek(ctx context.Context, j *JobStatus, tried map[peer.ID]bool, maxAttempts int) (outcome, error) {
	attempts := 0
	var lastErr error
	// The rounds wait RetryBackoff each, (Rounds-1)×RetryBackoff in all;
	// a round whose sellers said when they have room again (retry-after)
	// waits the shortest of that instead, and the rounds last as long.
	var waited, hint time.Duration
	limit := time.Duration(b.cfg.Rounds-1) * b.cfg.RetryBackoff
	for round := 0; attempts < maxAttempts; round++ {
		if round > 0 {
			if waited >= limit {
				break
			}
			b.mu.Lock()
			w := nextWait(hint, b.cfg.RetryBackoff, b.rng.Int64N)
			b.mu.Unlock()
			waited += w
			select {
			case <-ctx.Done():
			case <-b.clock.After(w):
			}
		}
		hint = 0
		if ctx.Err() != nil {
			break
		}
		req, err := b.budget(j)
		if err != nil {
			lastErr = joinLast(err, lastErr)
			break
		}
		if !req.Deadline.IsZero() && !b.clock.Now().Before(req.Deadline) {
			lastErr = fmt.Errorf("deadline %s passed: %w", req.Deadline.Format(time.RFC3339), errOrNone(lastErr))
			break
		}
		b.enter(j, "discover")
		fctx, fcancel := ctx, context.CancelFunc(func() {})
		if j.findWithin > 0 {
			fctx, fcancel = context.WithTimeout(ctx, j.findWithin)
		}
		offers, err := b.cfg.Find(fctx, offer.Filter{Min: req.Resources, Region: req.Region, Runtime: req.Runtime, Network: b.cfg.Network, Limit: req.Limit})
		fcancel()
		if err != nil {
			lastErr = fmt.Errorf("discover: %w", err)
			continue
		}
		rtt := func(p peer.ID) time.Duration { return b.cfg.Host.Peerstore().LatencyEWMA(p) }
		b.mu.Lock()
		cands := b.behindUnreachable(Rank(offers, &req, b.cfg.Reputation, rtt, purposeOf(j), b.rng))
		b.mu.Unlock()
		if len(cands) == 0 {
			lastErr = b.noMatch(j, &req, offers)
		}
		for _, c := range cands {
			if tried[c.Seller] || c.Seller == b.id || j.exclude != nil && j.exclude(c.Seller) {
				continue
			}
			if attempts >= maxAttempts || ctx.Err() != nil {
				break
			}
			// An attempt earlier in this round may have spent some of
			// the budget.
			req, err := b.budget(j)
			if err != nil {
				return outFailed, joinLast(err, lastErr)
			}
			if req.MaxPrice > 0 && uint64(c.Terms.Total) > req.MaxPrice {
				continue
			}
			out, err := b.attempt(ctx, j, req, c)
			if out == outFailed && b.learnedClose(ctx, c.Seller, err) {
				// The seller had closed the channel this node took for
				// open (its close not yet in a block): once more, on
				// another channel.
				out, err = b.attempt(ctx, j, req, c)
			} else if out == outFailed && errors.Is(err, errHeldAdopted) {
				// This node had lost the channel's latest update (a
				// crash as it paid) and paid on the state before it:
				// once more, on top of the update the seller holds.
				out, err = b.attempt(ctx, j, req, c)
			}
			if errors.Is(err, errNoCarrier) {
				// Not tried again for this job, and not counted as a
				// contract that failed: nothing was at stake.
				tried[c.Seller] = true
			}
			switch out {
			case outDone, outCancelled, outDetached:
				return out, err
			case outFailed:
				attempts++
				tried[c.Seller] = true
				if FaultOf(err) == FaultBuyer {
					// This node's own failure: every seller would see it.
					return outFailed, err
				}
			}
			lastErr = err
			if r := (*sellerRefusal)(nil); errors.As(err, &r) && r.retryAfter > 0 && (hint == 0 || r.retryAfter < hint) {
				hint = r.retryAfter
			}
			lvl := slog.LevelInfo
			if out == outRefused {
				// A busy seller refuses every retry: once per reason.
				lvl = b.refusals.level(j.ID+" "+c.Seller.String(), refusalReason(err))
			}
			b.log.Log(ctx, lvl, "attempt ended", "job", j.ID, "peer", c.Seller, "outcome", out, "fault", FaultOf(err), "err", err)
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no seller took the job")
	}
	return outFailed, lastErr
}

// budget returns j's request with MaxPrice cut to what the job's earlier
// attempts left of it, or an error when nothing is left.
func (b *Buyer) budget(j *JobStatus) (Request, error) {
	b.mu.Lock()
	req, paid, n := j.Request, j.Paid, len(j.Attempts)
	b.mu.Unlock()
	if req.MaxPrice == 0 || paid <= 0 {
		return req, nil
	}
	if uint64(paid) >= req.MaxPrice {
		return req, fmt.Errorf("the job's max price of %d sat is spent: %d sat paid over %d attempt(s)", req.MaxPrice, paid, n)
	}
	req.MaxPrice -= uint64(paid)
	return req, nil
}

// noMatch explains an empty ranking: the budget left, and the sellers
// this node's reputation book blocks (which market still lists).
func (b *Buyer) noMatch(j *JobStatus, req *Request, offers []*offer.Offer) error {
	msg := "no offer matches the request"
	if req.MaxPrice < j.Request.MaxPrice {
		msg += fmt.Sprintf(" within the %d sat left of its max price of %d sat", req.MaxPrice, j.Request.MaxPrice)
	}
	bl, ok := b.cfg.Reputation.(Blocker)
	if !ok {
		return errors.New(msg)
	}
	var blocked []string
	seen := map[peer.ID]bool{}
	for _, o := range offers {
		if o == nil || seen[o.Seller] || o.Seller == b.id {
			continue
		}
		seen[o.Seller] = true
		if bl.Blocked(o.Seller) {
			blocked = append(blocked, o.Seller.String())
		}
	}
	if len(blocked) == 0 {
		return errors.New(msg)
	}
	sort.Strings(blocked)
	return fmt.Errorf("%s (skipped %d seller(s) you have blocked: %s; `blackbox reputation PEER` says why, `blackbox reputation forget PEER` lifts the block)",
		msg, len(blocked), strings.Join(blocked, ", "))
}

// joinLast adds the last attempt's error, if any, to err.
func joinLast(err, last error) error {
	if last == nil {
		return err
	}
	return fmt.Errorf("%w (last attempt: %w)", err, last)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// attempt tries one seller with req (the job's request within what is
// left of its budget): negotiate, fund, transfer, run, results. A contract
// made is reported to the reputation book once, when it ends, with the
// fault its end shows.
func (b *Buyer) attempt(ctx context.Context, j *JobStatus, req Request, c Candidate) (outcome, error) {
	now := b.clock.Now()
	p := &Proposal{Version: Version, Buyer: b.id, Seller: c.Seller, OfferSeq: c.Offer.Seq, Request: req,
		Interval: c.Terms.Interval, Price: c.Terms.Price, StartFee: c.Terms.StartFee,
		PaymentKey: b.payKey.get(b.cfg.PaymentKey), Nonce: newNonce(), Issued: now, Expiry: now.Add(time.Minute), Network: b.cfg.Network}
	b.enter(j, "negotiate")
	d, ct, err := b.negotiate(ctx, j, p, true)
	if err != nil || d == nil {
		if ctx.Err() != nil {
			return outCancelled, err
		}
		return outRefused, err
	}
	p = ct.Proposal
	id := ct.ID
	b.update(j, func(j *JobStatus) {
		j.Seller, j.ContractID = c.Seller, id
		j.Attempts = append(j.Attempts, Attempt{Seller: c.Seller, ContractID: id, State: StateAccepted,
			Price: p.Total(), StartFee: int64((p.StartFee + 999) / 1000)})
	})
	limited, err := b.reach(ctx, c.Seller, NeedOf(p, b.cfg.MaxOutputBytes))
	if err != nil {
		return b.unreachable(ctx, j, ct, err)
	}
	b.mu.Lock()
	base := j.Paid
	b.mu.Unlock()
	run := &buyerRun{b: b, j: j, ct: ct, seller: c.Seller, base: base, limited: limited, egressMax: c.Offer.Prices.EgressGiB}
	out, err := run.do(ctx)
	if cp, ok := b.cfg.Payer.(ContractPayer); ok && out != outDetached {
		// What the contract did not spend is free for the next.
		cp.Release(c.Seller, id)
	}
	b.contractEnded(j, id, out)
	out, fault, state := b.endRun(ctx, run, id, out, err)
	var je *JobError
	refusedReach := errors.As(err, &je) && je.Reason == RefuseUnreachable
	if refusedReach {
		b.markUnreachable(c.Seller)
	}
	b.update(j, func(j *JobStatus) {
		a := &j.Attempts[len(j.Attempts)-1]
		a.State, a.Paid, a.Why, a.Fault = state, run.paid, errString(err), fault
		if refusedReach {
			a.Reason = ReasonUnreachable
		}
		if r := fundingReason(err); r != ReasonNone {
			a.Reason = r
		}
		j.Paid = base + run.paid
	})
	if out != outDetached {
		b.cfg.Reputation.Outcome(c.Seller, id, fault)
	}
	if run.adopted {
		err = &heldAdoptedError{err}
	}
	return out, err
}

// endRun records how a contract's run ended: its fault (the error's, else
// the run's), a failed run's contract moved to failed with what was paid
// (cancelled when ctx was), and the contract's state now.
func (b *Buyer) endRun(ctx context.Context, run *buyerRun, id string, out outcome, err error) (outcome, Fault, State) {
	fault := FaultOf(err)
	if err == nil {
		fault = run.fault
	}
	if out == outFailed {
		if ctx.Err() != nil {
			out, fault = outCancelled, FaultCancelled
		}
		if out == outFailed && b.learnedHeld(ctx, run.seller, err) {
			// The seller refused a payment built on a channel state this
			// node had lost the latest update of: this node's doing,
			// never evidence against the seller.
			run.adopted, fault = true, FaultBuyer
		}
		if _, merr := b.machine.Move(RoleBuyer, id, StateFailed, truncate(errString(err), 200), func(r *Record) { r.Paid = run.paid }); merr != nil {
			b.log.Debug("fail contract", "contract", id, "err", merr)
		}
	}
	state := StateFailed
	if r, gerr := b.machine.Get(RoleBuyer, id); gerr == nil {
		state = r.State
	}
	return out, fault, state
}

// negotiate proposes p and, on a price counter within the budget, once
// more at the seller's price. It returns the contract on acceptance.
func (b *Buyer) negotiate(ctx context.Context, j *JobStatus, p *Proposal, mayCounter bool) (*Decision, *Contract, error) {
	env, err := SignProposal(p, b.cfg.Key)
	if err != nil {
		return nil, nil, err
	}
	id := p.ID()
	if err := b.machine.Create(&Record{ID: id, Role: RoleBuyer, Peer: p.Seller, State: StateProposed, Proposal: p, Job: j.ID}); err != nil {
		return nil, nil, err
	}
	d, denv, err := Propose(ctx, b.cfg.Host, p.Seller, env, b.clock.Now)
	if err != nil {
		_, _ = b.machine.Move(RoleBuyer, id, StateExpired, "no answer", nil)
		return nil, nil, err
	}
	if d.ProposalID != "" && d.ProposalID != id {
		_, _ = b.machine.Move(RoleBuyer, id, StateRejected, "answer to another proposal", nil)
		return nil, nil, fmt.Errorf("%w: decision for another proposal", ErrInvalid)
	}
	switch d.Verdict {
	case Accept:
		ct := &Contract{ID: id, Proposal: p, Acceptance: d, ProposalEnv: env, AcceptanceEnv: denv}
		if _, err := b.machine.Move(RoleBuyer, id, StateAccepted, "accepted", func(r *Record) { r.Contract = ct.Marshal() }); err != nil {
			return nil, nil, err
		}
		return d, ct, nil
	case Counter:
		_, _ = b.machine.Move(RoleBuyer, id, StateRejected, "counter: "+string(d.Reason), nil)
		if mayCounter && d.Reason == ReasonPrice && d.CounterDur == 0 {
			q := *p
			q.Price, q.Nonce = d.CounterPrice, newNonce()
			if p.Request.MaxPrice == 0 || uint64(q.Total()) <= p.Request.MaxPrice {
				return b.negotiate(ctx, j, &q, false)
			}
		}
		return nil, nil, &sellerRefusal{seller: p.Seller, reason: d.Reason, counter: true}
	default:
		reason, msg := d.Reason, d.Message
		if r, m, ok := olderSeller(d); ok {
			reason, msg = r, m
		}
		_, _ = b.machine.Move(RoleBuyer, id, StateRejected, string(reason), nil)
		return nil, nil, &sellerRefusal{seller: p.Seller, reason: reason, msg: msg, retryAfter: d.RetryAfter}
	}
}

// buyerJobProtocols are the job protocol versions the buyer offers, newest
// first (a test speaks as an older buyer by shortening it).
var buyerJobProtocols = []protocol.ID{JobProtocol, JobProtocol13, JobProtocol12, JobProtocol11}

type buyerRun struct {
	b *Buyer
	// adopted: the run failed on a payment the seller refused because
	// this node had lost the channel's latest update, which it has now
	// adopted from the refusal (learnedHeld): the job may be tried again.
	adopted bool
	j       *JobStatus
	ct      *Contract
	seller  peer.ID
	paid    int64 // this contract's cumulative payment
	base    int64 // what earlier attempts of the job paid
	st      network.Stream
	c       *conn
	// fault is how a contract that ended with a receipt went (finish).
	fault Fault
	// limited: the job stream may use a relayed connection whose limits
	// fit the contract (reach).
	limited bool
	// egressMax is the egress price of the offer the buyer chose, and
	// egressPrice the seller's in its Ready (1.3.0), msat per GiB.
	egressMax, egressPrice uint64
	// sentBytes is what the buyer sent of the image and inputs (jBlob
	// payloads), billed in a 1.3.0 job (egress.go).
	sentBytes uint64
	// bill is the seller's bill of a 1.3.0 job (egress.go), once it came.
	bill *Bill
	// addrs are where the seller was reached, for a resumed stream
	// (buyerresume.go).
	addrs []string
	// resumed: the stream was resumed at least once (the seller may have
	// restarted, losing count of a service's last forwarded bytes).
	resumed bool
}

// openStream opens the job stream to the seller, offering protos.
func (r *buyerRun) openStream(ctx context.Context, protos []protocol.ID) (network.Stream, error) {
	st, err := r.b.cfg.Host.NewStream(ctx, r.seller, protos...)
	if err != nil {
		return nil, withFault(FaultUnreachable, fmt.Errorf("open job stream: %w", err))
	}
	if err := setupStream(st, jobMemory, time.Now().Add(r.b.cfg.Timeouts.withDefaults().Start)); err != nil {
		st.Reset()
		return nil, buyerFault(err)
	}
	r.st, r.c = st, newConn(st)
	return st, nil
}

// renegotiate mends a job stream that was negotiated lazily on what the
// peerstore said the seller speaks, when identify was stale (a seller
// downgraded, or a push came late): the seller refused the protocol
// before reading a frame. The refusal comes back as "not supported", or,
// when the seller resets the stream as it reads the hello as a protocol
// name, as a reset. The stream is opened again with its version settled
// with the seller before the hello is sent again, and the versions it
// refused are forgotten. A reset on a version the seller does speak was
// the seller's own: the attempt fails as before. rb and err are what the
// first stream's wait for the seller's ready returned.
func (r *buyerRun) renegotiate(ctx context.Context, hello, open, rb []byte, err error) ([]byte, error) {
	unsupported := msmux.ErrNotSupported[protocol.ID]{}
	refused := errors.As(err, &unsupported)
	if !refused && !errors.Is(err, network.ErrReset) {
		return rb, err
	}
	first := r.st.Protocol()
	r.st.Reset()
	r.st.Scope().ReleaseMemory(jobMemory)
	r.st = nil
	st, serr := r.openSettled(ctx)
	switch {
	case serr != nil:
		return nil, serr
	case !refused && st.Protocol() == first:
		return nil, err // the seller speaks it: the reset was its own
	}
	if err := r.c.send(jHello, hello); err != nil {
		return nil, withFault(FaultUnreachable, fmt.Errorf("send contract: %w", err))
	}
	if err := r.c.send(jOpen, open); err != nil {
		return nil, sellerGone(fmt.Errorf("send channel open: %w", err))
	}
	return r.awaitReady()
}

// openSettled opens the run's job stream with its version agreed with
// the seller before anything is written, whatever the peerstore says;
// the versions the seller refused on the way are forgotten.
func (r *buyerRun) openSettled(ctx context.Context) (network.Stream, error) {
	h := r.b.cfg.Host
	deadline := time.Now().Add(r.b.cfg.Timeouts.withDefaults().Start)
	st, err := h.Network().NewStream(ctx, r.seller)
	if err != nil {
		return nil, withFault(FaultUnreachable, fmt.Errorf("open job stream: %w", err))
	}
	_ = st.SetDeadline(deadline)
	proto, err := msmux.SelectOneOf(buyerJobProtocols, st)
	if err == nil {
		err = st.SetProtocol(proto)
	}
	if err != nil {
		st.Reset()
		return nil, withFault(FaultUnreachable, fmt.Errorf("open job stream: seller %s: %w", r.seller, err))
	}
	_ = h.Peerstore().RemoveProtocols(r.seller, buyerJobProtocols[:slices.Index(buyerJobProtocols, proto)]...)
	if err := setupStream(st, jobMemory, deadline); err != nil {
		st.Reset()
		return nil, buyerFault(err)
	}
	r.st, r.c = st, newConn(st)
	return st, nil
}

// expect reads the seller's next frame, which must be typ: a refusal
// comes back as a *JobError marked with its reason's fault, a broken
// stream as the seller gone.
func (r *buyerRun) expect(typ byte, what string) ([]byte, error) {
	t, b, err := r.c.recv(maxCtlFrame)
	switch {
	case err != nil:
		return nil, sellerGone(fmt.Errorf("%s: seller %s: stream broke: %w", what, r.seller, err))
	case t == frameError:
		je := UnmarshalJobError(b)
		return nil, withFault(je.Reason.Fault(), fmt.Errorf("%s: %w", what, je))
	case t != typ:
		return nil, sellerFault(fmt.Errorf("%s: %w: frame %d, want %d", what, ErrMalformed, t, typ))
	}
	return b, nil
}

func (r *buyerRun) do(ctx context.Context) (outcome, error) {
	b, p, id := r.b, r.ct.Proposal, r.ct.ID
	b.enter(r.j, "fund")
	sctx := ctx
	if r.limited {
		sctx = network.WithAllowLimitedConn(ctx, "blackbox job: the relay's limits fit the contract")
	}
	st, err := r.openStream(sctx, buyerJobProtocols)
	if err != nil {
		return outFailed, err
	}
	// Whatever happens, a stream left open by an error is reset.
	ok := false
	defer func() {
		switch {
		case st == nil:
		case !ok:
			st.Reset()
			st.Scope().ReleaseMemory(jobMemory)
		default:
			st.Close()
			st.Scope().ReleaseMemory(jobMemory)
		}
	}()
	hello := r.ct.Marshal()
	if err := r.c.send(jHello, hello); err != nil {
		return outFailed, withFault(FaultUnreachable, fmt.Errorf("send contract: %w", err))
	}
	open, err := b.prepare(ctx, r.ct)
	if err != nil {
		return outFailed, buyerFault(fmt.Errorf("prepare channel: %w", err))
	}
	if err := r.c.send(jOpen, open); err != nil {
		return outFailed, sellerGone(fmt.Errorf("send channel open: %w", err))
	}
	rb, err := r.awaitReady()
	rb, err = r.renegotiate(sctx, hello, open, rb, err)
	st = r.st // the stream renegotiate left, or none
	if err != nil {
		return outFailed, err
	}
	var ready Ready
	if hasReady(st.Protocol()) {
		if ready, err = unmarshalReady(rb); err != nil {
			return outFailed, sellerFault(fmt.Errorf("seller not ready: %w", err))
		}
	}
	if billsEgress(st.Protocol()) {
		// Nothing is sent or paid at an egress price above the offer's.
		if ready.EgressPrice > r.egressMax {
			return outFailed, sellerFault(fmt.Errorf("%w: seller asks %d msat/GiB of egress, its offer said %d", ErrInvalid, ready.EgressPrice, r.egressMax))
		}
		r.egressPrice = ready.EgressPrice
	}
	if _, err := b.machine.Move(RoleBuyer, id, StateFunded, "channel ready", nil); err != nil {
		return outFailed, buyerFault(err)
	}
	b.enter(r.j, "transfer")
	if err := r.sendBlobs(ready.HaveImage); err != nil {
		return outFailed, err
	}
	// Nothing is paid until the seller took the image and inputs.
	if _, err := r.expect(jReceived, "transfer"); err != nil {
		return outFailed, err
	}
	if err := r.pay(ctx, 1); err != nil {
		return outFailed, err
	}
	if _, err := r.expect(jAck, "first payment"); err != nil {
		return outFailed, err
	}
	if _, err := b.machine.Move(RoleBuyer, id, StateRunning, "first interval paid", func(rec *Record) {
		rec.Paid, rec.Intervals, rec.Started = r.paid, 1, b.clock.Now()
	}); err != nil {
		return outFailed, buyerFault(err)
	}
	_ = st.SetDeadline(time.Now().Add(p.Request.Duration + b.machine.timeouts.RunGrace + time.Minute))
	b.update(r.j, func(j *JobStatus) { j.State, j.Phase, j.Intervals = JobRunning, "run", 1 })
	r.saveResume()
	out, err := r.loop(ctx)
	ok = err == nil
	return out, err
}

// sendBlobs sends the image (shipped by digest, unless the seller has it)
// and the inputs, and counts the bytes sent in r.sentBytes.
func (r *buyerRun) sendBlobs(sellerHasImage bool) error {
	req := &r.ct.Proposal.Request
	var digests []string
	if req.ImageIsDigest() && !sellerHasImage {
		digests = append(digests, req.Image)
	}
	for _, in := range req.Inputs {
		digests = append(digests, in.SHA256)
	}
	buf := make([]byte, chunkSize)
	for _, d := range digests {
		rc, _, err := r.b.cfg.Blobs.Open(d)
		if err != nil {
			return buyerFault(fmt.Errorf("send blob: %w", err))
		}
		for {
			n, err := rc.Read(buf)
			if n > 0 {
				if serr := r.c.send(jBlob, buf[:n]); serr != nil {
					rc.Close()
					return sellerGone(fmt.Errorf("send blob %s: %w", d, serr))
				}
				r.sentBytes += uint64(n)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				rc.Close()
				return buyerFault(fmt.Errorf("read blob %s: %w", d, err))
			}
		}
		rc.Close()
		if err := r.c.send(jBlobEnd, nil); err != nil {
			return sellerGone(fmt.Errorf("send blob %s: %w", d, err))
		}
	}
	return nil
}

// pay brings the contract's total to what n intervals owe.
func (r *buyerRun) pay(ctx context.Context, n uint64) error {
	return r.payTotal(ctx, r.ct.Proposal.Owed(n), n, fmt.Sprintf("interval %d", n))
}

// payTotal brings the contract's cumulative payment to total (n is the
// intervals it covers, for the record).
func (r *buyerRun) payTotal(ctx context.Context, total int64, n uint64, what string) error {
	if total <= r.paid {
		return nil
	}
	var u []byte
	var err error
	durable := func() error { return nil }
	if ap, ok := r.b.cfg.Payer.(AsyncPayer); ok {
		// Sent while our own write of it runs (AsyncPayer).
		u, durable, err = ap.PayAsync(ctx, r.seller, r.ct.ID, total)
	} else {
		u, err = r.b.cfg.Payer.Pay(ctx, r.seller, r.ct.ID, total)
	}
	if err != nil {
		return buyerFault(fmt.Errorf("pay %s: %w", what, err))
	}
	sendErr := r.c.send(jPay, u)
	if err := durable(); err != nil {
		return buyerFault(fmt.Errorf("pay %s: %w", what, err))
	}
	r.paid = total
	// The channel update is durable: the job's and the contract's record
	// of it follow a moment later, off the way to the seller (the node's
	// start raises them to the channel's totals after a crash).
	r.b.updateLater(r.j, func(j *JobStatus) { j.Paid = r.base + total })
	if err := r.b.machine.NotePaid(RoleBuyer, r.ct.ID, total, n); err != nil {
		r.b.log.Warn("record payment", "contract", r.ct.ID, "err", err)
	}
	if sendErr != nil {
		return sellerGone(fmt.Errorf("send payment for %s: %w", what, sendErr))
	}
	return nil
}

// payBill checks a 1.3.0 seller's bill against what the buyer received,
// what it sent and the price the seller said, and pays it up to the job's max price.
func (r *buyerRun) payBill(ctx context.Context, b []byte, received uint64, delivered uint64) error {
	if !billsEgress(r.st.Protocol()) {
		return sellerFault(fmt.Errorf("%w: unexpected bill", ErrMalformed))
	}
	bl, err := unmarshalBill(b)
	if err != nil {
		return sellerFault(err)
	}
	if r.bill != nil {
		if *r.bill == bl {
			return nil // sent again on a resumed stream: paid already
		}
		return sellerFault(fmt.Errorf("%w: a second, different bill", ErrMalformed))
	}
	p := r.ct.Proposal
	switch {
	case bl.EgressPrice != r.egressPrice:
		return sellerFault(fmt.Errorf("%w: bill at %d msat/GiB, the seller said %d", ErrInvalid, bl.EgressPrice, r.egressPrice))
	case r.billBytesOK(bl, received) != nil:
		return r.billBytesOK(bl, received)
	case bl.Intervals > p.Intervals() || bl.Total > p.Owed(bl.Intervals)+bl.Egress:
		return sellerFault(fmt.Errorf("%w: bill of %d sat for %d interval(s) and %d sat of bytes moved", ErrInvalid, bl.Total, bl.Intervals, bl.Egress))
	}
	r.bill = &bl
	total := bl.Total
	if limit := p.Request.MaxPrice; limit > 0 && uint64(total) > limit {
		total = int64(limit) // the job's cap: the seller gets no more
	}
	r.b.log.Info("bytes moved billed", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "egress_bytes", bl.EgressBytes, "ingress_bytes", bl.IngressBytes, "egress_sats", bl.Egress, "total_sats", bl.Total, "paying_sats", max(total, r.paid))
	if err := r.payTotal(ctx, total, max(bl.Intervals, delivered), "the bill (egress)"); err != nil {
		if FaultOf(err) != FaultBuyer {
			return err
		}
		// The job ran and its results came: a bill this node cannot pay
		// (its channel holds too little) is paid as far as it was, and
		// the receipt bills no more than that.
		r.b.log.Warn("bill not paid in full", "job", r.j.ID, "contract", r.ct.ID, "peer", r.seller, "total_sats", total, "paid_sats", r.paid, "err", err)
	}
	return nil
}

func stateOf(b *Buyer, id string) State {
	if r, err := b.machine.Get(RoleBuyer, id); err == nil {
		return r.State
	}
	return 0
}

type resultFile struct {
	f *os.File
	h hash.Hash
	n int64
}

// finish checks the receipt against what came and settles the contract
// (or disputes it). It sets r.fault to how the contract went.
func (r *buyerRun) finish(dir string, env []byte, files map[byte]*resultFile, cancelled bool) (outcome, error) {
	b, id := r.b, r.ct.ID
	rc, err := OpenReceipt(env, b.clock.Now())
	if err != nil {
		return outFailed, sellerFault(fmt.Errorf("receipt: %w", err))
	}
	if rc.ContractID != id || rc.Seller != r.seller || rc.Buyer != b.id {
		return outFailed, sellerFault(fmt.Errorf("%w: receipt for another contract", ErrInvalid))
	}
	if err := os.WriteFile(filepath.Join(dir, "receipt"), env, 0o600); err != nil {
		return outFailed, buyerFault(fmt.Errorf("save receipt: %w", err))
	}
	names := map[string]byte{OutputStdout: jStdout, OutputStderr: jStderr, OutputTar: jOutput}
	var bad string
	for _, o := range rc.Outputs {
		typ, ok := names[o.Name]
		if !ok {
			continue
		}
		got := "sha256:" + hex.EncodeToString(files[typ].h.Sum(nil))
		if got != o.SHA256 || uint64(files[typ].n) != o.Size {
			bad = o.Name
		}
	}
	if _, err := b.machine.Move(RoleBuyer, id, StateCompleted, rc.Reason, func(rec *Record) {
		rec.Receipt, rec.Ended = env, b.clock.Now()
		rec.Paid = max(rec.Paid, r.paid) // NotePaid's may not be on disk yet
	}); err != nil {
		return outFailed, buyerFault(err)
	}
	var moved uint64
	if r.bill != nil {
		moved, _ = r.bill.Moved() // unmarshalBill refused an overflow
	}
	if r.bill != nil && rc.EgressBytes != moved || r.bill == nil && !r.unbilledEgressOK(rc, received(files)) {
		bad = "egress"
	}
	settle, why := StateSettled, "receipt verified"
	if bad != "" || rc.Billed > r.paid {
		settle, why = StateDisputed, "receipt does not match: "+bad
	}
	if _, err := b.machine.Move(RoleBuyer, id, settle, why, nil); err != nil {
		return outFailed, buyerFault(err)
	}
	b.update(r.j, func(j *JobStatus) {
		j.Receipt, j.Billed, j.ExitCode, j.ResultDir, j.Intervals = rc, rc.Billed, rc.ExitCode, dir, rc.Intervals
	})
	b.log.Info("job finished", "job", r.j.ID, "contract", id, "peer", r.seller, "reason", rc.Reason, "exit", rc.ExitCode, "billed_sats", rc.Billed)
	switch {
	case settle == StateDisputed:
		r.fault = FaultSellerLied
	case rc.Reason == "error" || rc.Reason == "killed":
		// The sandbox failed, or the seller stopped the job itself (it
		// was shutting down).
		r.fault = FaultSeller
	case rc.Reason == "unpaid":
		// The seller stopped because this node's payment was late.
		r.fault = FaultBuyer
	default:
		r.fault = FaultNone
	}
	if cancelled {
		return outCancelled, nil
	}
	if rc.Reason == "killed" {
		// It is paid for what it delivered, and the job goes elsewhere.
		return outFailed, sellerFault(fmt.Errorf("seller %s killed the job", r.seller))
	}
	if settle == StateDisputed {
		return outDone, withFault(FaultSellerLied, fmt.Errorf("receipt disputed: %s", why))
	}
	return outDone, nil
}

func errOrNone(err error) error {
	if err == nil {
		return errors.New("no seller took the job")
	}
	return err
}

// unreachable ends an accepted contract whose seller the buyer could not
// hold a connection to that carries it: before anything is funded, paid or
// sent. The contract expires on the buyer's side, the seller is told to
// release its reservation (its funding deadline does it otherwise), the
// seller is ranked last for UnreachableFor (no reputation evidence: the
// network may be this node's), and the job goes to the next seller.
func (b *Buyer) unreachable(ctx context.Context, j *JobStatus, ct *Contract, err error) (outcome, error) {
	seller, id := ct.Proposal.Seller, ct.ID
	state := StateExpired
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	if _, merr := b.machine.Move(RoleBuyer, id, StateExpired, truncate(err.Error(), 200), nil); merr != nil {
		b.log.Debug("expire contract", "contract", id, "err", merr)
		state = stateOf(b, id)
	}
	b.update(j, func(j *JobStatus) {
		a := &j.Attempts[len(j.Attempts)-1]
		a.State, a.Why, a.Fault, a.Reason = state, errString(err), FaultUnreachable, ReasonUnreachable
		if ctx.Err() != nil {
			a.Fault, a.Reason = FaultCancelled, ReasonNone
		}
	})
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
	defer cancel()
	if werr := Withdraw(wctx, b.cfg.Host, seller, id); werr != nil {
		b.log.Debug("withdraw contract", "contract", id, "peer", seller, "err", werr)
	}
	if ctx.Err() != nil {
		return outCancelled, err
	}
	b.markUnreachable(seller)
	b.log.Info("seller unreachable: nothing funded, trying the next", "job", j.ID, "contract", id, "peer", seller, "reason", ReasonUnreachable)
	return outRefused, err
}
