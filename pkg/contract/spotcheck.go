package contract

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// SpotChecker is optional for a Reputation: it decides which of a buyer's
// deterministic jobs are spot-checked, and learns how the checks came out.
// A Reputation without it (Neutral) never spot-checks.
type SpotChecker interface {
	// ShouldSpotCheck reports whether the deterministic job seller just
	// completed should run again on another seller.
	ShouldSpotCheck(seller peer.ID) bool
	// SpotCheckResult gets every completed run of one spot-checked job, the
	// job's own first; the checker decides by majority which sellers
	// delivered wrong output. It must not block.
	SpotCheckResult(results []SpotOutcome)
}

// SpotOutcome is one seller's completed run of a spot-checked job.
type SpotOutcome struct {
	Seller     peer.ID `json:"seller"`
	ContractID string  `json:"contract_id"`
	// Digest covers the stdout and out.tar digests of the seller's signed
	// receipt (OutputDigest).
	Digest string `json:"digest"`
}

// Spot check states and verdicts.
const (
	SpotRunning = "running"
	SpotDone    = "done"
	SpotFailed  = "failed" // a re-run could not complete; no verdict

	VerdictMatch     = "match"
	VerdictMismatch  = "mismatch"  // a majority agreed; Mismatched disagreed
	VerdictUndecided = "undecided" // no digest has a majority
)

// SpotCheck is how a job's spot check went. Its runs are paid like any
// contract (each within the request's MaxPrice) and kept apart from the
// job: results in ResultDir/<contract id>/ of each run, never the job's.
type SpotCheck struct {
	State      string        `json:"state"`
	Runs       []SpotOutcome `json:"runs"`
	Verdict    string        `json:"verdict,omitempty"`
	Mismatched []peer.ID     `json:"mismatched,omitempty"`
	Paid       int64         `json:"paid_sat"`
	Error      string        `json:"error,omitempty"`
}

// OutputDigest is the digest a spot check compares: the receipt's stdout
// and out.tar digests and sizes ("" when the receipt names neither).
func OutputDigest(rc *Receipt) string {
	var lines []string
	for _, o := range rc.Outputs {
		if o.Name == OutputStdout || o.Name == OutputTar {
			lines = append(lines, fmt.Sprintf("%s %s %d\n", o.Name, o.SHA256, o.Size))
		}
	}
	if len(lines) == 0 {
		return ""
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// verdict is the strict-majority decision over runs.
func verdict(runs []SpotOutcome) (string, []peer.ID) {
	votes := map[string]int{}
	for _, r := range runs {
		votes[r.Digest]++
	}
	win := ""
	for d, n := range votes {
		if n*2 > len(runs) {
			win = d
		}
	}
	if win == "" {
		return VerdictUndecided, nil
	}
	var bad []peer.ID
	for _, r := range runs {
		if r.Digest != win {
			bad = append(bad, r.Seller)
		}
	}
	if len(bad) == 0 {
		return VerdictMatch, nil
	}
	return VerdictMismatch, bad
}

// maybeSpotCheck starts, in the background, the spot check of the job j
// just completed, when the job is deterministic, ended normally and the
// reputation side asks for it.
func (b *Buyer) maybeSpotCheck(j *JobStatus) {
	b.mu.Lock()
	req, seller, id, rc := j.Request, j.Seller, j.ContractID, j.Receipt
	b.mu.Unlock()
	sc, ok := b.cfg.Reputation.(SpotChecker)
	if !ok || !req.Deterministic || rc == nil || rc.Reason != "exited" {
		return
	}
	first := SpotOutcome{Seller: seller, ContractID: id, Digest: OutputDigest(rc)}
	if first.Digest == "" || !sc.ShouldSpotCheck(seller) {
		return
	}
	timeout := b.cfg.SpotCheckTimeout
	if timeout <= 0 {
		timeout = 2*req.Duration + 10*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		cancel()
		return
	}
	b.spots[j.ID] = cancel
	b.wg.Add(1)
	b.mu.Unlock()
	b.update(j, func(j *JobStatus) { j.SpotCheck = &SpotCheck{State: SpotRunning, Runs: []SpotOutcome{first}} })
	go func() {
		defer b.wg.Done()
		defer func() {
			b.mu.Lock()
			delete(b.spots, j.ID)
			b.mu.Unlock()
			cancel()
		}()
		b.spotCheck(ctx, j, sc, first)
	}()
}

// spotCheck re-runs j's request on another seller, and on a third when
// the two disagree, and reports the runs to sc.
func (b *Buyer) spotCheck(ctx context.Context, j *JobStatus, sc SpotChecker, first SpotOutcome) {
	runs := []SpotOutcome{first}
	tried := map[peer.ID]bool{first.Seller: true}
	var paid int64
	set := func(s SpotCheck) {
		s.Runs, s.Paid = append([]SpotOutcome(nil), runs...), paid
		b.update(j, func(j *JobStatus) { j.SpotCheck = &s })
	}
	for n := 1; n <= 2; n++ {
		b.mu.Lock()
		req := j.Request
		b.mu.Unlock()
		sj := &JobStatus{ID: fmt.Sprintf("%s-spot%d", j.ID, n), Request: req, State: JobSearching,
			Created: b.clock.Now(), shadow: true}
		// A seller that fails a re-run is not tried again; two failures end
		// the spot check without a verdict.
		out, err := b.seek(ctx, sj, tried, 2)
		b.mu.Lock()
		paid += sj.Paid
		rc, seller, id := sj.Receipt, sj.Seller, sj.ContractID
		b.mu.Unlock()
		if out != outDone || err != nil || rc == nil || rc.Reason != "exited" {
			if err == nil {
				err = fmt.Errorf("re-run ended %q", errString(ctx.Err()))
				if rc != nil {
					err = fmt.Errorf("re-run on %s ended %s", seller, rc.Reason)
				}
			}
			b.log.Info("spot check incomplete", "job", j.ID, "err", err)
			// The book hears first: whoever sees the spot check ended
			// sees its outcome counted.
			if len(runs) > 1 {
				sc.SpotCheckResult(runs)
			}
			set(SpotCheck{State: SpotFailed, Error: err.Error()})
			return
		}
		tried[seller] = true
		runs = append(runs, SpotOutcome{Seller: seller, ContractID: id, Digest: OutputDigest(rc)})
		if v, _ := verdict(runs); v != VerdictUndecided {
			break
		}
		set(SpotCheck{State: SpotRunning})
	}
	v, bad := verdict(runs)
	b.log.Info("spot check done", "job", j.ID, "verdict", v, "mismatched", len(bad), "paid_sats", paid)
	sc.SpotCheckResult(runs)
	set(SpotCheck{State: SpotDone, Verdict: v, Mismatched: bad})
}
